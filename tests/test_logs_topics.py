"""Topic -> modality mapping: by option, by simulator default, by schema; ambiguity lists candidates."""

from __future__ import annotations

import pytest

from fusion_rt.errors import ConfigError
from fusion_rt.logs.topics import (
    AmbiguousTopicError,
    TopicInfo,
    UnknownTopicError,
    parse_topic_option,
    resolve_topics,
)

IMG = "sensor_msgs/msg/CompressedImage"
RAW = "sensor_msgs/msg/Image"
PC2 = "sensor_msgs/msg/PointCloud2"
TENSOR = "fusion_rt_msgs/msg/RadarTensor"
GRID = "nav_msgs/msg/OccupancyGrid"
STRING = "std_msgs/msg/String"
NUSCENES = ("x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid",
            "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms")

SIM = [TopicInfo("/camera/front/image/compressed", IMG), TopicInfo("/camera/front/camera_info",
                                                                   "sensor_msgs/msg/CameraInfo"),
       TopicInfo("/radar/front/tensor", TENSOR), TopicInfo("/radar/front/detections", PC2, ("x", "y", "z",
                                                                                             "radial_velocity", "rcs")),
       TopicInfo("/map/local", GRID), TopicInfo("/context/text", STRING),
       TopicInfo("/ground_truth", "fusion_rt_msgs/msg/GroundTruth")]


def test_simulator_defaults():
    tm = resolve_topics(SIM)
    assert tm.topics == {"camera": "/camera/front/image/compressed", "radar": "/radar/front/tensor",
                         "map": "/map/local", "text": "/context/text", "ground_truth": "/ground_truth"}
    assert set(tm.how.values()) == {"default"}


def test_option_wins_over_default():
    tm = resolve_topics(SIM, option={"radar": "/radar/front/detections"})
    assert tm.topics["radar"] == "/radar/front/detections" and tm.how["radar"] == "option"
    assert tm.modality_of()["/radar/front/detections"] == "radar"


def test_schema_inference_on_foreign_names_and_lidar_is_not_radar():
    infos = [TopicInfo("/CAM_FRONT/image_raw", RAW), TopicInfo("/RADAR_FRONT", PC2, NUSCENES),
             TopicInfo("/LIDAR_TOP", PC2, ("x", "y", "z", "intensity", "ring"))]
    tm = resolve_topics(infos, ("camera", "radar", "map"))
    assert tm.topics == {"camera": "/CAM_FRONT/image_raw", "radar": "/RADAR_FRONT"}
    assert tm.how == {"camera": "schema", "radar": "schema"}


def test_ambiguity_lists_candidates():
    infos = [TopicInfo("/cam_left/compressed", IMG), TopicInfo("/cam_right/compressed", IMG)]
    with pytest.raises(AmbiguousTopicError) as info:
        resolve_topics(infos, ("camera",))
    assert "/cam_left/compressed" in str(info.value) and "/cam_right/compressed" in str(info.value)
    assert "--topics camera=" in str(info.value)
    assert resolve_topics(infos, ("camera",), {"camera": "/cam_right/compressed"}).topics["camera"] == \
        "/cam_right/compressed"


def test_option_errors_name_the_value():
    with pytest.raises(UnknownTopicError, match="/nope"):
        resolve_topics(SIM, option={"camera": "/nope"})
    with pytest.raises(UnknownTopicError, match="cannot feed camera"):
        resolve_topics(SIM, option={"camera": "/map/local"})
    with pytest.raises(UnknownTopicError, match="lidar"):
        parse_topic_option("lidar=/x")
    with pytest.raises(ConfigError, match="modality=/topic"):
        parse_topic_option("camera")
    assert parse_topic_option("camera=/a, radar=/b") == {"camera": "/a", "radar": "/b"}


