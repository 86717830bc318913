"""ROS 2 bags as sources: .db3 bags without stored definitions, lone .db3 files, split MCAP bags."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from fusion_rt.errors import NotALogError
from fusion_rt.logs import schemas as S
from fusion_rt.logs.bags import open_log
from fusion_rt.logs.topics import resolve_topics


def _radar_bag(path, drop_definitions: bool):
    """A .db3 bag of 3 radar tensors and 3 strings; optionally without the stored definition of the
    radar tensor type, as bags recorded before ROS 2 Jazzy are."""
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg(S.SCHEMAS[S.RADAR_TENSOR].split("\n====")[0], S.RADAR_TENSOR))
    types = store.types
    with rosbag2.Writer(path, version=8) as writer:
        radar = writer.add_connection("/radar/front/tensor", S.RADAR_TENSOR, typestore=store)
        text = writer.add_connection("/context/text", "std_msgs/msg/String", typestore=store)
        for k in range(3):
            header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=k + 1, nanosec=0),
                                                  frame_id="radar")
            tensor = types[S.RADAR_TENSOR](header=header, num_channels=1, num_range=1, num_azimuth=1,
                                           range_min_m=0.5, range_max_m=10.0, azimuth_min_rad=-0.5,
                                           azimuth_max_rad=0.5, channels=["power_db"], dtype="float32",
                                           data=np.frombuffer(np.float32(k).tobytes(), np.uint8))
            writer.write(radar, (k + 1) * 10**9, store.serialize_cdr(tensor, S.RADAR_TENSOR))
            writer.write(text, (k + 1) * 10**9, store.serialize_cdr(types["std_msgs/msg/String"](data="rain"),
                                                                    "std_msgs/msg/String"))
    if drop_definitions:
        (db,) = path.glob("*.db3")
        with sqlite3.connect(db) as con:
            con.execute("delete from message_definitions where topic_type like 'fusion_rt%'")
    return path


def test_a_db3_bag_without_definitions_still_reads_fusion_rt_types(tmp_path):
    bag = _radar_bag(tmp_path / "bag", drop_definitions=True)
    with open_log(bag) as source:
        messages = list(source.messages())
        assert [m.topic for m in messages].count("/radar/front/tensor") == 3  # were dropped without a word
        assert [float(m.message.data.ravel()[0]) for m in messages if m.topic == "/radar/front/tensor"] == [0, 1, 2]
        assert source.issues == []
        list(source.messages())
        assert source.issues == []  # issues describe one pass; they do not pile up


def test_a_lone_db3_file_opens_without_its_metadata(tmp_path):
    bag = _radar_bag(tmp_path / "bag", drop_definitions=False)
    (db,) = bag.glob("*.db3")
    lone = tmp_path / "copied.db3"
    shutil.copy(db, lone)
    with open_log(lone) as source:
        assert len(list(source.messages(topics="/context/text"))) == 3  # one topic given as a plain string


def test_point_cloud_fields_come_from_the_split_that_holds_the_messages(tmp_path):
    """rosbag2 declares every topic in every split: a lidar cloud declared in split 0 but recorded in
    split 1 is still recognised by its fields, so radar maps to the radar cloud alone."""
    from mcap_ros2.writer import Writer

    def cloud(names: list[str], sec: int) -> dict:
        data = np.zeros((2, len(names)), "<f4").tobytes()
        return {"header": {"stamp": {"sec": sec, "nanosec": 0}, "frame_id": "sensor"}, "height": 1, "width": 2,
                "fields": [{"name": n, "offset": 4 * i, "datatype": 7, "count": 1} for i, n in enumerate(names)],
                "is_bigendian": False, "point_step": 4 * len(names), "row_step": 8 * len(names), "data": data,
                "is_dense": True}

    lidar, radar = ["x", "y", "z", "intensity"], ["x", "y", "z", "radial_velocity", "rcs"]
    bag = tmp_path / "bag"
    bag.mkdir()
    splits = [[("/radar/points", radar, 1)], [("/lidar/points", lidar, 3), ("/radar/points", radar, 3)]]
    for index, items in enumerate(splits):
        with open(bag / f"bag_{index}.mcap", "wb") as f:
            writer = Writer(f)
            schema = writer.register_msgdef(S.POINT_CLOUD2, S.SCHEMAS[S.POINT_CLOUD2])
            if index == 0:  # declared, no message in this split
                writer._writer.register_channel(topic="/lidar/points", message_encoding="cdr", schema_id=schema.id)
            for topic, names, sec in items:
                writer.write_message(topic, schema, cloud(names, sec), log_time=sec * 10**9, publish_time=sec * 10**9)
            writer.finish()
    with open_log(bag) as source:
        fields = {t.topic: t.point_fields for t in source.topics()}
        assert fields["/lidar/points"] == tuple(lidar)
        assert resolve_topics(source.topics(), ["radar"]).topics == {"radar": "/radar/points"}


def _copy_into_bag(src, dst, storage: str, compression: str | None):
    """The MCAP log `src` rewritten as a rosbag2 bag with `storage` ("MCAP"/"SQLITE3"), rosbag2-compressed
    per message or per file with zstd (`compression` "MESSAGE"/"FILE") or not at all (None)."""
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    from mcap.reader import make_reader
    from rosbags.rosbag2 import writer as rw

    writer = rosbag2.Writer(dst, version=8, storage_plugin=rosbag2.StoragePlugin[storage])
    if compression:
        writer.set_compression(rw.CompressionMode[compression], rw.CompressionFormat.ZSTD)
    with open(src, "rb") as f, writer:
        conns = {}
        for schema, channel, message in make_reader(f).iter_messages():
            if channel.id not in conns:
                conns[channel.id] = writer.add_connection(channel.topic, schema.name, msgdef=schema.data.decode(),
                                                          rihs01="RIHS01_" + "0" * 64)
            writer.write(conns[channel.id], message.log_time, message.data)
    return dst


@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
@pytest.mark.parametrize("compression", ["MESSAGE", "FILE"])
def test_rosbag2_compressed_bags_read_like_their_source(short_drive, tmp_path, storage, compression):
    # `ros2 bag record --compression-mode message|file`: each message (or each split file) is zstd-
    # compressed. Read as stored, every CDR payload failed to decode (and text came out as garbage).
    bag = _copy_into_bag(short_drive, tmp_path / "bag", storage, compression)
    with open_log(short_drive) as log:
        expected = [(m.topic, m.log_time_ns) for m in log.messages()]
        texts = [m.message.text for m in log.messages(topics=["/context/text"])]
    with open_log(bag) as log:
        got = [(m.topic, m.log_time_ns) for m in log.messages()]
        assert log.issues == []
        assert [m.message.text for m in log.messages(topics=["/context/text"])] == texts
    assert sorted(got) == sorted(expected) and len(got) > 100


def test_a_directory_of_unknown_files_names_the_bag_forms(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NotALogError, match=r"\.zstd"):
        open_log(tmp_path)


def test_the_mcap_file_of_a_message_compressed_bag_reads_too(short_drive, tmp_path):
    # Opening the bag's .mcap file (not its directory) decoded the still-compressed payloads.
    bag = _copy_into_bag(short_drive, tmp_path / "bag", "MCAP", "MESSAGE")
    (mcap,) = bag.glob("*.mcap")
    with open_log(bag) as log:
        expected = sorted((m.topic, m.log_time_ns) for m in log.messages())
    with open_log(mcap) as log:
        assert sorted((m.topic, m.log_time_ns) for m in log.messages()) == expected and log.issues == []


def test_a_db3_bag_without_definitions_reads_ground_truth_and_its_agents(tmp_path):
    # Only the first section of fusion-rt's own GroundTruth text was registered: its Agent type
    # (a later MSG: block) was not, so every GroundTruth failed with KeyError 'fusion_rt_msgs/msg/Agent'.
    from fusion_rt.logs import LogWriter
    from fusion_rt.messages import Agent, GroundTruth

    agent = Agent(id=7, class_name="car", x=12.0, y=-1.5, z=0.0, vx=3.0, vy=0.0, length=4.5, width=1.8,
                  height=1.5, yaw=0.1, visible_camera=True, visible_radar=False)
    with LogWriter(tmp_path / "gt.mcap") as writer:
        for k in range(2):
            writer.write(GroundTruth(stamp_ns=(k + 1) * 10**9, labels={"car": 1}, agents=(agent,),
                                     bev=np.zeros((1, 2, 2), np.uint8), bev_classes=("vehicle",),
                                     scene_type="urban", condition="clear"))
    bag = _copy_into_bag(tmp_path / "gt.mcap", tmp_path / "bag", "SQLITE3", None)
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as con:  # a Humble or Iron bag: no definitions stored
        con.execute("update message_definitions set encoded_message_definition=''")
    with open_log(bag) as source:
        truths = [m.message for m in source.messages()]
        assert source.issues == []
    assert len(truths) == 2 and all(isinstance(t, GroundTruth) for t in truths)
    assert truths[0].agents[0].id == 7 and truths[0].agents[0].class_name == "car" and truths[1].labels == {"car": 1}


def test_a_message_compressed_mcap_bag_keeps_publish_times(tmp_path):
    # Read through rosbags, a message-compressed MCAP bag stamped its text with the receive (log)
    # time; as MCAP, each payload zstd-decompressed, the publish time it stores is kept, as for a
    # plain MCAP bag. A payload that is not zstd is reported (naming its topic and time) and skipped.
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    from mcap.reader import make_reader
    from mcap.writer import Writer as McapWriter
    from rosbags.rosbag2 import writer as rw
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    sent, late = 1_700_000_000 * 10**9, 80_000_000
    bag = tmp_path / "bag"
    writer = rosbag2.Writer(bag, version=9, storage_plugin=rosbag2.StoragePlugin.MCAP)
    writer.set_compression(rw.CompressionMode.MESSAGE, rw.CompressionFormat.ZSTD)
    with writer:  # rosbags writes publish time = log time: the records are redone below
        conn = writer.add_connection("/context/text", "std_msgs/msg/String", typestore=store)
        for k in range(2):
            text = store.types["std_msgs/msg/String"](data=f"school zone {k}")
            writer.write(conn, sent + k * 10**9 + late, store.serialize_cdr(text, "std_msgs/msg/String"))
    (mcap,) = bag.glob("*.mcap")
    with open(mcap, "rb") as f:
        reader = make_reader(f)
        summary, items = reader.get_summary(), list(reader.iter_messages())
    with open(mcap, "wb") as f:  # as rosbag2 (Iron+) records: the sender's stamp as publish time
        out = McapWriter(f)
        out.start(profile="ros2", library="rosbag2")
        for schema in summary.schemas.values():
            out.register_schema(schema.name, schema.encoding, schema.data)
        for channel in summary.channels.values():
            out.register_channel(channel.topic, channel.message_encoding, channel.schema_id)
        for k, (_, channel, message) in enumerate(items):
            out.add_message(channel.id, log_time=message.log_time, data=message.data,
                            publish_time=sent + k * 10**9, sequence=k)
        out.add_message(1, log_time=sent + 5 * 10**9, data=b"not zstd", publish_time=sent + 5 * 10**9)
        out.finish()
    for path in (bag, mcap):
        with open_log(path) as log:
            got = [(m.message.text, m.message.stamp_ns, m.log_time_ns) for m in log.messages()]
            issues = [(i.kind, i.detail) for i in log.issues]
        assert got == [(f"school zone {k}", sent + k * 10**9, sent + k * 10**9 + late) for k in range(2)]
        assert len(issues) == 1 and issues[0][0] == "decode" and "'/context/text'" in issues[0][1]
        assert f"at log time {sent + 5 * 10**9}" in issues[0][1] and "ZstdError" in issues[0][1]


def test_a_cut_log_is_read_in_two_passes_and_knows_its_duration(tmp_path, monkeypatch):
    # A log without a summary (a killed recorder) was decompressed about five times by replay: the
    # topics pass (an order-check pass, then the pass), the cloud-field probe (another order check),
    # and the messages (check, then read). Its duration stayed None, so replay's progress bar had no
    # total. Now: one pass for the topics (probing clouds and noting the span), one for the messages.
    from mcap.reader import make_reader

    import fusion_rt.logs.reader as reader_module

    from .test_logs_reader import _cut_before_summary, _stream, _write

    path = tmp_path / "cut.mcap"
    _write(path, _stream(), compression="zstd", chunk_size=1500)
    with open_log(path) as log:
        topics = log.topics()
    assert any(t.point_fields for t in topics)  # a radar cloud, probed from its first message
    with open(path, "rb") as f:
        kept = [m.log_time for _, _, m in make_reader(f).iter_messages(log_time_order=True)]
    chunks = _cut_before_summary(path)
    calls = []
    decompress = reader_module._decompress
    monkeypatch.setattr(reader_module, "_decompress", lambda chunk: calls.append(1) or decompress(chunk))
    with open_log(path) as log:
        assert log.topics() == topics
        assert log.duration_ns == kept[-1] - kept[0]
        assert len(calls) == len(chunks)  # one pass for topics, span and cloud fields
        assert [m.log_time_ns for m in log.messages()] == kept
        assert len(calls) == 2 * len(chunks)


def _ros_bag(path, storage: str, topics: dict[str, str], messages) -> None:
    """A rosbag2 bag written with rosbags (ROS 2 Humble types): `topics` {topic: type}, `messages`
    (topic, log time, message) in order."""
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    with rosbag2.Writer(path, version=8, storage_plugin=rosbag2.StoragePlugin[storage]) as writer:
        conns = {t: writer.add_connection(t, msgtype, typestore=store) for t, msgtype in topics.items()}
        for topic, stamp, msg in messages:
            writer.write(conns[topic], stamp, store.serialize_cdr(msg, topics[topic]))


def _header(stamp: int, frame_id: str):
    from rosbags.typesys import Stores, get_typestore

    types = get_typestore(Stores.ROS2_HUMBLE).types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                  nanosec=stamp % 10**9),
                                        frame_id=frame_id)


def _radar_cloud(stamp: int, names: list[str]):
    """A PointCloud2 of 3 float32 points with fields `names` ([]: a default-constructed, empty cloud)."""
    from rosbags.typesys import Stores, get_typestore

    types = get_typestore(Stores.ROS2_HUMBLE).types
    field = types["sensor_msgs/msg/PointField"]
    n = 3 if names else 0
    data = np.arange(n * len(names), dtype="<f4") + 5.0
    return types["sensor_msgs/msg/PointCloud2"](
        header=_header(stamp, "radar_front"), height=1, width=n,
        fields=[field(name=name, offset=4 * i, datatype=7, count=1) for i, name in enumerate(names)],
        is_bigendian=False, point_step=4 * len(names), row_step=4 * len(names) * n,
        data=np.frombuffer(data.tobytes(), np.uint8), is_dense=True)


@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
def test_a_radar_topic_whose_first_scans_are_empty_is_still_radar(tmp_path, storage):
    # A driver that publishes default-constructed clouds (no fields) before its first detections: the
    # probe read only the first message, so the topic was "not a radar" and replay said the log had none.
    radar = ["x", "y", "z", "radial_velocity", "rcs"]
    lidar = ["x", "y", "z", "intensity"]
    bag = tmp_path / "bag"
    pc2 = "sensor_msgs/msg/PointCloud2"
    messages = [("/radar/points", k * 10**8, _radar_cloud(k * 10**8, [] if k < 3 else radar)) for k in range(1, 8)]
    messages += [("/lidar/points", k * 10**8 + 1, _radar_cloud(k * 10**8 + 1, lidar)) for k in range(1, 8)]
    _ros_bag(bag, storage, {"/radar/points": pc2, "/lidar/points": pc2}, sorted(messages, key=lambda m: m[1]))
    with open_log(bag) as source:
        fields = {t.topic: t.point_fields for t in source.topics()}
        assert fields == {"/radar/points": tuple(radar), "/lidar/points": tuple(lidar)}
        assert resolve_topics(source.topics(), ["radar"]).topics == {"radar": "/radar/points"}


def test_a_cut_bag_probes_past_empty_first_scans_too(tmp_path):
    # A log without a summary takes another path (one undecoded pass probing each topic's first message).
    from .test_logs_reader import _cut_before_summary

    radar = ["x", "y", "z", "radial_velocity", "rcs"]
    bag = tmp_path / "bag"
    _ros_bag(bag, "MCAP", {"/radar/points": "sensor_msgs/msg/PointCloud2"},
             [("/radar/points", k * 10**8, _radar_cloud(k * 10**8, [] if k < 3 else radar)) for k in range(1, 8)])
    (mcap,) = bag.glob("*.mcap")
    _cut_before_summary(mcap)
    with open_log(mcap) as source:
        assert [t.point_fields for t in source.topics()] == [tuple(radar)]


def test_clouds_with_only_empty_scans_are_left_to_their_schema(tmp_path):
    bag = tmp_path / "bag"
    _ros_bag(bag, "SQLITE3", {"/radar/points": "sensor_msgs/msg/PointCloud2"},
             [("/radar/points", k * 10**8, _radar_cloud(k * 10**8, [])) for k in range(1, 4)])
    with open_log(bag) as source:
        assert [t.point_fields for t in source.topics()] == [None]
        assert resolve_topics(source.topics(), ["radar"]).topics == {"radar": "/radar/points"}


def _occupancy_grid(stamp: int, frame_id: str, cells: np.ndarray, cell_m: float = 1.0):
    """A nav_msgs/OccupancyGrid of `cells` [height, width] (ROS row-major), origin at (-64, -64)."""
    from rosbags.typesys import Stores, get_typestore

    t = get_typestore(Stores.ROS2_HUMBLE).types
    h, w = cells.shape
    origin = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=-64.0, y=-64.0, z=0.0),
                                         orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    info = t["nav_msgs/msg/MapMetaData"](map_load_time=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                         resolution=cell_m, width=w, height=h, origin=origin)
    return t["nav_msgs/msg/OccupancyGrid"](header=_header(stamp, frame_id), info=info,
                                           data=cells.ravel().astype(np.int8))


def _jpeg(stamp: int, shade: int):
    import cv2
    from rosbags.typesys import Stores, get_typestore

    t = get_typestore(Stores.ROS2_HUMBLE).types
    _, jpeg = cv2.imencode(".jpg", np.full((360, 640, 3), shade, np.uint8))
    return t["sensor_msgs/msg/CompressedImage"](header=_header(stamp, "camera_front"), format="jpeg",
                                                data=np.frombuffer(jpeg.tobytes(), np.uint8))


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    from .tiny_package import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("bags") / "pkg")


def test_a_slam_map_or_costmap_is_not_fused_as_the_class_map(tiny_package, tmp_path):
    # A slam_toolbox map (frame "map", values -1/0/100) and a nav2 costmap (frame "odom") were picked by
    # schema and fused as class maps: free space as off-road, obstacles as lane markings, no word said.
    from fusion_rt.replay import replay

    t0 = 1_600_000_000_000_000_000
    slam = np.zeros((128, 128), np.int8)
    slam[:, :10], slam[40:44, :] = -1, 100
    costmap = np.zeros((128, 128), np.int8)
    costmap[60:64, 60:64], costmap[56:68, 56:60] = 100, 40
    for name, frame, cells in (("slam", "map", slam), ("costmap", "odom", costmap), ("trinary", "base_link", slam)):
        bag = tmp_path / name
        messages = [("/map", t0, _occupancy_grid(t0, frame, cells))]
        messages += [("/cam/compressed", t0 + k * 50_000_000, _jpeg(t0 + k * 50_000_000, 20 * k)) for k in range(6)]
        _ros_bag(bag, "MCAP", {"/map": "nav_msgs/msg/OccupancyGrid",
                               "/cam/compressed": "sensor_msgs/msg/CompressedImage"}, messages)
        s = replay(bag, tiny_package).summary
        assert s["log"]["topics"]["map"] == "/map"
        assert s["outputs"] == 6 and s["messages_rejected"] == 1, (name, s["messages_rejected"])
        assert s["encoder_runs"]["map"] == 0  # masked: every output degraded map_missing
        assert s["reasons"]["degraded"]["camera:map_missing"] == 6


def test_radar_detections_in_odom_are_skipped_naming_the_frame(tiny_package, tmp_path):
    """Scans in a world-fixed frame cannot be placed: each is skipped with the reason and the replay
    goes on (it stopped with a ConfigError); a driver's own frame name is taken as the radar's, said."""
    from fusion_rt.replay import replay

    t0 = 1_600_000_000_000_000_000
    radar = ["x", "y", "z", "radial_velocity", "rcs"]
    for frame, refused in (("odom", True), ("base_footprint", False), ("ars408_link", False)):
        cloud = _radar_cloud(t0, radar)
        cloud.header.frame_id = frame
        bag = tmp_path / frame
        messages = [("/radar/points", t0, cloud)]
        messages += [("/cam/compressed", t0 + k * 50_000_000, _jpeg(t0 + k * 50_000_000, 20 * k)) for k in range(3)]
        _ros_bag(bag, "MCAP", {"/radar/points": "sensor_msgs/msg/PointCloud2",
                               "/cam/compressed": "sensor_msgs/msg/CompressedImage"}, messages)
        summary = replay(bag, tiny_package).summary
        foreign = [w for w in summary["warnings"] if "taken as the radar's own" in w]
        if refused:
            assert summary["encoder_runs"]["radar"] == 0 and summary["outputs"] == 3
            assert any("skipped as unsupported" in w and "frame 'odom' (a world-fixed frame" in w
                       for w in summary["warnings"]), summary["warnings"]
            assert not foreign  # skipped, not "taken as the radar's own"
        else:
            assert summary["encoder_runs"]["radar"] == 1
            assert bool(foreign) == (frame == "ars408_link") and (not foreign or "'ars408_link'" in foreign[0])


def test_replay_names_the_point_clouds_it_did_not_take_as_radar(tiny_package, tmp_path):
    """A bag whose only PointCloud2 has no velocity field replayed with 'the log has no topic for
    ['radar']' and no word of the cloud it passed over: the warning now names it and why."""
    from fusion_rt.replay import replay

    t0 = 1_600_000_000_000_000_000
    messages = [("/lidar/points", t0, _radar_cloud(t0, ["x", "y", "z", "intensity"]))]
    messages += [("/cam/compressed", t0 + k * 50_000_000, _jpeg(t0 + k * 50_000_000, 20 * k)) for k in range(3)]
    bag = tmp_path / "lidar"
    _ros_bag(bag, "MCAP", {"/lidar/points": "sensor_msgs/msg/PointCloud2",
                           "/cam/compressed": "sensor_msgs/msg/CompressedImage"}, messages)
    warnings = replay(bag, tiny_package).summary["warnings"]
    assert any("no topic for" in w and "radar" in w for w in warnings), warnings
    assert any(w.startswith("PointCloud2 topics not taken as radar: /lidar/points: no velocity field")
               for w in warnings), warnings


