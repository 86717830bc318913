"""The defensive reader: truncation, corruption, decompression bombs, foreign layouts, bad payloads."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path

import cv2
import lz4.frame
import numpy as np
import pytest
import zstandard
from mcap.data_stream import RecordBuilder
from mcap.reader import make_reader
from mcap.records import Chunk, DataEnd, Footer, Header
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from mcap_ros2.writer import Writer as Ros2Writer

from fusion_rt.errors import FusionRTError, NotALogError
from fusion_rt.logs import LogReader, LogWriter
from fusion_rt.logs import schemas as S
from fusion_rt.logs.reader import MCAP_MAGIC
from fusion_rt.messages import CameraFrame, RadarDetections, RadarTensor, TextContext

from .conftest import whole_messages_before

_JPEG = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))[1].tobytes()


def _stream(n: int = 40) -> list:
    """Messages with unique, increasing stamps (so chunks have disjoint time ranges)."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        t = 1_000_000 + 1000 * i
        kind = i % 4
        if kind == 0:
            out.append(CameraFrame(stamp_ns=t, data=_JPEG))
        elif kind == 1:
            out.append(RadarDetections(stamp_ns=t, points=rng.normal(size=(6, 5)).astype(np.float32)))
        elif kind == 2:
            out.append(RadarTensor(stamp_ns=t, data=rng.normal(size=(2, 8, 4)).astype(np.float32),
                                   channels=("p", "v"), range_min_m=0.5, range_max_m=60.0,
                                   azimuth_min_rad=-1.0, azimuth_max_rad=1.0))
        else:
            out.append(TextContext(stamp_ns=t, text=f"message {i}"))
    return out


def _write(path: Path, messages, **kw) -> None:
    with LogWriter(path, **kw) as writer:
        for m in messages:
            writer.write(m)


def _chunks(path: Path):
    with open(path, "rb") as f:
        return sorted(make_reader(f).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset)


def _stamps(path: Path, **kw) -> tuple[list[int], LogReader]:
    with LogReader(path, **kw) as reader:
        return [m.message.stamp_ns for m in reader.messages()], reader


