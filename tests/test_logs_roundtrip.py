"""Write -> read gives the same messages; files open in the official mcap tools; output is deterministic."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from fusion_rt.errors import ConfigError, LogError
from fusion_rt.logs import DEFAULT_TOPICS, RAW_IMAGE_TOPIC, LogReader, LogWriter
from fusion_rt.logs import schemas as S
from fusion_rt.messages import (
    MAP_CODES,
    Agent,
    CameraFrame,
    CameraInfo,
    GroundTruth,
    MapRaster,
    RadarDetections,
    RadarTensor,
    TextContext,
)
from fusion_rt.rig import BevGrid, MapGrid, Rig

T0 = 1_700_000_000_123_456_789  # a stamp with every digit of sec and nanosec in use


def _messages(t: int = T0) -> list:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rig = Rig.default((64, 48))
    grid = MapGrid()
    cells = rng.choice(np.array(list(MAP_CODES.values()), dtype=np.int8), size=grid.shape)
    bev = BevGrid()
    agents = (Agent(id=3, class_name="car", x=12.5, y=-1.25, z=0.8, vx=4.0, vy=-0.1, length=4.5, width=1.9,
                    height=1.5, yaw=0.1, visible_camera=True, visible_radar=False),
              Agent(id=2**40, class_name="pedestrian", x=7.1, y=3.3, z=0.9, vx=0.0, vy=1.2, length=0.5, width=0.5,
                    height=1.8, yaw=-math.pi / 2, visible_camera=False, visible_radar=True))
    return [
        CameraFrame(stamp_ns=t, data=cv2.imencode(".jpg", image)[1].tobytes()),
        CameraFrame(stamp_ns=t + 1, data=cv2.imencode(".png", image)[1].tobytes(), encoding="png", frame_id="cam2"),
        CameraFrame(stamp_ns=t + 2, data=image.tobytes(), encoding="bgr8", width=64, height=48),
        CameraFrame(stamp_ns=t + 3, data=image[..., 0].tobytes(), encoding="mono8", width=64, height=48),
        CameraInfo(stamp_ns=t, width=64, height=48, k=rig.camera.intrinsics.matrix()),
        RadarTensor(stamp_ns=t + 4, data=rng.normal(0, 30, (2, 16, 8)).astype(np.float32),
                    channels=("power_db", "radial_velocity_mps"), range_min_m=0.5, range_max_m=100.0,
                    azimuth_min_rad=-rig.radar.azimuth_max_rad, azimuth_max_rad=rig.radar.azimuth_max_rad),
        RadarDetections(stamp_ns=t + 5, points=rng.normal(0, 10, (7, 5)).astype(np.float32)),
        RadarDetections(stamp_ns=t + 6, points=np.zeros((0, 5), np.float32)),
        MapRaster(stamp_ns=t + 7, grid=cells, cell_m=grid.cell_m, x_max_m=grid.x_max_m, y_max_m=grid.y_max_m),
        MapRaster(stamp_ns=t + 8, grid=cells[:10, :7].copy(), cell_m=0.8, x_max_m=51.3, y_max_m=25.7),
        TextContext(stamp_ns=t + 9, text="school zone, rain, 30 km/h — ünïcode"),
        GroundTruth(stamp_ns=t, labels={"car": 1, "truck": 0, "pedestrian": 1, "cyclist": 0, "hazard": 1},
                    agents=agents, bev=rng.integers(0, 2, (4, *bev.shape), dtype=np.uint8),
                    bev_classes=("car", "truck", "pedestrian", "cyclist"), scene_type="urban", condition="rain",
                    ego_speed_mps=8.25, extras={"visibility_m": 123.456, "rain_rate": 1e-3}),
    ]


def _same(a, b) -> bool:
    """Field-by-field equality with exact array comparison (float16 tolerance for radar tensors)."""
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if isinstance(a, RadarTensor):
                if not (y.dtype == np.float32 and np.allclose(x, y, rtol=1e-3, atol=1e-3)):
                    return False
            elif not (x.shape == y.shape and np.array_equal(x, y) and (name == "k" or x.dtype == y.dtype)):
                return False
        elif x != y or type(x) is not type(y) and not isinstance(x, (int, float)):
            return False
    return True


def _write(path: Path, messages, **kw) -> None:
    with LogWriter(path, **kw) as writer:
        for m in messages:
            writer.write(m)


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_every_message_type_round_trips(tmp_path: Path, compression: str) -> None:
    sent = _messages()
    _write(tmp_path / "a.mcap", sent, compression=compression, chunk_size=4096)
    with LogReader(tmp_path / "a.mcap") as reader:
        got = [m.message for m in reader.messages()]
        assert reader.issues == [] and reader.truncated_at is None and reader.complete
    assert len(got) == len(sent)
    # in log-time order (the log time is each message's stamp here), ties in the order written
    for a, b in zip(sorted(sent, key=lambda m: m.stamp_ns), got, strict=True):
        assert _same(a, b), (a, b)


def test_exact_values_that_are_easy_to_lose(tmp_path: Path) -> None:
    sent = _messages()
    _write(tmp_path / "a.mcap", sent)
    with LogReader(tmp_path / "a.mcap") as reader:
        got = {type(m.message).__name__ + str(m.message.stamp_ns - T0): m for m in reader.messages()}
    tensor = got["RadarTensor4"].message
    assert tensor.azimuth_max_rad == math.radians(60.0)  # float64 on disk, bit-exact
    assert tensor.data.dtype == np.float32
    odd_map = got["MapRaster8"].message
    assert (odd_map.cell_m, odd_map.x_max_m, odd_map.y_max_m) == (0.8, 51.3, 25.7)
    gt = got["GroundTruth0"].message
    assert gt.agents[1].id == 2**40 and gt.extras == {"visibility_m": 123.456, "rain_rate": 1e-3}
    assert got["CameraFrame2"].topic == RAW_IMAGE_TOPIC and got["CameraFrame2"].schema_name == S.IMAGE
    assert got["CameraFrame0"].log_time_ns == T0


def test_text_keeps_its_stamp_when_received_late(tmp_path: Path) -> None:
    """String has no header: its stamp travels as the publish time, not the (receive) log time."""
    with LogWriter(tmp_path / "t.mcap") as writer:
        writer.write(TextContext(stamp_ns=10**9, text="rain"), log_time_ns=10**9 + 250_000_000)
    [item] = LogReader(tmp_path / "t.mcap").messages()
    assert item.message.stamp_ns == 10**9 and item.log_time_ns == 10**9 + 250_000_000


def test_map_orientation_follows_ros_convention(tmp_path: Path) -> None:
    """The far-left cell (row 0, col 0) is at ego (x_max, y_max): the last ROS cell."""
    grid = np.zeros((3, 4), np.int8)
    grid[0, 0] = 100  # far left
    grid[2, 3] = 80  # near right: x_min, y_min corner = ROS cell (0, 0)
    _write(tmp_path / "m.mcap", [MapRaster(stamp_ns=5, grid=grid, cell_m=1.0, x_max_m=3.0, y_max_m=2.0)])
    with open(tmp_path / "m.mcap", "rb") as f:
        [(_, _, _, ros)] = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert (ros.info.width, ros.info.height) == (3, 4)  # along ego x (rows), along ego y (cols)
    assert (ros.info.origin.position.x, ros.info.origin.position.y) == (0.0, -2.0)
    assert ros.data[0] == 80 and ros.data[-1] == 100
    # ROS cell (i=1 along x, j=0 along y) is ego x in [1, 2), y in [-2, -1): our row 1, col 3
    grid2 = np.zeros((3, 4), np.int8)
    grid2[1, 3] = 25
    _write(tmp_path / "m2.mcap", [MapRaster(stamp_ns=5, grid=grid2, cell_m=1.0, x_max_m=3.0, y_max_m=2.0)])
    with open(tmp_path / "m2.mcap", "rb") as f:
        [(_, _, _, ros)] = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert list(ros.data).index(25) == 0 * 3 + 1


def test_official_reader_decodes_the_documented_types(tmp_path: Path) -> None:
    _write(tmp_path / "a.mcap", _messages(), chunk_size=2048)
    with open(tmp_path / "a.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = list(reader.iter_decoded_messages())
        summary = reader.get_summary()
    assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
    assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
    by_topic = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
    assert by_topic == {
        DEFAULT_TOPICS[CameraFrame]: S.COMPRESSED_IMAGE, RAW_IMAGE_TOPIC: S.IMAGE,
        DEFAULT_TOPICS[CameraInfo]: S.CAMERA_INFO, DEFAULT_TOPICS[RadarTensor]: S.RADAR_TENSOR,
        DEFAULT_TOPICS[RadarDetections]: S.POINT_CLOUD2, DEFAULT_TOPICS[MapRaster]: S.OCCUPANCY_GRID,
        DEFAULT_TOPICS[TextContext]: S.STRING, DEFAULT_TOPICS[GroundTruth]: S.GROUND_TRUTH,
    }
    assert len(decoded) == len(_messages())
    for _schema, _channel, message, ros in decoded:
        assert message.log_time == message.publish_time
        if hasattr(ros, "header"):
            assert ros.header.stamp.sec * 10**9 + ros.header.stamp.nanosec == message.log_time
    first = decoded[0][3]
    assert first.format == "jpeg" and first.header.stamp.sec == T0 // 10**9
    assert first.header.stamp.nanosec == T0 % 10**9 and first.header.frame_id == "camera_front"


def test_output_is_byte_identical(tmp_path: Path) -> None:
    for name in ("a", "b"):
        with LogWriter(tmp_path / f"{name}.mcap", chunk_size=3000) as writer:
            writer.add_metadata("rig", {"json": '{"camera": 1}'})
            for m in _messages():
                writer.write(m)
    assert (tmp_path / "a.mcap").read_bytes() == (tmp_path / "b.mcap").read_bytes()


def test_metadata_round_trips(tmp_path: Path) -> None:
    with LogWriter(tmp_path / "a.mcap") as writer:
        writer.add_metadata("rig", {"json": "{}"})
        writer.write(TextContext(stamp_ns=1, text="x"))
        writer.add_metadata("sim", {"seed": "3", "scene": "urban"})
    with LogReader(tmp_path / "a.mcap") as reader:
        assert reader.read_metadata() == {"rig": {"json": "{}"}, "sim": {"seed": "3", "scene": "urban"}}


def test_writer_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    with LogWriter(tmp_path / "a.mcap") as writer:
        writer.write(TextContext(stamp_ns=1, text="x"), topic="/t")
        with pytest.raises(LogError, match="/t"):
            writer.write(CameraFrame(stamp_ns=2, data=b"\xff\xd8"), topic="/t")
        with pytest.raises(LogError, match="-5"):
            writer.write(TextContext(stamp_ns=-5, text="x"))
        with pytest.raises(LogError, match="float32"):
            writer.write(RadarTensor(stamp_ns=3, data=np.full((1, 2, 2), 1e6, np.float32), channels=("p",),
                                     range_min_m=0, range_max_m=1, azimuth_min_rad=-1, azimuth_max_rad=1))
        with pytest.raises(LogError, match="0.123456789"):
            writer.write(MapRaster(stamp_ns=4, grid=np.zeros((2, 2), np.int8), cell_m=0.123456789, x_max_m=1,
                                   y_max_m=1))
        with pytest.raises(LogError, match="yuv422"):
            writer.write(CameraFrame(stamp_ns=5, data=b"", encoding="yuv422"))
        with pytest.raises(LogError, match="bytes"):
            writer.write(CameraFrame(stamp_ns=5, data=b"123", encoding="rgb8", width=2, height=2))
        # wrong Python types: refused by name before anything reaches the file (a bad topic used to
        # register its channel first and then break close(), losing the whole log)
        with pytest.raises(LogError, match="topic must be a non-empty string, got 5"):
            writer.write(TextContext(stamp_ns=6, text="y"), topic=5)
        with pytest.raises(LogError, match="TextContext.text must be a str"):
            writer.write(TextContext(stamp_ns=6, text=b"y"))
        with pytest.raises(LogError, match="CameraFrame"):
            writer.write(CameraFrame(stamp_ns=6, data="not bytes"))
        with pytest.raises(LogError, match="metadata 'm'"):
            writer.add_metadata("m", ["a"])
        # occupancy and labels are stored as uint8: NaN and fractions would be written as 0 silently
        for bev, labels, needle in ((np.array([[[0.0, 0.6]]]), {"car": 1}, r"bev .* whole numbers 0..255, got \[0.6\]"),
                                    (np.array([[[np.nan, 1.0]]]), {"car": 1}, r"got \[nan\]"),
                                    (np.zeros((1, 1, 2)), {"car": 0.5}, r"labels .* got \{'car': 0.5\}")):
            with pytest.raises(LogError, match=needle):
                writer.write(GroundTruth(stamp_ns=7, labels=labels, agents=(), bev=bev, bev_classes=("car",),
                                         scene_type="urban", condition="day", ego_speed_mps=0.0, extras={}))
    with pytest.raises(ConfigError, match="brotli"):
        LogWriter(tmp_path / "b.mcap", compression="brotli")
    with pytest.raises(LogError, match="nope"):
        LogWriter(tmp_path / "nope" / "c.mcap")
    with LogReader(tmp_path / "a.mcap") as reader:  # the refused writes left the log intact
        assert [m.message.text for m in reader.messages()] == ["x"]
        assert reader.issues == []


def test_float32_radar_tensor_is_exact(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(0, 1e5, (3, 5, 4)).astype(np.float32)
    tensor = RadarTensor(stamp_ns=9, data=data, channels=("a", "b", "c"), range_min_m=0.5, range_max_m=50.0,
                         azimuth_min_rad=-0.5, azimuth_max_rad=0.5)
    _write(tmp_path / "a.mcap", [tensor], radar_tensor_dtype="float32")
    [got] = LogReader(tmp_path / "a.mcap").messages()
    assert np.array_equal(got.message.data, data)