def test_split_files_that_overlap_in_time_are_said(short_drive, tmp_path):
    """A folder of two copies of one drive is read as one bag (rosbag2 leaves no metadata.yaml when a
    recording is cut short, so none is needed), but its second split starts before the first ends:
    said once, as an order issue naming the split, in both passes; real splits say nothing."""
    from fusion_rt.logs import LogWriter

    copies = tmp_path / "copies"
    copies.mkdir()
    for part in ("part_0.mcap", "part_1.mcap"):
        shutil.copy(short_drive, copies / part)
    with open_log(copies) as source:
        count = sum(1 for _ in source.messages())
        issues = [i for i in source.issues if i.kind == "order"]
        assert len(issues) == 1 and issues[0].detail.startswith("part_1.mcap: a message at log time")
        assert "several recordings" in issues[0].detail
        assert sum(1 for _ in source.stamps()) == count
        assert [i.kind for i in source.issues].count("order") == 1  # the stamps pass said it again, once

    # the same drive cut in two at a time: splits in sequence, nothing said
    splits = tmp_path / "splits"
    splits.mkdir()
    with open_log(short_drive) as source:
        items = list(source.messages())
    middle = items[len(items) // 2].log_time_ns
    for index, keep in enumerate((lambda t: t < middle, lambda t: t >= middle)):
        with LogWriter(splits / f"bag_{index}.mcap") as writer:
            for item in items:
                if keep(item.log_time_ns):
                    writer.write(item.message, item.topic, log_time_ns=item.log_time_ns)
    with open_log(splits) as source:
        assert sum(1 for _ in source.messages()) == len(items)
        assert [i for i in source.issues if i.kind == "order"] == []