def test_point_cloud_fields_are_read_from_an_mcap_log(short_drive):
    """The fields of a recorded PointCloud2 come from its first message, so a radar detection cloud
    is told apart from a lidar cloud by what it holds."""
    from fusion_rt.logs.bags import open_log

    with open_log(short_drive) as source:
        fields = {info.topic: info.point_fields for info in source.topics() if info.schema_name == PC2}
    assert fields == {"/radar/front/detections": ("x", "y", "z", "radial_velocity", "rcs")}


def test_a_bag_with_a_bad_split_closes_the_splits_it_opened(short_drive, tmp_path):
    import gc
    import shutil
    import warnings

    from fusion_rt.errors import NotALogError
    from fusion_rt.logs.bags import open_log

    bag = tmp_path / "bag"
    bag.mkdir()
    shutil.copy(short_drive, bag / "bag_0.mcap")
    (bag / "bag_1.mcap").write_bytes(b"not an mcap file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(NotALogError, match="bag_1.mcap"):
            open_log(bag)
        gc.collect()  # an unclosed file left to the garbage collector warns here
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_the_ambiguity_example_is_not_a_depth_topic_and_every_candidate_is_listed():
    infos = [TopicInfo("/camera/depth/image_rect_raw", RAW), TopicInfo("/camera/infra1/image_rect_raw", RAW),
             TopicInfo("/vehicle/front_camera/image_raw/compressed", IMG)]
    with pytest.raises(AmbiguousTopicError) as info:
        resolve_topics(infos, ("camera",))
    text = str(info.value)
    assert text.endswith("--topics camera=/vehicle/front_camera/image_raw/compressed")
    assert all(i.topic in text for i in infos)
    many = [TopicInfo(f"/cam{k:02d}/compressed", IMG) for k in range(12)]
    with pytest.raises(AmbiguousTopicError) as info:
        resolve_topics(many, ("camera",))
    assert all(i.topic in str(info.value) for i in many)  # all of them, not 8 and "4 more"
    only_depth = [TopicInfo("/camera/depth/image_rect_raw", RAW), TopicInfo("/camera/aligned_depth/image_raw", RAW)]
    with pytest.raises(AmbiguousTopicError, match="--topics camera=TOPIC$"):
        resolve_topics(only_depth, ("camera",))


def test_point_clouds_passed_over_for_radar_are_named_with_the_reason():
    infos = [TopicInfo("/cam/compressed", IMG),
             TopicInfo("/radar/polar", PC2, ("range", "azimuth", "radial_velocity", "rcs")),
             TopicInfo("/ti_mmwave/radar_scan_pcl", PC2, ("x", "y", "z", "intensity", "velocity")),
             TopicInfo("/radar/unknown", "sensor_msgs/msg/Imu")]
    tm = resolve_topics(infos, ("camera", "radar"))
    assert "radar" not in tm.topics
    assert set(tm.passed_over["radar"]) == {"/radar/polar", "/ti_mmwave/radar_scan_pcl"}
    note = tm.note("radar")
    assert note.startswith("PointCloud2 topics not taken as radar: ")
    assert "/radar/polar: no x/y fields (it has azimuth, radial_velocity, range, rcs)" in note
    assert "/ti_mmwave/radar_scan_pcl: no velocity field, one of " in note and "radial_velocity" in note
    assert tm.note("camera") is None and resolve_topics(SIM).note("radar") is None
    # a radar cloud found: nothing passed over is said, even beside a lidar
    lidar = TopicInfo("/lidar", PC2, ("x", "y", "z", "intensity"))
    assert resolve_topics([*infos, lidar, TopicInfo("/radar/points", PC2, ("x", "y", "vx"))]).note("radar") is None


def test_a_cloud_with_no_fields_seen_is_judged_by_its_schema():
    # () is what a probe of only empty, default-constructed clouds used to give: "not a radar"
    for fields in ((), None):
        tm = resolve_topics([TopicInfo("/radar/points", PC2, fields)], ("radar",))
        assert tm.topics == {"radar": "/radar/points"}
