"""Replay and compare on real simulated drives and the tiny package: modes, bad logs,
foreign layouts (raw Image, nuScenes 18-field radar), sensor ablation, the results log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as Ros2Writer

from fusion_rt.errors import ConfigError
from fusion_rt.logs.convert import to_ros
from fusion_rt.logs.schemas import IMAGE, POINT_CLOUD2, SCHEMAS
from fusion_rt.messages import CameraFrame
from fusion_rt.replay import RESULT_TOPICS, STAT_KEYS, ReplayConfig, ReplayMode, compare, replay

from .conftest import run_cli
from .tiny_package import make_tiny_package


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return make_tiny_package(tmp_path_factory.mktemp("replay") / "pkg")


def test_a_results_log_given_as_the_sensor_log_is_named_as_such(short_drive, package, tmp_path):
    """A --calib glob that caught results_int8.mcap was told to choose --topics camera=/fusion/bev/compressed:
    the BEV render as the camera. A results log is refused as one."""
    from fusion_rt.errors import ConfigError

    out = tmp_path / "results.mcap"
    replay(short_drive, package, ReplayConfig(out=out))
    with pytest.raises(ConfigError, match=r"the log is a fusion-rt results log \(replay --out: /fusion/outputs\), "
                                          "not a sensor log: pass the sensor log it was replayed from"):
        replay(out, package, ReplayConfig())


def test_results_log_opens_with_the_official_reader_and_decodes(short_drive, package, tmp_path):
    out = tmp_path / "results.mcap"
    result = replay(short_drive, package, ReplayConfig(out=out))
    seen: dict[str, int] = {}
    with open(out, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, _, decoded in reader.iter_decoded_messages():
            seen[channel.topic] = seen.get(channel.topic, 0) + 1
            if channel.topic == RESULT_TOPICS["outputs"]:
                assert schema.name == "fusion_rt_msgs/msg/FusionOutput"
                assert list(decoded.scene_labels) == ["car", "truck", "pedestrian", "cyclist", "hazard"]
                assert len(decoded.scene_probabilities) == 5 and decoded.status in ("ok", "degraded")
                assert "camera" in decoded.source_modalities
                assert not any(f.startswith("deadline_miss") for f in decoded.flags)
            elif channel.topic in (RESULT_TOPICS["bev"], RESULT_TOPICS["camera"]):
                assert decoded.format in ("png", "jpeg") and len(decoded.data) > 100
            elif channel.topic == RESULT_TOPICS["timings"]:
                assert "end_to_end" in decoded.stages and decoded.mode == "lockstep"
    n = result.summary["outputs"]
    assert seen == {t: n for t in RESULT_TOPICS.values()}


def test_cli_summary_keys_and_table(short_drive, package, tmp_path):
    summary_path = tmp_path / "s.json"
    proc = run_cli("replay", str(short_drive), "--package", str(package), "--json", str(summary_path),
                   "--mode", "burst")
    assert proc.returncode == 0, proc.stderr
    assert "latency (ms)" in proc.stdout and "end_to_end" in proc.stdout
    s = json.loads(summary_path.read_text())
    for key in ("frames", "outputs", "rejected", "degraded", "dropped", "deadline_misses", "latency_ms", "metrics",
                "log", "package"):
        assert key in s, key
    assert s["frames"] == 80 and s["outputs"] + s["messages"]["camera"]["rejected"] == s["frames"]
    assert set(STAT_KEYS) <= set(s["latency_ms"]["end_to_end"])
    assert {"camera_preprocess", "camera_encoder", "head"} <= set(s["latency_ms"])
    assert {"name", "precision", "sha256"} <= set(s["package"]) and len(s["package"]["sha256"]) == 64
    assert s["log"]["truncated_at"] is None and s["log"]["issues"] == 0
    overall = s["metrics"]["overall"]
    assert {"scene_auc", "scene_f1", "bev_iou"} <= set(overall) and s["metrics"]["per_condition"]


def test_truncated_log_replays_to_the_cut_with_a_warning(short_drive, package, tmp_path):
    cut = tmp_path / "cut.mcap"
    data = short_drive.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    summary_path = tmp_path / "s.json"
    proc = run_cli("replay", str(cut), "--package", str(package), "--json", str(summary_path), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stderr and "Traceback" not in proc.stderr
    s = json.loads(summary_path.read_text())
    assert s["log"]["truncated_at"] is not None and 0 < s["log"]["truncated_at"] <= len(data) * 0.6
    assert str(s["log"]["truncated_at"]) in proc.stderr
    assert 0 < s["frames"] < 80


def test_not_a_log_is_one_line_and_non_zero(package, tmp_path):
    junk = tmp_path / "notes.mcap"
    junk.write_text("this is not a log\n")
    proc = run_cli("replay", str(junk), "--package", str(package))
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "not an MCAP log" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_drop_radar_flags_every_output_degraded(short_drive, package):
    assert ReplayConfig(drop=("radar", "map", "radar")).drop == ("radar", "map")  # said once in the summary
    result = replay(short_drive, package, ReplayConfig(drop=("radar",), out=None))
    s = result.summary
    assert s["outputs"] > 0 and s["degraded"] == s["outputs"]
    assert all("degraded:radar_missing" in f.flags for f in result.frames if f.status != "rejected")
    assert s["messages"]["radar"]["received"] == 0
    with pytest.raises(ConfigError, match="lidar"):
        replay(short_drive, package, ReplayConfig(drop=("lidar",)))


def test_an_interrupted_replay_leaves_the_previous_results(short_drive, package, tmp_path):
    """The results log is written beside its path and renamed into place only when the replay ends."""
    out = tmp_path / "results.mcap"
    out.write_bytes(b"the previous results")

    def interrupt(done_s, _total_s):
        if done_s > 1.0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(short_drive, package, ReplayConfig(out=out), progress=interrupt)
    assert out.read_bytes() == b"the previous results"
    assert [p.name for p in tmp_path.iterdir()] == ["results.mcap"]  # no partial file left behind
    replay(short_drive, package, ReplayConfig(out=out))
    assert out.read_bytes()[:8] == b"\x89MCAP0\r\n"


@pytest.mark.parametrize("mode", [ReplayMode.BURST, ReplayMode.REALTIME])
def test_an_interrupted_prefetching_replay_stops_its_thread(short_drive, package, mode):
    """The prefetch thread is stopped and joined before the log is closed, whatever interrupts the
    replay (it used to keep reading a closed file for as long as the exception was referenced)."""
    import threading

    def interrupt(done_s, _total_s):
        if done_s > 0.5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as held:
        replay(short_drive, package, ReplayConfig(mode=mode, realtime_speed=8.0), progress=interrupt)
    assert held.value is not None  # the exception (and its frames) is still referenced here
    assert not [t for t in threading.enumerate() if t.name == "fusion-rt-replay-prefetch"]
    if mode is ReplayMode.BURST:  # and a completed burst replay says its timings exclude the decode
        assert "exclude" in replay(short_drive, package, ReplayConfig(mode=mode)).summary["timing_note"]


def test_ground_truth_of_frames_without_an_output_is_not_kept():
    from fusion_rt.messages import GroundTruth
    from fusion_rt.replay import _Metrics

    def gt(stamp: int) -> GroundTruth:
        return GroundTruth(stamp_ns=stamp, labels={"car": 1}, agents=(), bev=np.zeros((1, 2, 2), np.uint8),
                           bev_classes=("car",), scene_type="urban", condition="day", ego_speed_mps=0.0, extras={})

    metrics = _Metrics(("car",), ("car",))
    metrics.truth(gt(1))
    metrics.no_output(1)  # truth first, then the frame is dropped
    metrics.no_output(2)  # the frame is dropped before its truth arrives
    metrics.truth(gt(2))
    assert metrics._truth == {} and metrics._no_output == set()


def test_a_dropped_modality_need_not_have_one_topic(short_drive, package, tmp_path):
    """Two radars in the log: ambiguous for a replay that reads radar, irrelevant when radar is masked."""
    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.logs.topics import AmbiguousTopicError

    two = tmp_path / "two_radars.mcap"
    with LogReader(short_drive) as reader, LogWriter(two) as writer:
        for item in reader.messages():
            if item.topic == "/radar/front/tensor":
                writer.write(item.message, topic="/radar/left/tensor")
                writer.write(item.message, topic="/radar/right/tensor")
            elif item.topic != "/radar/front/detections":
                writer.write(item.message, topic=item.topic)
    with pytest.raises(AmbiguousTopicError, match="/radar/left/tensor"):
        replay(two, package)
    s = replay(two, package, ReplayConfig(drop=("radar",))).summary
    assert s["outputs"] > 0 and s["degraded"] == s["outputs"]


def test_realtime_mode_counts_add_up(short_drive, package):
    s = replay(short_drive, package, ReplayConfig(mode=ReplayMode.REALTIME, realtime_speed=4.0)).summary
    camera = s["messages"]["camera"]
    assert s["frames"] == 80 == camera["received"]
    assert camera["ok"] + camera["degraded"] + camera["rejected"] + camera["dropped"] == camera["received"]
    assert s["outputs"] == camera["ok"] + camera["degraded"]


def test_realtime_speed_from_the_cli(short_drive, package, tmp_path):
    """--speed paces realtime mode; a runtime that falls behind drops messages (latest wins) but
    refuses none as "future": dropped messages still advance the stamp checks' clock."""
    out = tmp_path / "s.json"
    proc = run_cli("replay", str(short_drive), "--package", str(package), "--mode", "realtime", "--speed", "50",
                   "--json", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    assert s["mode"] == "realtime" and s["speed"] == 50.0
    assert s["rejected"] == 0 and s["reasons"]["rejected"] == {}, s["reasons"]
    proc = run_cli("replay", str(short_drive), "--package", str(package), "--speed", "2", "-q")
    assert proc.returncode != 0 and "--speed 2 paces --mode realtime only" in proc.stderr


def test_compare_package_with_itself(short_drive, package, tmp_path):
    out = tmp_path / "c.json"
    proc = run_cli("compare", str(short_drive), "--a", str(package), "--b", str(package), "--json", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    assert s["frames_compared"] == 80 and s["status_agreement"] == 1.0
    for name in ("scene", "bev"):
        d = s["divergence"][name]
        assert d["max_abs"] == 0.0 and d["mean_abs"] == 0.0 and d["agreement"] == 1.0
        assert d["cosine"] == pytest.approx(1.0)
    assert all(v == 0.0 for v in s["metrics_delta"].values() if v is not None)
    assert s["latency_ratio_b_over_a"]["p50"] > 0
    assert s["worst_frames"] == [] and "worst frames: none, every compared output is identical" in proc.stdout
    piped = run_cli("compare", str(short_drive), "--a", str(package), "--b", str(package), "--json", "/dev/stdout")
    assert piped.returncode == 0 and json.loads(piped.stdout)["frames_compared"] == 80  # the JSON alone on stdout
    assert "status agreement" in piped.stderr


def test_summary_counts_frames_beside_frames_and_messages_apart(short_drive, package, tmp_path):
    """`rejected` / `dropped` sit beside `frames` and `outputs`: they count camera frames (frames =
    outputs + rejected + dropped); the other sensors' refused messages are counted apart (five
    all-NaN radar tensors used to read as five rejected frames)."""
    import dataclasses

    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.messages import RadarTensor

    log = tmp_path / "nan_radar.mcap"
    spoiled = 0
    with LogReader(short_drive) as reader, LogWriter(log) as writer:
        for item in reader.messages():
            message = item.message
            if isinstance(message, RadarTensor) and spoiled < 5:
                message = dataclasses.replace(message, data=np.full_like(message.data, np.nan))
                spoiled += 1
            writer.write(message, topic=item.topic)
    s = replay(log, package).summary
    assert s["frames"] == s["outputs"] + s["rejected"] + s["dropped"] == 80
    assert s["rejected"] == s["messages"]["camera"]["rejected"] == 0
    assert s["messages_rejected"] == s["messages"]["radar"]["rejected"] == 5


def test_compare_counts_frames_only_one_side_outputs(short_drive, package, tmp_path):
    """B's head emits NaN scene logits whenever every modality is present, so B rejects those frames
    (nonfinite_output) while A outputs them: they are status disagreements, listed, and left out
    of metrics_delta (which compares both sides on the frames both output). Compared only on the
    frames both output, this looked like perfect agreement."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from fusion_rt.package import replace_graph
    from fusion_rt.replay import compare

    nan = tmp_path / "nan"
    shutil.copytree(package, nan)
    model = onnx.load(str(nan / "head.onnx"))
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["scene_logits_raw" if o == "scene_logits" else o for o in node.output]
    graph.initializer.extend([helper.make_tensor("n_modalities", TensorProto.FLOAT, [], [4.0]),
                              helper.make_tensor("axis_1", TensorProto.INT64, [1], [1])])
    graph.node.extend([  # (present count - 4) / itself: 0/0 = NaN with every modality present, else 1
        helper.make_node("Cast", ["present"], ["present_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["present_f", "axis_1"], ["present_n"], keepdims=1),
        helper.make_node("Sub", ["present_n", "n_modalities"], ["missing"]),
        helper.make_node("Div", ["missing", "missing"], ["one_or_nan"]),
        helper.make_node("Mul", ["scene_logits_raw", "one_or_nan"], ["scene_logits"]),
    ])
    onnx.save(model, str(nan / "head.onnx"))
    replace_graph(nan, "head")
    s = compare(short_drive, package, nan).summary
    a_only = s["one_side_only"]["a"]["frames"]
    assert a_only > 0 and s["one_side_only"]["b"]["frames"] == 0 and s["unmatched"] == a_only
    assert s["camera_frames"] == 80 and s["frames_compared"] == 80 - a_only
    assert s["status_agreement"] == pytest.approx((80 - a_only) / 80)  # was 1.0 over the compared frames
    assert len(s["one_side_only"]["a"]["first_stamps_ns"]) == min(5, a_only)
    assert s["b"]["rejected"] == a_only and s["b"]["outputs"] == 80 - a_only
    assert any("one side only" in w for w in s["warnings"])
    # the delta is over the frames both output: each side's metrics there are shown beside it
    for k, delta in s["metrics_delta"].items():
        a, b = s["a"]["metrics_common"][k], s["b"]["metrics_common"][k]
        assert delta == (None if a is None or b is None else pytest.approx(b - a, abs=1e-6)), k


def test_compare_refuses_packages_with_other_bev_outputs(short_drive, package, tmp_path):
    """Two packages whose BEV classes differ in order would be compared class against wrong class."""
    import shutil

    from fusion_rt.replay import compare

    other = tmp_path / "reversed"
    shutil.copytree(package, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["outputs"]["bev_classes"] = manifest["outputs"]["bev_classes"][::-1]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="differ in their BEV output"):
        compare(short_drive, package, other)
    with pytest.raises(ConfigError, match="worst must be a non-negative integer of frames, got -1"):
        compare(short_drive, package, package, worst=-1)


def test_compare_names_the_side_of_a_package_it_refuses(short_drive, package, tmp_path):
    """Both packages hold a head.onnx: a tampered one was refused without saying which side."""
    from fusion_rt.errors import IntegrityError

    tampered = tmp_path / "tampered"
    shutil.copytree(package, tampered)
    with open(tampered / "head.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match=r"^package B \('.*tampered'\): graph 'head': sha256 of 'head.onnx'"):
        compare(short_drive, package, tampered)


def _nuscenes_cloud(stamp_ns: int, rng: np.random.Generator) -> dict:
    """A nuScenes-layout radar PointCloud2 (18 fields, mixed types, velocity components only)."""
    layout = [("x", "f4", 7), ("y", "f4", 7), ("z", "f4", 7), ("dyn_prop", "i1", 1), ("id", "i2", 3),
              ("rcs", "f4", 7), ("vx", "f4", 7), ("vy", "f4", 7), ("vx_comp", "f4", 7), ("vy_comp", "f4", 7),
              ("is_quality_valid", "i1", 1), ("ambig_state", "i1", 1), ("x_rms", "i1", 1), ("y_rms", "i1", 1),
              ("invalid_state", "i1", 1), ("pdh0", "i1", 1), ("vx_rms", "i1", 1), ("vy_rms", "i1", 1)]
    dtype = np.dtype([(n, "<" + t) for n, t, _ in layout])  # packed, like the nuScenes devkit's files
    n = 40
    pts = np.zeros(n, dtype=dtype)
    pts["x"] = rng.uniform(5, 60, n)
    pts["y"] = rng.uniform(-20, 20, n)
    pts["rcs"] = rng.uniform(-5, 20, n)
    pts["vx_comp"] = rng.uniform(-10, 10, n)
    pts["vy_comp"] = rng.uniform(-2, 2, n)
    fields = [{"name": name, "offset": dtype.fields[name][1], "datatype": code, "count": 1}
              for name, _, code in layout]
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return {"header": {"stamp": {"sec": sec, "nanosec": nsec}, "frame_id": "radar_front"}, "height": 1,
            "width": n, "fields": fields, "is_bigendian": False, "point_step": dtype.itemsize,
            "row_step": dtype.itemsize * n, "data": pts.tobytes(), "is_dense": True}


def test_raw_image_and_nuscenes_radar_replay(package, tmp_path):
    path = tmp_path / "foreign.mcap"
    rng = np.random.default_rng(0)
    t0 = 1_600_000_000_000_000_000
    with open(path, "wb") as f:
        writer = Ros2Writer(f)
        image_schema = writer.register_msgdef(IMAGE, SCHEMAS[IMAGE])
        cloud_schema = writer.register_msgdef(POINT_CLOUD2, SCHEMAS[POINT_CLOUD2])
        for i in range(20):
            stamp = t0 + i * 50_000_000
            writer.write_message("/RADAR_FRONT", cloud_schema, _nuscenes_cloud(stamp - 10_000_000, rng),
                                 log_time=stamp - 10_000_000, publish_time=stamp - 10_000_000)
            pixels = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)  # not the rig's 640x360
            _, ros = to_ros(CameraFrame(stamp, pixels.tobytes(), encoding="rgb8", width=160, height=90))
            writer.write_message("/CAM_FRONT/image_raw", image_schema, ros, log_time=stamp, publish_time=stamp)
        writer.finish()
    result = replay(path, package, ReplayConfig(out=tmp_path / "r.mcap"))
    s = result.summary
    assert s["log"]["topics"] == {"camera": "/CAM_FRONT/image_raw", "radar": "/RADAR_FRONT"}
    assert s["log"]["topics_how"] == {"camera": "schema", "radar": "schema"}
    assert s["radar_from_detections"] is True
    assert s["frames"] == 20 and s["outputs"] == 20 and s["rejected"] == 0
    assert s["messages"]["radar"]["ok"] == 20
    assert all("degraded:radar_missing" not in f.flags for f in result.frames)
    assert any("map" in w for w in s["warnings"])  # no map / text topics: said, not an error


def test_bag_directory_of_mcap_files(short_drive, package, tmp_path):
    bag = tmp_path / "bag"
    bag.mkdir()
    shutil.copy(short_drive, bag / "bag_0.mcap")
    s = replay(bag, package).summary
    assert s["frames"] == 80 and s["outputs"] > 0


def test_db3_bag(package, camera_only_bag):
    bag = camera_only_bag
    s = replay(bag, package).summary
    assert s["log"]["topics"] == {"camera": "/cam/compressed"} and s["outputs"] == 10


def test_detections_in_the_ego_frame_are_moved_into_the_radar_frame():
    """A PointCloud2 in base_link was binned as if in the radar frame: a point 20 m ahead of the car
    landed 20.3 m from a radar mounted 3.7 m forward, not 16.3 m. Ego-frame detections go through
    the rig's radar pose; the radar's own frame is taken as it is."""
    from fusion_rt.messages import RadarDetections
    from fusion_rt.preprocess import PreprocessConfig
    from fusion_rt.replay import detections_to_tensor
    from fusion_rt.rig import Rig

    rig = Rig.default()
    config = PreprocessConfig.from_rig(rig)
    in_radar = np.array([[16.3, 1.0, 0.0, -3.0, 10.0]], np.float32)
    in_ego = in_radar.copy()
    in_ego[:, :3] = rig.radar.pose.to_ego(in_radar[:, :3].astype(np.float64))
    a = detections_to_tensor(RadarDetections(stamp_ns=1, points=in_radar, frame_id=rig.radar.frame_id), rig.radar,
                             config)
    b = detections_to_tensor(RadarDetections(stamp_ns=1, points=in_ego, frame_id="base_link"), rig.radar, config)
    np.testing.assert_allclose(b.data, a.data, atol=1e-5)
    c = detections_to_tensor(RadarDetections(stamp_ns=1, points=in_ego, frame_id=rig.radar.frame_id), rig.radar,
                             config)
    assert not np.allclose(c.data, a.data)  # the same numbers in the radar frame are another place


def test_velocity_components_in_the_ego_frame_give_the_radars_radial_velocity():
    """A PointCloud2 in base_link with vx/vy (no radial field) got the radial velocity along the line
    from base_link's origin: a target 3 m ahead of and 4.5 m left of the radar closing at 10 m/s read
    -8.30 m/s where the radar sees -5.55. It is taken along the line of sight from the radar, in the
    radar's axes (a yawed radar too); a measured radial velocity is kept as it is."""
    import dataclasses

    from fusion_rt.messages import RadarDetections
    from fusion_rt.preprocess import PreprocessConfig
    from fusion_rt.replay import detections_to_tensor
    from fusion_rt.rig import Rig

    rig = Rig.default()
    config = PreprocessConfig.from_rig(rig)
    channel = config.radar_channels.index("radial_velocity_mps")
    for yaw in (0.0, 0.3):
        radar = dataclasses.replace(rig.radar, pose=dataclasses.replace(rig.radar.pose, yaw=yaw))
        target = np.array([[3.0, 4.5, 0.0]])  # in the radar frame
        velocity = np.array([[-10.0, 0.0]])  # in the ego frame
        in_ego = radar.pose.to_ego(target)
        seen = float(((radar.pose.from_ego(in_ego + np.append(velocity[0], 0.0)) - target)[0, :2] @ target[0, :2])
                     / np.hypot(*target[0, :2]))  # the velocity in the radar's axes, along its line of sight
        from_origin = float(in_ego[0, :2] @ velocity[0] / np.hypot(*in_ego[0, :2]))
        assert abs(seen - from_origin) > 1.0
        points = np.array([[*in_ego[0], from_origin, 10.0]], np.float32)  # as the converter leaves them
        det = RadarDetections(stamp_ns=1, points=points, frame_id="base_link", velocity=velocity.astype(np.float32))
        cells = detections_to_tensor(det, radar, config).data[channel]
        np.testing.assert_allclose(cells[np.nonzero(cells)], [seen], rtol=1e-5)
        measured = RadarDetections(stamp_ns=1, points=points, frame_id="base_link")  # a radial field: kept
        cells = detections_to_tensor(measured, radar, config).data[channel]
        np.testing.assert_allclose(cells[np.nonzero(cells)], [from_origin], rtol=1e-5)


def _bev_warnings(summary: dict) -> list[str]:
    return [w for w in summary["warnings"] if "BEV IoU" in w]


def test_bev_iou_is_scored_only_on_the_logs_grid(short_drive, package, tmp_path):
    """BEV IoU compares cells: a package whose rig.bev covers 20-71.2 m ahead was scored cell by cell
    against truth covering 0-51.2 m (same 64x64 shape), with no word. The log's rig (its
    fusion_rt.rig metadata) must put its truth on the package's grid, else a warning names both."""
    same = replay(short_drive, package).summary
    assert "bev_iou" in same["metrics"]["overall"] and not _bev_warnings(same)

    shifted = tmp_path / "shifted"
    shutil.copytree(package, shifted)
    manifest = json.loads((shifted / "manifest.json").read_text())
    manifest["rig"]["bev"].update(x_min_m=20.0, x_max_m=71.2)
    (shifted / "manifest.json").write_text(json.dumps(manifest))
    s = replay(short_drive, shifted).summary
    assert "bev_iou" not in s["metrics"]["overall"] and s["metrics"]["overall"]["scene_auc"]
    assert all("bev_iou" not in block for block in s["metrics"]["per_condition"].values())
    (warning,) = _bev_warnings(s)
    assert "x [0, 51.2] m" in warning and "x [20, 71.2] m" in warning, warning


def test_names_the_ground_truth_lacks_are_said(short_drive, package, tmp_path):
    """Scene labels and BEV classes are scored by name: a package labelled in other words was scored
    on the rest (or on nothing) without a word. A warning names the package's names and the log's."""
    renamed = tmp_path / "renamed"
    shutil.copytree(package, renamed)
    manifest = json.loads((renamed / "manifest.json").read_text())
    manifest["outputs"]["scene_labels"][0] = "automobile"
    manifest["outputs"]["bev_classes"][1] = "lorry"
    (renamed / "manifest.json").write_text(json.dumps(manifest))
    assert not [w for w in replay(short_drive, package).summary["warnings"] if "names must match" in w]
    s = replay(short_drive, renamed).summary
    said = [w for w in s["warnings"] if "names must match" in w]
    assert len(said) == 2, s["warnings"]
    assert "scene labels ['automobile']" in said[0] and "'car'" in said[0]
    assert "BEV classes ['lorry']" in said[1] and "'truck'" in said[1]
    assert "automobile" not in s["metrics"]["overall"]["scene_auc"] and "truck" in s["metrics"]["overall"]["scene_auc"]


def test_bev_iou_needs_the_logs_rig(short_drive, package, tmp_path):
    """A log without fusion_rt.rig metadata does not say which grid its truth is on: BEV IoU is scored
    where the shapes match, with a warning that the package's grid is assumed."""
    from fusion_rt.logs import LogReader, LogWriter

    bare = tmp_path / "bare.mcap"
    with LogReader(short_drive) as reader, LogWriter(bare) as writer:
        for m in reader.messages():
            writer.write(m.message, topic=m.topic, log_time_ns=m.log_time_ns)
    s = replay(bare, package).summary
    assert s["metrics"]["overall"]["scene_auc"]
    assert s["metrics"]["overall"]["bev_iou"] == replay(short_drive, package).summary["metrics"]["overall"]["bev_iou"]
    (warning,) = _bev_warnings(s)
    assert "assumes" in warning and "no fusion_rt.rig metadata" in warning and "rig.bev is 64x64" in warning, warning


@pytest.mark.parametrize("mode", ["lockstep", "burst"])
def test_replay_refuses_a_camera_of_another_size_as_the_runtime_does(package, tmp_path, mode):
    # Replay ran its runtime without the camera size check: a 640x480 camera (another field of view)
    # was squashed into the model input and gave 80/80 outputs, where FusionRuntime rejects every frame.
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    log = tmp_path / "tall.mcap"
    record_drive(DriveConfig(seconds=1.0, seed=5, camera_size=(640, 480)), log)
    s = replay(log, package, ReplayConfig(mode=mode)).summary
    assert s["frames"] > 0 and s["rejected"] == s["frames"]
    assert s["reasons"]["rejected"] == {"camera:wrong_size": s["frames"]}


def _held(monkeypatch) -> dict[str, int]:
    """Peak numbers of frames replay holds awaiting ground truth: camera frames for the worst-frames
    thumbnails (_Session._pending) and outputs (_Metrics._outputs, of every _Metrics)."""
    from fusion_rt import replay as replay_module

    peak = {"pending": 0, "outputs": 0}
    push, output = replay_module._Session.push, replay_module._Metrics.output

    def counted_push(self, *args):
        result = push(self, *args)
        peak["pending"] = max(peak["pending"], len(self._pending))
        return result

    def counted_output(self, out):
        output(self, out)
        peak["outputs"] = max(peak["outputs"], len(self._outputs))

    monkeypatch.setattr(replay_module._Session, "push", counted_push)
    monkeypatch.setattr(replay_module._Metrics, "output", counted_output)
    return peak


def test_frames_ground_truth_no_longer_labels_are_let_go(short_drive, package, tmp_path, monkeypatch):
    # Labelled keyframes (ground truth on every 10th frame): replay and compare held every unlabelled
    # frame's output and camera frame to the end (72 of the 80 frames here, 90% of a long drive).
    # A frame takes the ground truth of its own stamp only, and ground truth is read in stamp order:
    # a frame more than _TRUTH_REORDER_NS (1 s) before the newest ground truth read is let go.
    from itertools import count

    from fusion_rt import replay as replay_module

    from .conftest import copy_log

    seen = count()
    sparse = copy_log(short_drive, tmp_path / "sparse.mcap",
                      lambda m: m.topic != "/ground_truth" or next(seen) % 10 == 0)
    peak = _held(monkeypatch)
    config = ReplayConfig(out=tmp_path / "new.mcap")
    new = replay(sparse, package, config)
    frames, rate = new.summary["frames"], new.summary["frames"] / new.summary["log"]["duration_s"]
    assert frames >= 70 and new.summary["metrics"]["overall"]["frames"] == 8
    window = int(rate * (1 + 10 / 20)) + 2  # 1 s of frames, and the 10 frames between two labels
    assert 0 < peak["pending"] <= window and 0 < peak["outputs"] <= window, (peak, window)
    held = dict(peak)
    peak.update(pending=0, outputs=0)
    monkeypatch.setattr(replay_module, "_TRUTH_REORDER_NS", 10**18)  # nothing let go: as it was
    old = replay(sparse, package, ReplayConfig(out=tmp_path / "old.mcap"))
    assert peak["pending"] >= frames - 10 and peak["outputs"] >= frames - 10 > held["outputs"], (peak, held)
    same = ("metrics", "frames", "outputs", "degraded", "rejected")
    assert {k: new.summary[k] for k in same} == {k: old.summary[k] for k in same}
    assert [(w.stamp_ns, w.score, w.thumbnail_jpeg) for w in new.worst] == \
           [(w.stamp_ns, w.score, w.thumbnail_jpeg) for w in old.worst]
    assert new.warnings == old.warnings

    def outputs(path):
        with open(path, "rb") as f:
            return [(m.log_time, m.data) for _, c, m in make_reader(f).iter_messages() if c.topic != "/fusion/timings"]
    assert outputs(tmp_path / "new.mcap") == outputs(tmp_path / "old.mcap")
    monkeypatch.undo()

    peak = _held(monkeypatch)  # compare: 4 _Metrics (each side's, and both over common frames)
    c = compare(sparse, package, package)
    assert c.summary["a"]["metrics"] == {k: new.summary["metrics"]["overall"][k]
                                         for k in ("mean_scene_auc", "mean_scene_f1", "mean_bev_iou")}
    assert 0 < peak["outputs"] <= window, peak


def test_a_log_without_ground_truth_keeps_no_outputs_for_metrics(short_drive, package, tmp_path, monkeypatch):
    from .conftest import copy_log

    bare = copy_log(short_drive, tmp_path / "bare.mcap", lambda m: m.topic != "/ground_truth")
    peak = _held(monkeypatch)
    s = replay(bare, package).summary
    assert s["frames"] >= 70 and s["metrics"] is None
    assert compare(bare, package, package).summary["a"]["metrics"]["mean_scene_auc"] is None
    assert peak == {"pending": 0, "outputs": 0}


def test_ground_truth_far_out_of_stamp_order_is_said():
    from fusion_rt.messages import GroundTruth
    from fusion_rt.replay import _TRUTH_REORDER_NS, _late_truth_warnings, _Metrics

    def gt(stamp: int) -> GroundTruth:
        return GroundTruth(stamp_ns=stamp, labels={"car": 1}, agents=(), bev=np.zeros((1, 2, 2), np.uint8),
                           bev_classes=("car",), scene_type="urban", condition="day", ego_speed_mps=0.0, extras={})

    metrics = _Metrics(("car",), ("car",))
    metrics.truth(gt(5 * _TRUTH_REORDER_NS))
    metrics.truth(gt(4 * _TRUTH_REORDER_NS))  # within the margin
    assert _late_truth_warnings(metrics) == []
    metrics.truth(gt(2 * _TRUTH_REORDER_NS))
    (warning,) = _late_truth_warnings(metrics)
    assert warning.startswith("1 ground truth messages were stamped more than 1 s before"), warning


def _restamped(src: Path, dst: Path, stamp) -> None:
    """`src` rewritten with each message's stamp from `stamp(modality, stamp_ns)`, log times kept
    (ground truth left out)."""
    import dataclasses

    from fusion_rt.logs import LogReader, LogWriter

    with LogReader(src) as reader, LogWriter(dst) as writer:
        for m in reader.messages():
            msg = m.message
            if msg.modality == "ground_truth":
                continue
            writer.write(dataclasses.replace(msg, stamp_ns=stamp(msg.modality, msg.stamp_ns)), topic=m.topic,
                         log_time_ns=m.log_time_ns)


def _clock_warnings(summary: dict) -> list[str]:
    return [w for w in summary["warnings"] if "header stamp" in w or "clock" in w]


def test_a_sensor_on_another_clock_is_said(short_drive, package, tmp_path):
    """A camera stamping on sim time (from 0) while radar and map stamp with epoch time: every output
    was degraded radar_missing / map_missing and nothing said the clocks differ by 1.6e9 s."""
    from fusion_rt.logs import LogReader

    with LogReader(short_drive) as reader:
        t0 = next(m.message.stamp_ns for m in reader.messages() if m.message.modality == "camera")
    mixed = tmp_path / "mixed.mcap"
    _restamped(short_drive, mixed, lambda m, t: t - t0 + 5 * 10**9 if m == "camera" else t)
    s = replay(mixed, package).summary
    assert s["reasons"]["degraded"].get("camera:radar_missing") == s["outputs"] > 0
    warnings = _clock_warnings(s)
    radar = [w for w in warnings if w.startswith("radar header stamps")]
    assert len(radar) == 1, warnings
    offset = f"{(t0 - 5 * 10**9) / 1e9:.3g} s ahead of the camera's"
    assert offset in radar[0] and "another clock" in radar[0] and f"radar_missing {s['outputs']}" in radar[0], radar
    # the sensors of the simulated drive share one clock: nothing said, and the outputs are the same
    plain = replay(short_drive, package).summary
    assert _clock_warnings(plain) == []


def test_header_stamps_never_set_are_said(short_drive, package, tmp_path):
    """A driver that never sets header.stamp (all 0): 19 of 20 frames rejected stamp_duplicate, no word why."""
    zero = tmp_path / "zero.mcap"
    _restamped(short_drive, zero, lambda m, t: 0 if m in ("camera", "radar") else t)
    s = replay(zero, package).summary
    dup = s["reasons"]["rejected"]["camera:stamp_duplicate"]
    assert dup > s["frames"] // 2
    warnings = _clock_warnings(s)
    camera = [w for w in warnings if w.startswith(f"{s['frames']} of {s['frames']} camera messages")]
    assert len(camera) == 1 and "header stamp 0: the driver does not set header stamps" in camera[0], warnings
    assert f"({dup} rejected as stamp_duplicate)" in camera[0]
    assert any(w.split(" messages")[0].endswith("radar") for w in warnings), warnings
    assert not any("another clock" in w for w in warnings), warnings  # the zeros are the cause, said once


def test_skipped_messages_are_said_by_topic_and_reason_not_called_damage():
    """Every convert-time refusal was "N damaged records or messages were skipped (see log.issue_list)",
    a list only --json has: a depth camera, h264 or a rotated map read as a damaged bag."""
    from types import SimpleNamespace

    from fusion_rt.logs.reader import ReadIssue
    from fusion_rt.replay import _log_block

    def decode(topic, error, reason, t=1):
        return ReadIssue(10 + t, "decode", f"sensor_msgs/msg/Image message on {topic!r} at log time {t}: "
                                           f"{error}: {reason}")

    depth = "Image encoding '16UC1' is not supported; expected one of ('mono8', 'rgb8', 'bgr8', 'rgba8', 'bgra8')"
    issues = [decode("/depth", "UnsupportedMessageError", depth, t) for t in range(4)]
    issues += [decode("/cam", "DecodeError", "Image 2x1 rgb8 with step 6 needs 6 bytes, has 4")]
    issues += [ReadIssue(99, "chunk_crc", "chunk CRC is 0x1, the chunk says 0x2")] * 2
    issues += [ReadIssue(0, "decode", "db3bag_0.db3: nav_msgs/msg/OccupancyGrid on '/map' at log time 5: "
                                      "UnsupportedMessageError: OccupancyGrid origin is rotated (quaternion 0, 0, "
                                      "0.38, 0.92); only axis-aligned maps are supported")]
    source = SimpleNamespace(issues=issues, truncated_at=None, path="x.mcap")
    reader = SimpleNamespace(source=source, topic_map=SimpleNamespace(topics={}, how={}), issues=[],
                             foreign_radar_frames=set())
    block, warnings = _log_block(reader, None, None)
    assert block["issues"] == 8
    assert warnings == [
        f"4 messages on '/depth' skipped as unsupported (valid, in a form fusion-rt does not read): {depth}",
        "1 message on '/cam' skipped, they do not decode: DecodeError: Image 2x1 rgb8 with step 6 needs 6 bytes, "
        "has 4",
        "2 damaged records skipped (chunk_crc), the first: chunk CRC is 0x1, the chunk says 0x2",
        "1 message on '/map' skipped as unsupported (valid, in a form fusion-rt does not read): OccupancyGrid origin "
        "is rotated (quaternion 0, 0, 0.38, 0.92); only axis-aligned maps are supported",
    ]
    many = [decode(f"/t{i}", "UnsupportedMessageError", "x" * 500) for i in range(8)]
    _, warnings = _log_block(SimpleNamespace(source=SimpleNamespace(issues=many, truncated_at=None, path="x"),
                                             topic_map=reader.topic_map, issues=[], foreign_radar_frames=set()),
                                 None, None)
    assert len(warnings) == 6 and all(len(w) < 400 for w in warnings), warnings
    assert warnings[-1].startswith("3 more records or messages skipped, on 3 more topics or reasons")


def _truth_and_output(stamp: int):
    from fusion_rt.messages import GroundTruth
    from fusion_rt.runtime import FusionOutput

    gt = GroundTruth(stamp_ns=stamp, labels={"car": 1}, agents=(), bev=np.ones((1, 2, 2), np.uint8),
                     bev_classes=("car",), scene_type="urban", condition="day", ego_speed_mps=0.0, extras={})
    out = FusionOutput(stamp_ns=stamp, status="ok", flags=(), scene={"car": 0.9},
                       bev=np.ones((1, 2, 2), np.float32), modality_share={}, modality_share_matrix=None, sources={})
    return gt, out


def test_outputs_after_the_last_ground_truth_are_not_held_to_the_end():
    """A drive labelled for its first 2 s: every later output waited for ground truth to the end of
    the replay (~16 KB each; an hour at 20 Hz, over 1 GB). Once ground truth stops for 10 s of log,
    older outputs are let go, and ground truth that comes for one later is counted in a warning."""
    from fusion_rt.replay import _OUTPUT_HOLD_NS, _late_truth_warnings, _Metrics

    metrics = _Metrics(("car",), ("car",))
    expired: list[int] = []
    metrics.on_expire = expired.append
    period, start, peak = 50_000_000, 10**12, 0
    for i in range(600):  # 30 s at 20 Hz
        gt, out = _truth_and_output(start + i * period)
        metrics.output(out)
        if i < 40:
            metrics.truth(gt)
        peak = max(peak, len(metrics._outputs))
    assert len(metrics.rows) == 40 and peak <= _OUTPUT_HOLD_NS // period + 3, peak
    assert len(expired) == 600 - 40 - len(metrics._outputs) and _late_truth_warnings(metrics) == []
    metrics.no_output(start + 100 * period + 7)  # a rejected frame among those let go: its truth is no output's
    metrics.truth(_truth_and_output(start + 100 * period + 7)[0])
    for i in (100, 101):  # outputs let go 25 s ago
        metrics.truth(_truth_and_output(start + i * period)[0])
    assert not metrics._truth and not metrics._no_output and len(metrics.rows) == 40
    (warning,) = _late_truth_warnings(metrics)
    assert warning.startswith("2 ground truth messages came after 10 s of log without any")

    # ground truth that keeps coming, however far behind its frames (12 s here), stops nothing
    metrics = _Metrics(("car",), ("car",))
    for i in range(600):
        metrics.output(_truth_and_output(start + i * period)[1])
        if i >= 240:
            metrics.truth(_truth_and_output(start + (i - 240) * period)[0])
    assert len(metrics.rows) == 360 and _late_truth_warnings(metrics) == []


@pytest.mark.parametrize("offset_ns", [-10**12, 10_000_000])
def test_ground_truth_on_another_clock_is_said_and_not_held(offset_ns):
    """Ground truth stamped on another clock (from 0), or 10 ms after its frame, matches no frame:
    each one kept outputs waiting as if labels were coming, and stayed in memory itself, to the end
    of the replay. They are dropped once their frame has passed, counted, and said."""
    from fusion_rt.replay import _OUTPUT_HOLD_NS, _late_truth_warnings, _Metrics

    metrics = _Metrics(("car",), ("car",))
    period, start, peak = 50_000_000, 10**12, {"outputs": 0, "truth": 0}
    for i in range(600):
        gt, out = _truth_and_output(start + i * period)
        metrics.output(out)
        metrics.truth(_truth_and_output(gt.stamp_ns + offset_ns)[0])
        peak["outputs"] = max(peak["outputs"], len(metrics._outputs))
        peak["truth"] = max(peak["truth"], len(metrics._truth))
    assert not metrics.rows and peak["outputs"] <= _OUTPUT_HOLD_NS // period + 3 and peak["truth"] <= 25, peak
    (warning,) = [w for w in _late_truth_warnings(metrics) if "matched no camera frame" in w]
    assert int(warning.split()[0]) >= 500, warning


@pytest.mark.parametrize("wrong", ["truth", "both"])
def test_one_ground_truth_with_a_wrong_stamp_does_not_end_the_scoring(wrong):
    # One ground truth stamped 100 s ahead (a labelling glitch, another clock) moved the point past
    # which outputs are let go unscored: every later frame was (2 of 60 scored), and the good ground
    # truth after it was said to be late. With the frame's camera stamp wrong too, the same.
    import dataclasses

    from fusion_rt.replay import _late_truth_warnings, _Metrics

    metrics = _Metrics(("car",), ("car",))
    expired = []
    metrics.on_expire = expired.append
    period, bad = 50_000_000, 2
    for i in range(60):
        gt, out = _truth_and_output(10**12 + i * period)
        if i == bad:
            gt = dataclasses.replace(gt, stamp_ns=gt.stamp_ns + 100 * 10**9)
            if wrong == "both":
                out = dataclasses.replace(out, stamp_ns=gt.stamp_ns)
        metrics.output(out)  # a frame's output comes before its ground truth in a log
        metrics.truth(gt)
    assert len(metrics.rows) == (59 if wrong == "truth" else 60)
    assert _late_truth_warnings(metrics) == []
    assert expired == ([10**12 + bad * period] if wrong == "truth" else [])
    assert len(metrics._outputs) <= 1 and not metrics._truth.keys() - {10**12 + bad * period + 100 * 10**9}


def test_replay_says_why_the_runtime_rejected_a_map(short_drive, package, tmp_path):
    # A ROS map (an OccupancyGrid in odom) is refused by the runtime per message, counted map:malformed:
    # replay and compare said nothing of why (every output degraded map_missing, the reason nowhere).
    import dataclasses

    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.messages import MapRaster

    log = tmp_path / "map_odom.mcap"
    with LogReader(short_drive) as reader, LogWriter(log) as writer:
        for m in reader.messages():
            msg = dataclasses.replace(m.message, frame_id="odom") if isinstance(m.message, MapRaster) else m.message
            writer.write(msg, m.topic, log_time_ns=m.log_time_ns)
    s = replay(log, package).summary
    n = s["reasons"]["rejected"]["map:malformed"]
    said = [w for w in s["warnings"] if "rejected by the runtime" in w]
    assert n > 0 and said == [f"{n} map message{'s' * (n > 1)} rejected by the runtime (map:malformed), the last: "
                              f"map raster in frame 'odom' (a world-fixed frame): the map input is a class map of "
                              f"MAP_CODES in the ego frame (base_link); a map in another frame (a ROS occupancy map "
                              f"or costmap) needs the ego pose at its stamp, which is not applied"], s["warnings"]
    c = compare(log, package, package).summary
    assert [w for w in c["warnings"] if "rejected by the runtime" in w] == said, c["warnings"]  # once, not per side
    assert not [w for w in replay(short_drive, package).summary["warnings"] if "rejected by the runtime" in w]


def test_replay_says_why_the_runtime_rejected_camera_frames(package, tmp_path):
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    log = tmp_path / "tall.mcap"
    record_drive(DriveConfig(seconds=0.5, seed=5, camera_size=(640, 480)), log)
    s = replay(log, package).summary
    (said,) = [w for w in s["warnings"] if "rejected by the runtime" in w]
    head = f"{s['frames']} camera messages rejected by the runtime (camera:wrong_size), the last: "
    assert said.startswith(head), said


def test_an_order_issue_is_said_as_such_not_as_skipped():
    """A wrong chunk start time lets a message out of log-time order (the reader's `order` issue): nothing
    was skipped, so replay says what happened instead of counting it as a skipped record."""
    from types import SimpleNamespace

    from fusion_rt.logs.reader import ReadIssue
    from fusion_rt.replay import _log_block

    issue = ReadIssue(70, "order", "a message at log time 5 comes after one at 9: a start time a record states "
                                   "(not covered by any CRC) is wrong")
    reader = SimpleNamespace(source=SimpleNamespace(issues=[issue], truncated_at=None, path="x.mcap"),
                             topic_map=SimpleNamespace(topics={}, how={}), issues=[], foreign_radar_frames=set())
    _, warnings = _log_block(reader, None, None)
    assert warnings == [f"messages came out of log-time order: {issue.detail}"]


def test_compare_bins_radar_detections_with_each_sides_settings(short_drive, package, tmp_path):
    """A log with radar as detections only: compare binned them once, with A's radar and
    normalization, and fed B that tensor, so B with its own radar scale was reported divergent
    where separate replays of the two agree exactly. B bins its own."""
    from fusion_rt.messages import RadarTensor

    from .conftest import copy_log

    dets = copy_log(short_drive, tmp_path / "dets.mcap", lambda m: not isinstance(m.message, RadarTensor))
    scaled = tmp_path / "scaled"
    shutil.copytree(package, scaled)
    manifest = json.loads((scaled / "manifest.json").read_text())
    manifest["preprocess"]["radar_power_db_scale"] = manifest["preprocess"]["radar_power_db_scale"] / 2
    (scaled / "manifest.json").write_text(json.dumps(manifest))
    alone = [replay(dets, p, ReplayConfig(out=None)).summary for p in (package, scaled)]
    assert alone[0]["outputs"] > 0 and alone[0]["degraded"] == alone[1]["degraded"]
    c = compare(dets, package, scaled).summary
    assert c["frames_compared"] == alone[0]["outputs"] and c["status_agreement"] == 1.0
    assert c["divergence"]["scene"]["max_abs"] == 0.0 and c["divergence"]["bev"]["max_abs"] == 0.0, c["divergence"]
    assert c["worst_frames"] == []  # identical outputs: no frame is the worst


def test_report_draws_no_zero_bar_for_an_unmeasured_auc():
    """A condition whose frames all carry one class of every label has no AUC (None, '-' in the
    table): its bar was drawn as 0.000, a model failing outright."""
    from fusion_rt.report import _metrics_section

    block = {"frames": 10, "scene_auc": {"car": None}, "scene_f1": {"car": 0.5}, "mean_scene_auc": None,
             "mean_scene_f1": 0.5, "mean_bev_iou": None}
    html = _metrics_section({"overall": {**block, "scene_auc": {"car": 0.7}, "mean_scene_auc": 0.7},
                             "per_condition": {"day": block}})
    assert "n/a (no label with both classes)" in html and ">0.000<" not in html and ">0.700<" in html



def test_worst_frames_tied_on_score_and_stamp():
    """Two split files covering the same time give the runtime each stamp twice (after the clock jump
    back), and two worst-frame candidates may tie on score, stamp and reason: the replay used to end
    in a TypeError from heapq comparing their camera frames."""
    from fusion_rt.replay import FrameRecord, _Worst

    worst = _Worst(2)
    for i in range(3):  # the same stamp from each split file: other bytes, other outputs
        frame = CameraFrame(stamp_ns=5, data=bytes([i]), encoding="jpeg")
        worst.offer(0.5, 5, "scene error", frame, FrameRecord(stamp_ns=5, status="ok", scene=(0.1 * i,)))
    worst.offer(0.7, 6, "scene error", frame, FrameRecord(stamp_ns=6, status="ok", scene=(0.3,)))
    assert sorted(score for score, *_ in worst._heap) == [0.5, 0.7]