@pytest.fixture(scope="module", params=["zstd", "lz4", "none"])
def multi_chunk_log(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("logs") / f"multi-{request.param}.mcap"
    _write(path, _stream(), compression=request.param, chunk_size=1500)
    assert len(_chunks(path)) >= 8
    return path


def test_truncation_yields_every_whole_message_before_the_cut(multi_chunk_log: Path, tmp_path: Path) -> None:
    data = multi_chunk_log.read_bytes()
    full, _ = _stamps(multi_chunk_log)
    chunks = _chunks(multi_chunk_log)
    cut_path = tmp_path / "cut.mcap"
    cuts = sorted(set(range(8, len(data), 37)) | {c.chunk_start_offset + d for c in chunks for d in (-1, 0, 1, 9)}
                  | {c.chunk_start_offset + c.chunk_length + d for c in chunks for d in (-1, 0)})
    before = 0
    for cut in cuts:
        cut_path.write_bytes(data[:cut])
        got, reader = _stamps(cut_path)
        complete = [c for c in chunks if c.chunk_start_offset + c.chunk_length <= cut]
        in_complete = [t for t in full if any(c.message_start_time <= t <= c.message_end_time for c in complete)]
        assert got == full[:len(got)], cut  # in order, nothing invented, nothing skipped
        assert len(got) >= max(len(in_complete), before), cut  # every complete chunk, and more bytes never fewer
        before = len(got)
        if len(got) > len(in_complete):
            assert "whole messages read from the cut chunk" in reader.issues[-1].detail, cut
        assert reader.truncated_at is not None and reader.truncated_at <= cut, cut
        assert reader.issues[-1].kind == "truncated" and reader.issues[-1].offset == reader.truncated_at
        assert not any(i.kind.startswith("chunk") for i in reader.issues), (cut, reader.issues)
        if multi_chunk_log.name.startswith("multi-none"):  # uncompressed: exactly the records lying whole
            assert len(got) == whole_messages_before(data, cut), cut
    got, reader = _stamps(multi_chunk_log)
    assert got == full and reader.truncated_at is None and reader.complete


def _official_copy(src: Path, dst: Path, order=None, **writer_options) -> list[int]:
    """`src` rewritten with the official MCAP writer (its options), messages in `order` (a sort key
    over (topic, log time); None: as they are). Returns the log times in log-time order."""
    with open(src, "rb") as f:
        summary = make_reader(f).get_summary()
        f.seek(0)
        items = [(s, c, m) for s, c, m in make_reader(f).iter_messages(log_time_order=False)]
    if order is not None:
        items.sort(key=lambda item: order(item[1].topic, item[2].log_time))
    with open(dst, "wb") as out:
        writer = McapWriter(out, chunk_size=writer_options.pop("chunk_size", 1500), **writer_options)
        writer.start(profile="ros2", library="test")
        schema_ids, channel_ids = {}, {}
        for schema, channel, message in items:
            if schema.id not in schema_ids:
                schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
            if channel.id not in channel_ids:
                channel_ids[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                                  schema_ids[schema.id])
            writer.add_message(channel_ids[channel.id], message.log_time, message.data, message.publish_time)
        writer.finish()
    assert summary is not None
    return sorted(m.log_time for _, _, m in items)


def test_a_summary_that_does_not_repeat_channels(multi_chunk_log: Path, tmp_path: Path) -> None:
    # MCAP writers may leave schemas and channels out of the summary (repeat_channels off): they are
    # then defined only in the chunk that first uses them. Read as complete, the summary named no
    # topics (replay: "holds no messages"), and a time-range read skipped the defining chunk unread.
    from fusion_rt.logs.bags import open_log

    path = tmp_path / "norepeat.mcap"
    times = _official_copy(multi_chunk_log, path, repeat_channels=False, repeat_schemas=False)
    with open_log(multi_chunk_log) as log:
        topics = log.topics()
    with open_log(path) as log:
        assert log.topics() == topics
        assert [m.log_time_ns for m in log.messages()] == times
    middle = times[len(times) // 2]
    with LogReader(path) as reader:
        got = [m.log_time_ns for m in reader.messages(start_ns=middle)]
        assert got == [t for t in times if t >= middle]
        assert not [i for i in reader.issues if i.kind == "unknown_channel"]


@pytest.mark.parametrize("summary", [True, False])
def test_messages_come_in_log_time_order_whatever_the_file_order(multi_chunk_log: Path, tmp_path: Path,
                                                                  summary: bool) -> None:
    # MCAP does not require log-time order in the file (the official reader sorts by default); a log
    # grouped by topic replayed every camera frame before any radar scan.
    path = tmp_path / "by_topic.mcap"
    times = _official_copy(multi_chunk_log, path, order=lambda topic, t: (topic, t))
    if not summary:  # a recorder that was killed: no summary, no chunk indexes to tell the order
        with open(path, "rb") as f:
            last = max(c.chunk_start_offset + c.chunk_length for c in make_reader(f).get_summary().chunk_indexes)
        path.write_bytes(path.read_bytes()[:last])
    with LogReader(path) as reader:
        got = [m.log_time_ns for m in reader.messages()]
        assert got == times and reader.reordered
        assert [r.record.log_time for r in reader.raw_messages()] == times
    # Interleaved inside chunks only (the chunks' time ranges do not overlap): each chunk sorted, no full sort.
    shuffled = tmp_path / "in_chunk.mcap"
    times = _official_copy(multi_chunk_log, shuffled, order=lambda topic, t: (t // 4000, -t), chunk_size=10**6)
    with LogReader(shuffled) as reader:
        assert [m.log_time_ns for m in reader.messages()] == times and not reader.reordered


def test_a_file_grouped_by_topic_is_merged_a_chunk_at_a_time(multi_chunk_log: Path, tmp_path: Path) -> None:
    # Each topic's chunks span the whole drive, so reading chunks in file order held every chunk of
    # the first topics in memory until the last topic's were read: the whole file, for a long drive.
    # Read in the order of their start times (through the chunk indexes), a chunk is decompressed
    # only once the merge reaches it.
    path = tmp_path / "by_topic.mcap"
    times = _official_copy(multi_chunk_log, path, order=lambda topic, t: (topic, t))
    with open(path, "rb") as f:
        reference = [(c.topic, m.log_time, m.data) for _, c, m in make_reader(f).iter_messages(log_time_order=True)]
        f.seek(0)
        indexes = make_reader(f).get_summary().chunk_indexes
    topics = {t for t, _, _ in reference}
    with LogReader(path) as reader:
        read_chunks = _counting_chunk_reads(reader)
        messages = reader.raw_messages()
        got = []
        for raw in messages:
            got.append((raw.channel.topic, raw.record.log_time, raw.record.data))
            # a chunk is read only once the merge reaches its start time: never more than one ahead per topic
            started = [i for i in indexes if i.message_start_time <= raw.record.log_time]
            assert len(read_chunks) <= len(started) + len(topics), (raw.record.log_time, len(read_chunks))
            if len(got) == len(times) // 2:
                assert len(read_chunks) < len(indexes)  # in file order, every topic's chunks but the last were read
        assert got == reference and reader.reordered and not reader.issues
        assert sorted(read_chunks) == sorted(i.chunk_start_offset for i in indexes)  # each chunk once
        # a topic and time filter skips chunks unread, as in file order
        middle = times[len(times) // 2]
        read_chunks.clear()
        one = sorted(topics)[0]
        got = [(r.channel.topic, r.record.log_time) for r in reader.raw_messages(topics=[one], start_ns=middle)]
        assert got == [(t, lt) for t, lt, _ in reference if t == one and lt >= middle]
        assert len(read_chunks) < len(indexes) // 2


def test_a_corrupt_chunk_is_reported_and_skipped(multi_chunk_log: Path, tmp_path: Path) -> None:
    full, _ = _stamps(multi_chunk_log)
    chunks = _chunks(multi_chunk_log)
    for victim in (chunks[0], chunks[len(chunks) // 2]):
        data = bytearray(multi_chunk_log.read_bytes())
        data[victim.chunk_start_offset + victim.chunk_length - 7] ^= 0x5A  # inside the chunk's data
        bad = tmp_path / "bad.mcap"
        bad.write_bytes(bytes(data))
        got, reader = _stamps(bad)
        assert got == [t for t in full if not victim.message_start_time <= t <= victim.message_end_time]
        assert [(i.offset, i.kind in ("chunk_crc", "chunk_decompress")) for i in reader.issues] == [
            (victim.chunk_start_offset, True)]
        assert reader.truncated_at is None
        # the same damage in a log whose end was lost: no summary to lean on, still the same answer
        bad.write_bytes(bytes(data[: chunks[-1].chunk_start_offset + chunks[-1].chunk_length]))
        got2, reader2 = _stamps(bad)
        lost_channels = [i for i in reader2.issues if i.kind == "unknown_channel"]
        assert set(got2) <= set(got) and reader2.truncated_at is not None
        assert set(got) - set(got2) == set() or lost_channels  # only messages of channels defined in the victim


def _raw_log(path: Path, chunk: Chunk) -> None:
    """magic, header, one hand-made chunk, data end, footer, magic."""
    builder = RecordBuilder()
    Header(profile="ros2", library="test").write(builder)
    chunk.write(builder)
    DataEnd(0).write(builder)
    Footer(0, 0, 0).write(builder)
    path.write_bytes(MCAP_MAGIC + builder.end() + MCAP_MAGIC)


def test_a_chunk_declaring_1_gib_is_refused_before_decompressing(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 4096)
    _raw_log(tmp_path / "bomb.mcap", Chunk(compression="zstd", data=data, message_start_time=0, message_end_time=0,
                                            uncompressed_crc=0, uncompressed_size=1 << 30))
    tracemalloc.start()
    try:
        got, reader = _stamps(tmp_path / "bomb.mcap")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [] and peak < 32 << 20
    assert [(i.kind, i.offset) for i in reader.issues] == [("chunk_too_large", 8 + 9 + len("ros2") + len("test") + 8)]
    assert "1073741824" in reader.issues[0].detail


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
@pytest.mark.parametrize("store_size", [True, False])
def test_a_chunk_that_expands_past_its_declared_size_is_refused(tmp_path: Path, compression: str,
                                                                 store_size: bool) -> None:
    payload = b"\0" * (8 << 20)
    if compression == "zstd":
        data = zstandard.ZstdCompressor(write_content_size=store_size).compress(payload)
    else:
        data = lz4.frame.compress(payload, store_size=store_size)
    _raw_log(tmp_path / "bomb.mcap", Chunk(compression=compression, data=data, message_start_time=0,
                                            message_end_time=0, uncompressed_crc=0, uncompressed_size=4096))
    tracemalloc.start()
    try:
        got, reader = _stamps(tmp_path / "bomb.mcap")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [] and peak < 4 << 20
    assert [i.kind for i in reader.issues] == ["chunk_decompress"]


def test_max_chunk_bytes_is_configurable(multi_chunk_log: Path) -> None:
    got, reader = _stamps(multi_chunk_log, max_chunk_bytes=100)
    assert got == [] and {i.kind for i in reader.issues} == {"chunk_too_large"}


@pytest.mark.parametrize("content", [None, b"", b"\x89MCAP", b"PK\x03\x04 not an mcap file at all", b'{"a": 1}'])
def test_not_a_log_raises(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.mcap"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NotALogError, match="x.mcap"):
        LogReader(path)


def test_a_directory_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(NotALogError, match=str(tmp_path)):
        LogReader(tmp_path)
    assert issubclass(NotALogError, FusionRTError)


def _foreign_log(path: Path, schema_name: str, messages: list[tuple[str, dict, int]], compression=CompressionType.ZSTD):
    """A log written straight through mcap_ros2, as another recorder would."""
    with open(path, "wb") as f, Ros2Writer(f, compression=compression) as writer:
        schema = writer.register_msgdef(schema_name, S.SCHEMAS[schema_name])
        for topic, message, t in messages:
            writer.write_message(topic, schema, message, log_time=t, publish_time=t)


def _header(t: int, frame_id: str = "radar") -> dict:
    return {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": frame_id}


def test_nuscenes_radar_point_cloud(tmp_path: Path) -> None:
    names = ["x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid",
             "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms"]
    types = ["f4", "f4", "f4", "i1", "i2", "f4", "f4", "f4", "f4", "f4", "i1", "i1", "i1", "i1", "i1", "i1", "i1",
             "i1"]
    codes = {"i1": 1, "i2": 3, "f4": 7}
    dtype = np.dtype({"names": names, "formats": ["<" + t for t in types]})  # packed: unaligned offsets
    n = 9
    rng = np.random.default_rng(5)
    cloud = np.zeros(n, dtype)
    for name in ("x", "y", "z", "rcs", "vx", "vy", "vx_comp", "vy_comp"):
        cloud[name] = rng.normal(0, 10, n)
    cloud["x"][0] = cloud["y"][0] = 0.0  # at the sensor: radial velocity 0, not NaN
    fields = [{"name": nm, "offset": dtype.fields[nm][1], "datatype": codes[t], "count": 1}
              for nm, t in zip(names, types, strict=True)]
    assert dtype.itemsize == 43
    message = {"header": _header(5), "height": 1, "width": n, "fields": fields, "is_bigendian": False,
               "point_step": 43, "row_step": 43 * n, "data": cloud.tobytes(), "is_dense": True}
    comp_only = dict(message, fields=[f for f in fields if f["name"] not in ("vx", "vy")])
    _foreign_log(tmp_path / "nu.mcap", S.POINT_CLOUD2, [("/radar_front", message, 5), ("/radar_back", comp_only, 6)])
    with LogReader(tmp_path / "nu.mcap") as reader:
        raw, comp = [m.message for m in reader.messages()]
        assert reader.issues == []
    x, y = cloud["x"].astype(np.float64), cloud["y"].astype(np.float64)
    r = np.hypot(x, y)
    for got, (vx, vy) in ((raw, ("vx", "vy")), (comp, ("vx_comp", "vy_comp"))):
        assert isinstance(got, RadarDetections) and got.points.shape == (n, 5) and got.points.dtype == np.float32
        expected = np.divide(x * cloud[vx] + y * cloud[vy], r, out=np.zeros(n), where=r > 0)
        np.testing.assert_allclose(got.points[:, 3], expected, rtol=1e-6, atol=1e-6)
        assert got.points[0, 3] == 0.0
        columns = np.stack([cloud[k] for k in ("x", "y", "z", "rcs")], 1)
        np.testing.assert_array_equal(got.points[:, [0, 1, 2, 4]], columns)
        assert got.frame_id == "radar" and got.stamp_ns == 5
        # the components are kept: the radial velocity depends on where the radar is (detections_to_tensor)
        np.testing.assert_array_equal(got.velocity, np.stack([cloud[vx], cloud[vy]], 1))


def test_point_cloud_layouts(tmp_path: Path) -> None:
    """Big-endian, padded points and rows, a 'doppler' field, float64 and no rcs/z."""
    n, height = 4, 2
    dtype = np.dtype({"names": ["doppler", "y", "x"], "formats": [">f8", ">f4", ">f4"], "offsets": [0, 8, 16],
                      "itemsize": 24})
    cloud = np.zeros((height, n), dtype)
    rng = np.random.default_rng(2)
    for name in dtype.names:
        cloud[name] = rng.normal(size=(height, n))
    row_step = n * 24 + 8
    data = b"".join(row.tobytes() + b"\xee" * 8 for row in cloud)
    fields = [{"name": "x", "offset": 16, "datatype": 7, "count": 1}, {"name": "y", "offset": 8, "datatype": 7,
              "count": 1}, {"name": "doppler", "offset": 0, "datatype": 8, "count": 1}]
    message = {"header": _header(1), "height": height, "width": n, "fields": fields, "is_bigendian": True,
               "point_step": 24, "row_step": row_step, "data": data, "is_dense": True}
    short = dict(message, data=data[:-20])
    no_velocity = dict(message, fields=fields[:2])
    _foreign_log(tmp_path / "pc.mcap", S.POINT_CLOUD2, [("/r", message, 1), ("/r", short, 2), ("/r", no_velocity, 3)])
    with LogReader(tmp_path / "pc.mcap") as reader:
        [got] = [m.message for m in reader.messages()]
        assert [i.kind for i in reader.issues] == ["decode", "decode"]
        assert "/r" in reader.issues[0].detail and "radial velocity" in reader.issues[1].detail
    flat = cloud.reshape(-1)
    np.testing.assert_array_equal(got.points[:, 0], flat["x"])
    np.testing.assert_array_equal(got.points[:, 3], flat["doppler"].astype(np.float32))
    assert (got.points[:, 2] == 0).all() and np.isnan(got.points[:, 4]).all()


def test_raw_images_from_other_recorders(tmp_path: Path) -> None:
    image = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    step = 7 * 3 + 3  # padded rows
    padded = b"".join(row.tobytes() + b"\0\0\0" for row in image)
    rgb = {"header": _header(7, "cam"), "height": 5, "width": 7, "encoding": "rgb8", "is_bigendian": 0,
           "step": step, "data": padded}
    mono = dict(rgb, encoding="mono8", step=7, data=image[..., 1].tobytes())
    yuv = dict(rgb, encoding="yuv422")
    _foreign_log(tmp_path / "img.mcap", S.IMAGE, [("/image", rgb, 7), ("/image", mono, 8), ("/image", yuv, 9)])
    with LogReader(tmp_path / "img.mcap") as reader:
        got = [m.message for m in reader.messages()]
        assert [i.kind for i in reader.issues] == ["decode"] and "yuv422" in reader.issues[0].detail
    assert (got[0].encoding, got[0].width, got[0].height, got[0].data) == ("rgb8", 7, 5, image.tobytes())
    assert (got[1].encoding, got[1].data) == ("mono8", image[..., 1].tobytes())
    assert got[0].frame_id == "cam" and got[0].stamp_ns == 7


def test_a_message_that_does_not_convert_is_skipped(tmp_path: Path) -> None:
    good = {"header": _header(1), "num_channels": 1, "num_range": 2, "num_azimuth": 2, "range_min_m": 0.0,
            "range_max_m": 1.0, "azimuth_min_rad": -1.0, "azimuth_max_rad": 1.0, "channels": ["p"],
            "dtype": "float16", "data": np.arange(4, dtype="<f2").tobytes()}
    bad = dict(good, header=_header(2), data=b"\0" * 5)
    _foreign_log(tmp_path / "t.mcap", S.RADAR_TENSOR, [("/tensor", good, 1), ("/tensor", bad, 2), ("/tensor", good, 3)])
    stamps, reader = _stamps(tmp_path / "t.mcap")
    assert stamps == [1, 1]  # the header stamp, not the log time
    [issue] = reader.issues
    assert issue.kind == "decode" and "/tensor" in issue.detail and "5" in issue.detail and issue.offset > 0


def test_unknown_types_are_counted_and_skipped(tmp_path: Path) -> None:
    with open(tmp_path / "u.mcap", "wb") as f, Ros2Writer(f) as writer:
        odd = writer.register_msgdef("foo_msgs/msg/Bar", "int32 a\n")
        text = writer.register_msgdef(S.STRING, S.SCHEMAS[S.STRING])
        for t in range(3):
            writer.write_message("/bar", odd, {"a": t}, log_time=t, publish_time=t)
        writer.write_message("/text", text, {"data": "hi"}, log_time=5, publish_time=5)
    with LogReader(tmp_path / "u.mcap") as reader:
        got = list(reader.messages())
        assert [(m.topic, m.message.text, m.message.stamp_ns) for m in got] == [("/text", "hi", 5)]
        assert reader.unknown_counts == {"/bar": 3} and reader.issues == []


def test_topic_and_time_filters(multi_chunk_log: Path) -> None:
    full, _ = _stamps(multi_chunk_log)
    with LogReader(multi_chunk_log) as reader:
        text = [m.message.stamp_ns for m in reader.messages(topics=["/context/text"])]
        window = [m.message.stamp_ns for m in reader.messages(start_ns=full[5], end_ns=full[20])]
        one = [m.topic for m in reader.messages(topics="/radar/front/tensor")]
        assert reader.issues == []
    assert text == full[3::4]
    assert window == full[5:20]
    assert set(one) == {"/radar/front/tensor"} and len(one) == 10


def test_unchunked_log_and_data_section_crc(tmp_path: Path) -> None:
    """A log from a writer that stores the data-section CRC and no chunks."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    String = store.types["std_msgs/msg/String"]
    buffer = io.BytesIO()
    writer = McapWriter(buffer, use_chunking=False, enable_data_crcs=True)
    writer.start(profile="ros2", library="test")
    schema_id = writer.register_schema(S.STRING, "ros2msg", S.SCHEMAS[S.STRING].encode())
    channel_id = writer.register_channel("/text", "cdr", schema_id)
    for t, text in enumerate(["alpha", "bravo", "charlie"]):
        writer.add_message(channel_id, log_time=t, data=bytes(store.serialize_cdr(String(data=text), S.STRING)),
                           publish_time=t)
    writer.finish()
    clean = buffer.getvalue()
    (tmp_path / "clean.mcap").write_bytes(clean)
    with LogReader(tmp_path / "clean.mcap") as reader:
        assert [m.message.text for m in reader.messages()] == ["alpha", "bravo", "charlie"]
        assert reader.issues == [] and reader.complete
    damaged = clean.replace(b"bravo", b"brave")
    (tmp_path / "damaged.mcap").write_bytes(damaged)
    with LogReader(tmp_path / "damaged.mcap") as reader:
        list(reader.messages())
        assert [i.kind for i in reader.issues] == ["data_crc"]
        assert reader.issues[0].offset == struct.unpack("<Q", damaged[-37 + 9: -37 + 17])[0] - 9 - 4


def test_oversized_records_are_skipped_without_reading(tmp_path: Path) -> None:
    _write(tmp_path / "a.mcap", _stream(8), chunk_size=1 << 20)
    got, reader = _stamps(tmp_path / "a.mcap", max_record_bytes=256)
    assert got == [] and {i.kind for i in reader.issues} == {"record_too_large", "summary"}


def test_damaged_chunk_framing_and_record_lengths(multi_chunk_log: Path, tmp_path: Path) -> None:
    full, _ = _stamps(multi_chunk_log)
    chunks = _chunks(multi_chunk_log)
    victim = chunks[3]
    data = bytearray(multi_chunk_log.read_bytes())
    # the chunk's compressed-data length (after start, end, size, crc and the compression string)
    name_len = struct.unpack_from("<I", data, victim.chunk_start_offset + 9 + 28)[0]
    struct.pack_into("<Q", data, victim.chunk_start_offset + 9 + 32 + name_len, 1 << 40)
    (tmp_path / "bad.mcap").write_bytes(bytes(data))
    got, reader = _stamps(tmp_path / "bad.mcap")
    assert got == [t for t in full if not victim.message_start_time <= t <= victim.message_end_time]
    assert [(i.offset, i.kind) for i in reader.issues] == [(victim.chunk_start_offset, "chunk_parse")]
    # a record length that points past the end of the file reads as truncation there; the chunk's own
    # data is whole (and passes its CRC), so its messages are read as a cut chunk's are
    data = bytearray(multi_chunk_log.read_bytes())
    struct.pack_into("<Q", data, victim.chunk_start_offset + 1, 1 << 50)
    (tmp_path / "bad.mcap").write_bytes(bytes(data))
    got, reader = _stamps(tmp_path / "bad.mcap")
    assert got == [t for t in full if t <= victim.message_end_time]
    assert reader.truncated_at == victim.chunk_start_offset
    # ... unless its data was altered too: a whole chunk failing its CRC gives nothing
    data[victim.chunk_start_offset + victim.chunk_length - 7] ^= 0x5A
    (tmp_path / "bad.mcap").write_bytes(bytes(data))
    got, reader = _stamps(tmp_path / "bad.mcap")
    assert got == [t for t in full if t < victim.message_start_time]


def test_a_negative_header_stamp_is_reported_and_the_stream_goes_on(tmp_path: Path) -> None:
    """sec < 0 (found by the R13 fuzzer: a flipped sign bit) is a decode issue naming it, not a stamp."""
    dtype = np.dtype({"names": ["x", "y", "doppler"], "formats": ["<f4", "<f4", "<f4"]})
    cloud = np.ones(2, dtype)
    fields = [{"name": nm, "offset": 4 * i, "datatype": 7, "count": 1} for i, nm in enumerate(("x", "y", "doppler"))]
    good = {"header": _header(7), "height": 1, "width": 2, "fields": fields, "is_bigendian": False,
            "point_step": 12, "row_step": 24, "data": cloud.tobytes(), "is_dense": True}
    bad = dict(good, header={"stamp": {"sec": -5, "nanosec": 0}, "frame_id": "radar"})
    _foreign_log(tmp_path / "neg.mcap", S.POINT_CLOUD2, [("/radar_front", bad, 6), ("/radar_front", good, 7)])
    with LogReader(tmp_path / "neg.mcap") as reader:
        got = [m.message for m in reader.messages()]
        issues = reader.issues
    assert len(got) == 1 and got[0].stamp_ns == 7
    assert len(issues) == 1 and issues[0].kind == "decode" and "sec -5 is negative" in issues[0].detail


def test_a_length_beyond_any_stream_is_a_short_read() -> None:
    """A damaged length field past sys.maxsize (R13) is a short read, not an OverflowError from BytesIO."""
    import io
    import sys

    from fusion_rt.logs.reader import _ShortRead, _StrictStream

    stream = _StrictStream(io.BytesIO(b"abc"))
    with pytest.raises(_ShortRead, match="needed"):
        stream.read(sys.maxsize + 1)
    assert stream.read(2) == b"ab"


def test_a_log_cut_while_it_is_being_read_ends_as_truncated(short_drive, tmp_path):
    """Another process truncates the file after it was opened: the reader stops at the cut, typed."""
    import shutil

    path = tmp_path / "shrinking.mcap"
    shutil.copy(short_drive, path)
    with LogReader(path) as reader:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
        messages = list(reader.messages())
        assert messages and reader.truncated_at is not None and not reader.complete


def test_a_pipe_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    """`log info <(zstdcat drive.mcap.zst)` read a pipe as an empty log (size 0: "0 messages", exit 0),
    quantize read it twice (wrong magic the second time), and a FIFO with no writer blocked for
    ever in open(): refused first, by what it is."""
    import os
    import threading

    from fusion_rt.logs.bags import open_log

    fifo = tmp_path / "drive.mcap"
    os.mkfifo(fifo)
    read, write = os.pipe()
    errors: list[str] = []

    def refuse() -> None:
        for path, opener in ((fifo, LogReader), (fifo, open_log), (f"/dev/fd/{read}", LogReader)):
            try:
                opener(path)
            except NotALogError as exc:
                errors.append(str(exc))

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked in open(): a writer lets it go on, then fail the test
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    os.close(read)
    os.close(write)
    assert not thread.is_alive() and len(errors) == 3, errors
    assert errors[0] == errors[1] == f"{str(fifo)!r} is a pipe, not a file: write it to a file first"
    assert errors[2].startswith(f"'/dev/fd/{read}' is a pipe")


def test_a_zero_filled_tail_reads_as_the_cut_it_is(multi_chunk_log: Path, tmp_path: Path) -> None:
    # A recorder that preallocates, or a power failure, leaves zeros after the last byte written. They
    # were read as opcode-0 records nine bytes at a time (a 10 GB tail: half an hour), and the chunk
    # they cut, now "complete" in length, failed to decompress and was dropped whole.
    data = multi_chunk_log.read_bytes()
    chunk = _chunks(multi_chunk_log)[len(_chunks(multi_chunk_log)) // 2]
    cut = chunk.chunk_start_offset + chunk.chunk_length - 3
    (tmp_path / "cut.mcap").write_bytes(data[:cut])
    (tmp_path / "zeros.mcap").write_bytes(data[:cut] + bytes(3 << 20))
    expected, plain = _stamps(tmp_path / "cut.mcap")
    got, reader = _stamps(tmp_path / "zeros.mcap")
    full, _ = _stamps(multi_chunk_log)
    # what the plain cut gives, or more (an lz4 frame ends in four zero bytes: the fill restores them)
    assert got[:len(expected)] == expected and got == full[:len(got)] and len(got) > 0
    assert reader.truncated_at >= plain.truncated_at
    assert [i.kind for i in reader.issues] == ["truncated"] and "are zeros" in reader.issues[0].detail


def test_a_last_message_ending_in_zeros_is_kept_whole(tmp_path: Path) -> None:
    # A recorder killed right after a message whose last 64 KiB+ are zeros (a black raw image): the zero
    # run started inside that message, which was then read as cut.
    from fusion_rt.messages import CameraFrame

    frames = [CameraFrame(stamp_ns=1000 * (i + 1), data=bytes([7] * 100) + bytes(100_000), encoding="mono8",
                          width=1, height=100_100) for i in range(2)]
    _write(tmp_path / "whole.mcap", frames, compression="none", chunk_size=1)
    data = (tmp_path / "whole.mcap").read_bytes()
    last = _chunks(tmp_path / "whole.mcap")[-1]
    (tmp_path / "killed.mcap").write_bytes(data[:last.chunk_start_offset + last.chunk_length] + bytes(1 << 20))
    got, reader = _stamps(tmp_path / "killed.mcap")
    assert got == [1000, 2000] and [i.kind for i in reader.issues] == ["truncated"]


def test_a_closed_reader_says_so(multi_chunk_log: Path) -> None:
    from fusion_rt.errors import LogError

    with LogReader(multi_chunk_log) as reader:
        pass
    for read in (reader.messages, reader.raw_messages, reader.read_metadata):
        with pytest.raises(LogError, match="is closed"):
            next(iter(read())) if read is not reader.read_metadata else read()


def test_one_late_message_holds_back_a_chunk_not_the_file(multi_chunk_log: Path, tmp_path: Path) -> None:
    # A log in receive order with one message written late (its log time earlier than its neighbours')
    # made the chunk indexes overlap, and the whole file was read into memory to be sorted.
    with open(multi_chunk_log, "rb") as f:
        times = sorted(m.log_time for _, _, m in make_reader(f).iter_messages())
    late = times[2]
    path = tmp_path / "late.mcap"
    assert _official_copy(multi_chunk_log, path, order=lambda topic, t: t + (5500 if t == late else 0)) == times
    with LogReader(path) as reader:
        read_chunks = _counting_chunk_reads(reader)
        messages = reader.messages()
        first = next(messages)
        assert first.log_time_ns == times[0] and len(read_chunks) <= 2 < len(_chunks(path))
        assert [first.log_time_ns, *(m.log_time_ns for m in messages)] == times and reader.reordered


def test_a_schema_without_definition_text_decodes_as_the_standard_type(tmp_path: Path) -> None:
    # rosbag2's mcap plugin stores an empty schema when it cannot find a type's definition. Every
    # message of such a schema was skipped as one whose "fields differ"; now the standard text is
    # assumed, said once per schema. A schema whose text differs is still refused.
    from fusion_rt.logs.bags import open_log

    messages = _stream(40)
    _write(tmp_path / "src.mcap", messages, chunk_size=2048)
    with open(tmp_path / "src.mcap", "rb") as f:
        items = list(make_reader(f).iter_messages(log_time_order=False))
    with open(tmp_path / "empty.mcap", "wb") as out:
        writer = McapWriter(out, chunk_size=2048)
        writer.start(profile="ros2", library="rosbag2")
        schema_ids, channel_ids = {}, {}
        for schema, channel, message in items:
            if schema.id not in schema_ids:
                text = b"int32 x\n" if schema.name == S.RADAR_TENSOR else (b"", b"\n")[schema.id % 2]
                schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, text)
            if channel.id not in channel_ids:
                channel_ids[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                                  schema_ids[schema.id])
            writer.add_message(channel_ids[channel.id], message.log_time, message.data, message.publish_time)
        writer.finish()
    for _ in range(2):  # issues describe one pass
        with LogReader(tmp_path / "empty.mcap") as reader:
            got = [m.message.stamp_ns for m in reader.messages()]
            issues = [(i.kind, i.detail) for i in reader.issues]
        assert got == [m.stamp_ns for m in messages if not isinstance(m, RadarTensor)]
        assumed = sorted(d for k, d in issues if k == "schema_assumed")
        assert len(assumed) == 3 and all("no definition stored: the standard one is assumed" in d for d in assumed)
        assert any(S.POINT_CLOUD2 in d for d in assumed) and any(S.STRING in d for d in assumed)
        refused = [d for k, d in issues if k == "schema"]
        assert len(refused) == 1 and S.RADAR_TENSOR in refused[0] and "its fields differ" in refused[0]
    with open_log(tmp_path / "empty.mcap") as source:  # a radar cloud is still told by its fields
        fields = {t.topic: t.point_fields for t in source.topics()}
        assert fields["/radar/front/detections"] == ("x", "y", "z", "radial_velocity", "rcs")


def test_replay_does_not_count_an_assumed_schema_as_damage() -> None:
    # An assumed schema skips nothing: replay said "1 damaged records or messages were skipped".
    from types import SimpleNamespace

    from fusion_rt.logs.reader import ReadIssue
    from fusion_rt.replay import _log_block

    issue = ReadIssue(0, "schema_assumed", "schema 'std_msgs/msg/String' of topic '/context/text': no definition "
                                           "stored: the standard one is assumed")
    source = SimpleNamespace(issues=[issue], truncated_at=None, path="x.mcap")
    reader = SimpleNamespace(source=source, topic_map=SimpleNamespace(topics={}, how={}), issues=[],
                             foreign_radar_frames=set())
    block, warnings = _log_block(reader, None, None)
    assert block["issues"] == 1 and block["issue_list"][0]["kind"] == "schema_assumed"
    assert warnings == ["1 schemas store no definition: the standard ones were assumed (see log.issue_list)"]


def _cut_before_summary(path: Path, keep: int = 0) -> list:
    """Cut `path` after its last chunk (plus `keep` bytes; negative: inside it), as a killed recorder
    leaves it: no summary, no footer. Returns its chunk indexes, in file order."""
    chunks = _chunks(path)
    data = path.read_bytes()
    path.write_bytes(data[:chunks[-1].chunk_start_offset + chunks[-1].chunk_length + keep])
    return chunks


def _counting_chunk_reads(reader: LogReader) -> list[int]:
    read_chunks: list[int] = []
    chunk_messages = reader._chunk_messages

    def counting(pos, *args):
        read_chunks.append(pos)
        return chunk_messages(pos, *args)

    reader._chunk_messages = counting
    return read_chunks


@pytest.mark.parametrize("keep", [0, -40])
def test_a_cut_log_with_a_late_message_is_merged_by_its_chunk_headers(multi_chunk_log: Path, tmp_path: Path,
                                                                       keep: int) -> None:
    # A killed recorder (no summary) with one message written late: a first pass decompressed every
    # chunk to look for time going back, then every wanted record of the file was sorted in memory
    # (+1.6 MB per second of drive). The chunks' own headers give their start times without
    # decompressing anything: the merge holds back the chunks between, and each chunk is read once.
    with open(multi_chunk_log, "rb") as f:
        times = sorted(m.log_time for _, _, m in make_reader(f).iter_messages())
    late = times[2]
    path = tmp_path / "latecut.mcap"
    _official_copy(multi_chunk_log, path, order=lambda topic, t: t + (5500 if t == late else 0))
    chunks = _cut_before_summary(path, keep)
    with LogReader(path) as reader:
        read_chunks = _counting_chunk_reads(reader)
        messages = reader.raw_messages()
        first = next(messages)
        assert first.record.log_time == times[0] and len(read_chunks) <= 2 < len(chunks)
        got = [first.record.log_time, *(r.record.log_time for r in messages)]
        assert reader.reordered and reader.truncated_at is not None
        assert [i.kind for i in reader.issues] == ["truncated"]
        whole = len(chunks) - (keep < 0)  # the cut chunk is read by _cut_chunk
        assert sorted(read_chunks) == [c.chunk_start_offset for c in chunks[:whole]]  # each chunk once
    assert got == times[:len(got)] if keep < 0 else got == times
    if keep < 0:  # what the cut chunk held before the cut, and no more
        assert len(got) >= len(times) - sum(1 for t in times if t >= chunks[-1].message_start_time)


def test_damaged_chunk_header_times_lose_no_message(multi_chunk_log: Path, tmp_path: Path) -> None:
    # A chunk header's start and end times are outside its CRC (which covers the uncompressed data):
    # a wrong one may hold back more than needed or let a message come late, never drop it.
    with open(multi_chunk_log, "rb") as f:
        times = sorted(m.log_time for _, _, m in make_reader(f).iter_messages())
    late = times[2]
    path = tmp_path / "late.mcap"
    _official_copy(multi_chunk_log, path, order=lambda topic, t: t + (5500 if t == late else 0))
    chunks = _cut_before_summary(path)
    (victim,) = [c for c in chunks if c.message_start_time == late]
    data = bytearray(path.read_bytes())
    for start, end, in_order in ((2**63, 2**63, False), (0, 0, True), (times[-1], times[0], False)):
        struct.pack_into("<QQ", data, victim.chunk_start_offset + 9, start, end)
        (tmp_path / "damaged.mcap").write_bytes(data)
        got, reader = _stamps(tmp_path / "damaged.mcap")
        assert sorted(got) == times, (start, got)
        if in_order:  # too early a start only holds more back
            assert got == times and [i.kind for i in reader.issues] == ["truncated"]
        else:  # the late message comes out as soon as it is read, the others in order; said as `order`
            assert [t for t in got if t != late] == [t for t in times if t != late]
            assert [i.kind for i in reader.issues] == ["order", "truncated"]


def test_an_unchunked_cut_log_is_merged_in_runs(multi_chunk_log: Path, tmp_path: Path, monkeypatch) -> None:
    # Top-level Message records (no chunks), no summary, one late: merged by runs of records whose
    # earliest time the walk reads from their headers, so a run is held back, not the file.
    import fusion_rt.logs.reader as reader_module

    with open(multi_chunk_log, "rb") as f:
        times = sorted(m.log_time for _, _, m in make_reader(f).iter_messages())
    late = times[5]
    path = tmp_path / "unchunked.mcap"
    _official_copy(multi_chunk_log, path, order=lambda topic, t: t + (5500 if t == late else 0),
                   use_chunking=False)
    data = path.read_bytes()
    summary_start = struct.unpack_from("<Q", data, len(data) - 37 + 9)[0]
    path.write_bytes(data[:summary_start - 13 - 5])  # the DataEnd record and the end of the last message lost
    times = times[:-1]
    monkeypatch.setattr(reader_module, "_RUN_BYTES", 1000)
    with LogReader(path) as reader:
        scanned: list[int] = []
        scan = reader._scan

        def counting(*args, **kwargs):
            for raw in scan(*args, **kwargs):
                scanned.append(raw.record.log_time)
                yield raw

        reader._scan = counting
        messages = reader.messages()
        first = next(messages)
        assert first.log_time_ns == times[0] and len(scanned) < len(times) // 2
        assert [first.log_time_ns, *(m.log_time_ns for m in messages)] == times and reader.reordered
        assert [i.kind for i in reader.issues] == ["truncated"]


def test_compressed_images_of_non_camera_encodings_are_refused_naming_the_format(tmp_path: Path) -> None:
    """A 16-bit depth image from compressed_image_transport ("16UC1; png compressed ") was read as the
    camera: the format was classified by the substring "png" only, and the 16-bit PNG decoded to a
    scaled 8-bit picture. The image_transport format names the original encoding before ';': it is held
    to what the raw Image path reads, and a 16-bit PNG is refused whatever its format says."""
    from types import SimpleNamespace as N

    from fusion_rt.errors import DecodeError
    from fusion_rt.logs.convert import RAW_ENCODINGS, UnsupportedMessageError, converter_for

    colour = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", colour)[1].tobytes()
    png = cv2.imencode(".png", colour)[1].tobytes()
    depth = cv2.imencode(".png", np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000)[1].tobytes()
    accepted = [("jpeg", jpeg, "jpeg"), ("JPEG", jpeg, "jpeg"), ("png", png, "png"),
                ("jpeg compressed bgr8", jpeg, "jpeg"), ("rgb8; jpeg compressed bgr8", jpeg, "jpeg"),
                ("bgr8; png compressed bgr8", png, "png"), ("mono8; jpeg compressed ", jpeg, "jpeg")]
    refused = [("16UC1; png compressed ", depth, "'16UC1'"), ("32FC1; compressedDepth", b"\0" * 12 + depth, "'32FC1'"),
               ("mono16; png compressed ", depth, "'mono16'"), ("compressedDepth png", b"\0" * 12 + depth,
                                                                  "compressedDepth"),
               ("png", depth, "16-bit PNG"), ("bgr8; png compressed bgr16", depth, "'bgr16'"),
               ("h264", b"\0\0\0\1", "'h264'")]
    assert "mono8" in RAW_ENCODINGS  # the raw path reads mono8, so a compressed mono8 is read too
    messages = [("/cam", {"header": _header(t + 1, "cam"), "format": fmt, "data": data}, t + 1)
                for t, (fmt, data, _) in enumerate(accepted + refused)]
    _foreign_log(tmp_path / "c.mcap", S.COMPRESSED_IMAGE, messages)
    with LogReader(tmp_path / "c.mcap") as reader:
        got = [m.message for m in reader.messages()]
        issues = list(reader.issues)
    assert [(m.encoding, m.stamp_ns) for m in got] == [(enc, t + 1) for t, (_, _, enc) in enumerate(accepted)]
    assert len(issues) == len(refused)
    for issue, (fmt, _, needle) in zip(issues, refused, strict=True):
        assert issue.kind == "decode" and "UnsupportedMessageError" in issue.detail, issue.detail
        assert repr(fmt) in issue.detail and needle in issue.detail, issue.detail
    # typed: a DecodeError (what callers catch), told apart from damage by its class
    convert = converter_for(S.COMPRESSED_IMAGE)
    with pytest.raises(UnsupportedMessageError, match="'16UC1; png compressed '") as info:
        convert(N(header=N(stamp=N(sec=1, nanosec=0), frame_id="c"), format="16UC1; png compressed ", data=depth), 0)
    assert isinstance(info.value, DecodeError)


def test_unsupported_messages_are_told_from_damaged_ones(tmp_path: Path) -> None:
    """Valid messages fusion-rt does not read (a YUV image, a rotated map, a cloud without radar fields)
    raise UnsupportedMessageError; damaged ones (too few bytes) a plain DecodeError."""
    from types import SimpleNamespace as N

    from fusion_rt.errors import DecodeError
    from fusion_rt.logs.convert import UnsupportedMessageError, converter_for

    header = N(stamp=N(sec=1, nanosec=0), frame_id="x")
    image = converter_for(S.IMAGE)
    with pytest.raises(UnsupportedMessageError, match="'yuv422'"):
        image(N(header=header, encoding="yuv422", width=2, height=1, step=4, data=b"\0" * 4), 0)
    with pytest.raises(DecodeError, match="needs 6 bytes") as info:
        image(N(header=header, encoding="rgb8", width=2, height=1, step=6, data=b"\0" * 4), 0)
    assert not isinstance(info.value, UnsupportedMessageError)
    origin = N(position=N(x=0.0, y=0.0, z=0.0), orientation=N(x=0.0, y=0.0, z=0.38, w=0.92))
    grid = converter_for(S.OCCUPANCY_GRID)
    with pytest.raises(UnsupportedMessageError, match="0.38"):
        grid(N(header=header, info=N(resolution=1.0, width=1, height=1, origin=origin), data=b"\0"), 0)
    cloud = converter_for(S.POINT_CLOUD2)
    field = N(name="intensity", offset=0, datatype=7, count=1)
    with pytest.raises(UnsupportedMessageError, match="intensity"):
        cloud(N(header=header, height=1, width=1, fields=[field], is_bigendian=False, point_step=4, row_step=4,
                data=b"\0" * 4), 0)


def test_an_unchunked_log_read_by_topic_streams(tmp_path: Path) -> None:
    # rosbag2's fastwrite preset writes no chunks. Merged in runs of ~1 MiB keyed by each run's first
    # record, a run starting with an unwanted topic (/tf) released nothing: reading /camera held the log.
    path = tmp_path / "unchunked.mcap"
    n = 24
    with open(path, "wb") as f:
        writer = McapWriter(f, use_chunking=False)
        writer.start(profile="", library="test")
        schema = writer.register_schema("raw", "", b"")
        tf = writer.register_channel("/tf", "raw", schema)
        camera = writer.register_channel("/camera", "raw", schema)
        for k in range(n):
            writer.add_message(tf, 10 * k, b"t" * 16, 10 * k)
            writer.add_message(camera, 10 * k + 1, bytes(400_000), 10 * k + 1)
        writer.finish()
    cut = tmp_path / "unchunked_cut.mcap"  # no summary: read by the records' own times
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for log in (path, cut):
        with LogReader(log) as reader:
            scan = reader._scan
            pulled: list[int] = []

            def counting(*args, scan=scan, pulled=pulled, **kwargs):
                for raw in scan(*args, **kwargs):
                    pulled.append(raw.record.log_time)
                    yield raw

            reader._scan = counting
            messages = reader.raw_messages(topics=["/camera"])
            first = next(messages)
            assert first.record.log_time == 1 and len(pulled) <= 8, (log.name, len(pulled))
            rest = [m.record.log_time for m in messages]
            assert [1, *rest] == [10 * k + 1 for k in range(len(rest) + 1)]


def test_a_chunk_the_index_leaves_out_is_still_read(multi_chunk_log: Path, tmp_path: Path) -> None:
    # A file whose chunks overlap in time, one ChunkIndex missing from the summary: merging through the
    # index skipped every chunk record in its first pass, so the unindexed chunk was lost, unsaid.
    path = tmp_path / "by_topic.mcap"
    times = _official_copy(multi_chunk_log, path, order=lambda topic, t: (topic, t))
    data = bytearray(path.read_bytes())
    footer = len(data) - len(MCAP_MAGIC) - 29
    pos = struct.unpack_from("<Q", data, footer + 9)[0]  # summary start
    dropped = 0
    while pos < footer:
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode == 0x08 and not dropped:  # the first ChunkIndex: made an unknown record
            data[pos] = 0x7F
            dropped = 1
        pos += 9 + length
    struct.pack_into("<I", data, footer + 9 + 16, 0)  # summary CRC: none stored
    path.write_bytes(bytes(data))
    with LogReader(path) as reader:
        assert [m.log_time_ns for m in reader.messages()] == times and dropped


def test_a_wrong_chunk_header_time_is_said(multi_chunk_log: Path, tmp_path: Path) -> None:
    # Without a summary, chunks are merged by the start times their headers state, which no CRC covers:
    # one too high lets a later message out first. Nothing is lost, and the reader says so.
    path = tmp_path / "by_topic.mcap"
    times = _official_copy(multi_chunk_log, path, order=lambda topic, t: (topic, t))
    chunks = _cut_before_summary(path)
    data = bytearray(path.read_bytes())
    # the first chunk of the last topic: the earliest start of every chunk after the previous topic's
    victim = next(c for c in chunks if set(c.message_index_offsets) == set(chunks[-1].message_index_offsets))
    struct.pack_into("<Q", data, victim.chunk_start_offset + 9, 2**64 - 1)
    path.write_bytes(bytes(data))
    with LogReader(path) as reader:
        got = [m.log_time_ns for m in reader.messages()]
        assert sorted(got) == times and got != times  # nothing lost; one came out early
        assert [i for i in reader.issues if i.kind == "order"]
