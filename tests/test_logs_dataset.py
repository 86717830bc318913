"""`LogDataset`: camera-triggered samples take the latest message within each stream's max age."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from fusion_rt.errors import ConfigError
from fusion_rt.logs import LogDataset, LogWriter
from fusion_rt.messages import (
    CameraFrame,
    CameraInfo,
    GroundTruth,
    MapRaster,
    RadarDetections,
    RadarTensor,
    TextContext,
)

MS = 1_000_000


def _tensor(t: int) -> RadarTensor:
    return RadarTensor(stamp_ns=t, data=np.full((1, 2, 2), t % 1000, np.float32), channels=("p",), range_min_m=0.5,
                       range_max_m=10.0, azimuth_min_rad=-1.0, azimuth_max_rad=1.0)


def _truth(t: int) -> GroundTruth:
    return GroundTruth(stamp_ns=t, labels={"car": t // MS % 2}, agents=(), bev=np.zeros((1, 2, 2), np.uint8),
                       bev_classes=("car",), scene_type="urban", condition="clear")


def _make(kind: str, t: int):
    return {
        "camera": lambda: CameraFrame(stamp_ns=t, data=b"\xff\xd8" + t.to_bytes(8, "little")),
        "truth": lambda: _truth(t),
        "tensor": lambda: _tensor(t),
        "detections": lambda: RadarDetections(stamp_ns=t, points=np.full((1, 5), t % 997, np.float32)),
        "map": lambda: MapRaster(stamp_ns=t, grid=np.zeros((2, 2), np.int8), cell_m=1.0, x_max_m=2.0, y_max_m=1.0),
        "text": lambda: TextContext(stamp_ns=t, text=f"t={t}"),
        "info": lambda: CameraInfo(stamp_ns=t, width=4, height=2, k=np.eye(3)),
    }[kind]()


def _write(path: Path, events: list[tuple[int, str]]) -> None:
    with LogWriter(path, chunk_size=2048) as writer:
        for t, kind in events:
            writer.write(_make(kind, t))


def test_samples_take_the_latest_message_within_max_age(tmp_path: Path) -> None:
    events = [(0, "text"), (0, "map"), (0, "info"),
              (90 * MS, "tensor"), (95 * MS, "detections"),
              (100 * MS, "camera"), (100 * MS, "truth"),  # truth written after its frame
              (150 * MS, "tensor"),
              (200 * MS, "camera"),  # tensor 50 ms old, detections 105 ms old: too old
              (300 * MS, "tensor"), (300 * MS, "camera"),  # same stamp counts (<=)
              (3000 * MS, "camera")]  # everything stale, map and text beyond 2 s
    _write(tmp_path / "a.mcap", events)
    samples = list(LogDataset(tmp_path / "a.mcap"))
    assert [s.stamp_ns for s in samples] == [100 * MS, 200 * MS, 300 * MS, 3000 * MS]
    first, second, third, last = samples
    assert first.ages_ns == {"radar_tensor": 10 * MS, "radar_detections": 5 * MS, "map": 100 * MS,
                             "text": 100 * MS}
    assert first.radar_tensor.stamp_ns == 90 * MS and first.ground_truth.stamp_ns == 100 * MS
    assert first.labels == {"car": 0} and first.camera_info.width == 4
    assert second.radar_tensor.stamp_ns == 150 * MS and second.radar_detections is None
    assert second.ages_ns["radar_detections"] is None and second.ground_truth is None and second.labels is None
    assert third.radar_tensor.stamp_ns == 300 * MS and third.ages_ns["radar_tensor"] == 0
    assert last.radar_tensor is None and last.map is None and last.text is None
    assert last.camera_info is not None  # calibration has no age limit


def test_max_ages_are_configurable(tmp_path: Path) -> None:
    _write(tmp_path / "a.mcap", [(0, "map"), (0, "detections"), (0, "tensor"), (5000 * MS, "camera")])
    [sample] = LogDataset(tmp_path / "a.mcap", max_age_ns={"radar": None, "radar_detections": 1, "map": None})
    assert sample.map is not None and sample.radar_tensor is not None and sample.radar_detections is None
    with pytest.raises(ConfigError, match="lidar"):
        LogDataset(tmp_path / "a.mcap", max_age_ns={"lidar": 5})
    with pytest.raises(ConfigError, match="-1"):
        LogDataset(tmp_path / "a.mcap", max_age_ns={"map": -1})


def test_a_camera_topic_the_log_lacks_is_named(tmp_path: Path) -> None:
    from fusion_rt.logs.topics import UnknownTopicError

    _write(tmp_path / "a.mcap", [(0, "map"), (10 * MS, "camera")])
    with pytest.raises(UnknownTopicError, match="'/camera/rear/image/compressed'.*/camera/front/image/compressed"):
        list(LogDataset(tmp_path / "a.mcap", camera_topic="/camera/rear/image/compressed"))
    assert len(list(LogDataset(tmp_path / "a.mcap", camera_topic="/camera/front/image/compressed"))) == 1


def test_topics_are_resolved_per_log_as_replay_resolves_them(tmp_path: Path) -> None:
    """Two cameras (no simulator topic): refused as ambiguous instead of mixed into one stream;
    topics={"camera": ...} picks one, and radar/camera info follow the topics they belong to."""
    from fusion_rt.logs.dataset import dataset_topics
    from fusion_rt.logs.topics import AmbiguousTopicError

    path = tmp_path / "two.mcap"
    with LogWriter(path, chunk_size=2048) as writer:
        for k in range(4):
            t = (k + 1) * 100 * MS
            writer.write(_make("camera", t), topic="/cam/left/image/compressed")
            writer.write(_make("camera", t + 10 * MS), topic="/cam/right/image/compressed")
            writer.write(_make("info", t), topic="/cam/left/camera_info")
            writer.write(CameraInfo(stamp_ns=t, width=8, height=4, k=np.eye(3)), topic="/cam/right/camera_info")
            writer.write(_make("tensor", t - 5 * MS), topic="/radar/tensor")
    with pytest.raises(AmbiguousTopicError, match=r"two.mcap.*2 topics could be the camera.*--topics camera="):
        list(LogDataset(path))
    right = list(LogDataset(path, topics={"camera": "/cam/right/image/compressed"}))
    assert [s.stamp_ns for s in right] == [(k + 1) * 100 * MS + 10 * MS for k in range(4)]
    assert all(s.camera_info.width == 8 and s.radar_tensor is not None for s in right)
    with LogWriter(tmp_path / "sim.mcap", chunk_size=2048) as writer:  # the simulator's default topics
        for kind in ("camera", "tensor", "detections", "info", "truth", "map", "text"):
            writer.write(_make(kind, 10 * MS))
    from fusion_rt.logs.bags import open_log

    with open_log(tmp_path / "sim.mcap") as log:
        routes = dataset_topics(log.topics())
    assert routes == {"camera": "/camera/front/image/compressed", "ground_truth": "/ground_truth",
                      "radar_tensor": "/radar/front/tensor", "radar_detections": "/radar/front/detections",
                      "map": "/map/local", "text": "/context/text", "camera_info": "/camera/front/camera_info"}
    with open_log(tmp_path / "sim.mcap") as log:  # radar pinned to the detections: no tensor stream
        routes = dataset_topics(log.topics(), {"radar": "/radar/front/detections"})
    assert "radar_tensor" not in routes and routes["radar_detections"] == "/radar/front/detections"


def _brute_force(events: list[tuple[int, str]], max_age: dict[str, int]) -> list[tuple]:
    out = []
    for t, _ in sorted(e for e in events if e[1] == "camera"):
        row = [t, t in {s for s, k in events if k == "truth"}]
        for kind2, limit in (("tensor", max_age["radar"]), ("detections", max_age["radar"]), ("map", max_age["map"]),
                             ("text", max_age["text"])):
            older = [s for s, k in events if k == kind2 and s <= t]
            latest = max(older) if older else None
            row.append(latest if latest is not None and t - latest <= limit else None)
        out.append(tuple(row))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_shuffled_ties(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    events = []
    for kind, period, jitter in (("camera", 100, 0), ("tensor", 77, 20), ("detections", 77, 20), ("map", 900, 0),
                                 ("text", 1700, 0)):
        t = rng.randrange(0, period)
        while t < 6000:
            events.append((t * MS, kind))
            if kind == "camera" and rng.random() < 0.7:
                events.append((t * MS, "truth"))
            t += period + rng.randrange(-jitter, jitter + 1) + (rng.choice([0, 0, 0, 400]) if kind != "camera" else 0)
    rng.shuffle(events)
    events.sort(key=lambda e: e[0])  # stamp order, ties in random order
    _write(tmp_path / "a.mcap", events)
    max_age = {"radar": 100 * MS, "map": 2000 * MS, "text": 2000 * MS}
    dataset = LogDataset([tmp_path / "a.mcap"], max_age_ns=max_age)
    got = [(s.stamp_ns, s.ground_truth is not None,
            *(None if m is None else m.stamp_ns for m in (s.radar_tensor, s.radar_detections, s.map, s.text)))
           for s in dataset]
    assert got == _brute_force(events, max_age)
    assert dataset.issues == {str(tmp_path / "a.mcap"): []}
    again = [(s.stamp_ns, s.ages_ns) for s in dataset]  # deterministic, re-iterable
    assert again == [(s.stamp_ns, s.ages_ns) for s in dataset]


def test_several_logs_are_matched_separately(tmp_path: Path) -> None:
    _write(tmp_path / "a.mcap", [(0, "tensor"), (10 * MS, "camera")])
    _write(tmp_path / "b.mcap", [(20 * MS, "camera")])
    samples = list(LogDataset([tmp_path / "a.mcap", tmp_path / "b.mcap"]))
    assert [(Path(s.source).name, s.radar_tensor is not None) for s in samples] == [("a.mcap", True),
                                                                                     ("b.mcap", False)]


def test_a_camera_frame_recorded_late_still_finds_the_radar_stamped_before_it(tmp_path):
    # A vehicle log's file order is receive order: radar scans every 50 ms arrive 5 ms after their
    # stamp, camera frames (stamped 10 ms after each scan) 60 ms after theirs, so the next scan is
    # read before the frame. The history was pruned to the newest stamp read, and 9 of 10 frames
    # came out with no radar (and no word), though the scan 10 ms before each was in the log.
    ms, t0 = 10**6, 1_700_000_000 * 10**9
    events = []
    for k in range(10):
        radar, camera = t0 + k * 50 * ms, t0 + k * 50 * ms + 10 * ms
        events += [(radar + 5 * ms, _tensor(radar)), (camera + 1 * ms, _truth(camera)),
                   (camera + 60 * ms, CameraFrame(stamp_ns=camera, data=b"\xff\xd8\xff\xd9"))]
    with LogWriter(tmp_path / "late.mcap") as writer:
        for received, message in sorted(events, key=lambda e: e[0]):
            writer.write(message, log_time_ns=received)
    samples = list(LogDataset(tmp_path / "late.mcap"))
    assert [s.ages_ns["radar_tensor"] for s in samples] == [10 * ms] * 10
    assert [s.labels for s in samples] == [_truth(s.stamp_ns).labels for s in samples]
    assert all(s.ground_truth is not None for s in samples)
