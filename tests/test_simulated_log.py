"""A simulated drive as a log: what `fusion-rt simulate` writes is a real, standard MCAP file."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from fusion_rt.logs import DEFAULT_TOPICS, LogDataset, LogReader, log_info
from fusion_rt.messages import CameraFrame, GroundTruth, RadarDetections, RadarTensor
from fusion_rt.rig import Rig
from fusion_rt.sim import DriveConfig
from fusion_rt.sim.record import record_drive

EXPECTED_TYPES = {
    "/camera/front/image/compressed": "sensor_msgs/msg/CompressedImage",
    "/camera/front/camera_info": "sensor_msgs/msg/CameraInfo",
    "/radar/front/tensor": "fusion_rt_msgs/msg/RadarTensor",
    "/radar/front/detections": "sensor_msgs/msg/PointCloud2",
    "/map/local": "nav_msgs/msg/OccupancyGrid",
    "/context/text": "std_msgs/msg/String",
    "/ground_truth": "fusion_rt_msgs/msg/GroundTruth",
}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    paths = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        paths[name] = tmp_path / f"{name}.mcap"
        record_drive(DriveConfig(seconds=1.5, seed=seed, conditions="mixed"), paths[name])
    assert _sha(paths["a"]) == _sha(paths["b"])
    assert _sha(paths["a"]) != _sha(paths["c"])


def test_official_reader_decodes_documented_types(short_drive):
    seen: dict[str, str] = {}
    with open(short_drive, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, _message, decoded in reader.iter_decoded_messages():
            seen.setdefault(channel.topic, schema.name)
            if schema.name == "sensor_msgs/msg/CompressedImage":
                assert decoded.format == "jpeg"
                stamp = decoded.header.stamp
                assert _message.log_time == stamp.sec * 1_000_000_000 + stamp.nanosec
            if schema.name == "sensor_msgs/msg/PointCloud2":
                assert [f.name for f in decoded.fields] == ["x", "y", "z", "radial_velocity", "rcs"]
    assert seen == EXPECTED_TYPES
    assert set(EXPECTED_TYPES) == set(DEFAULT_TOPICS.values())


def test_log_carries_rig_and_config(short_drive):
    with LogReader(short_drive) as reader:
        meta = reader.read_metadata()
    rig = Rig.from_dict(json.loads(meta["fusion_rt.rig"]["json"]))
    assert rig == DriveConfig(seconds=4.0, seed=3).rig()
    assert json.loads(meta["fusion_rt.sim"]["seed"]) == 3


def test_images_decode_to_the_configured_size(tmp_path):
    path = tmp_path / "hd.mcap"
    record_drive(DriveConfig(seconds=0.5, seed=4, camera_size=(1280, 720)), path)
    with LogReader(path) as reader:
        frames = [m.message for m in reader.messages(topics=[DEFAULT_TOPICS[CameraFrame]])]
    assert len(frames) >= 9
    for frame in frames:
        image = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (720, 1280, 3)


def test_rates_and_jitter(short_drive):
    info = log_info(short_drive)
    topics = info["topics"]
    rates = {t: topics[t]["rate_hz"] for t in topics}
    assert rates["/camera/front/image/compressed"] == pytest.approx(20.0, rel=0.05)
    assert rates["/radar/front/tensor"] == pytest.approx(20.0, rel=0.1)
    with LogReader(short_drive) as reader:
        stamps: dict[type, list[int]] = {}
        for item in reader.messages():
            stamps.setdefault(type(item.message), []).append(item.message.stamp_ns)
    cam = np.diff(stamps[CameraFrame])
    radar = np.diff(stamps[RadarTensor])
    assert (cam > 0).all() and (radar > 0).all()
    assert cam.std() > 0 and radar.std() > 0  # jittered, not a perfect clock
    assert np.abs(cam - np.median(cam)).max() < 5_000_000  # jitter stays within a few ms
    # not in lockstep: camera and radar stamps do not coincide
    assert not set(stamps[CameraFrame]) & set(stamps[RadarTensor])
    # ground truth exists for every camera frame, with the same stamp
    assert stamps[GroundTruth] == stamps[CameraFrame]
    assert all(isinstance(s, int) for s in stamps[CameraFrame])


def test_dataset_samples_from_simulated_log(short_drive):
    samples = list(LogDataset([short_drive]))
    assert len(samples) >= 75
    with_radar = [s for s in samples if s.radar_tensor is not None]
    assert len(with_radar) >= 0.95 * len(samples)
    for s in with_radar:
        assert 0 <= s.ages_ns["radar_tensor"] <= 100_000_000
        assert s.radar_tensor.data.shape == (2, 128, 64)
    assert all(s.ground_truth is not None and s.labels is not None for s in samples)
    assert all(s.text is not None for s in samples[30:])
    assert isinstance(samples[0].radar_detections, (RadarDetections, type(None)))
