"""The drive scheduler: `DriveConfig` and `simulate_drive`, a generator of stamped messages.

Sensors are not in lockstep. Each has a nominal period, its own phase and a small Gaussian
jitter, clipped; stamps are `int` nanoseconds from `EPOCH_NS` plus a seeded drive offset:

=============  ========  ====================================  ===============  ========
stream         period    phase (within one period)             jitter sigma     clip
=============  ========  ====================================  ===============  ========
camera         50 ms     seeded, uniform in [0, 50) ms          0.5 ms           1.5 ms
radar          50 ms     camera phase + uniform [12, 38] ms      0.8 ms           2.0 ms
map            1000 ms   seeded, uniform in [0, 1000) ms         1.0 ms           3.0 ms
text           1000 ms   map phase + uniform [100, 900] ms       1.0 ms           3.0 ms
=============  ========  ====================================  ===============  ========

A CameraFrame is always followed by its CameraInfo (same stamp) and its GroundTruth (same
stamp); RadarTensor and RadarDetections share a stamp. Messages come in non-decreasing stamp
order; equal stamps keep the fixed order CameraFrame, CameraInfo, RadarTensor,
RadarDetections, MapRaster, TextContext, GroundTruth. Every message renders the world at its
own stamp. All randomness comes from `numpy.random.default_rng` streams derived from
(seed, stream, frame index), so a config always yields the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from fusion_rt.errors import ConfigError
from fusion_rt.messages import CameraFrame, CameraInfo, Message, RadarDetections, RadarTensor
from fusion_rt.rig import Rig
from fusion_rt.sim.camera import CameraRenderer
from fusion_rt.sim.context import map_raster, scene_text
from fusion_rt.sim.radar import RadarFrame, RadarSimulator
from fusion_rt.sim.truth import build_ground_truth, radar_visible
from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES, World, WorldState

__all__ = ["DriveConfig", "simulate_drive", "SIM_VERSION", "EPOCH_NS", "STREAMS", "StreamTiming", "drive_stamps"]

#: Bump whenever the simulator's output changes meaning (labels, rendering, timing), so caches of
#: simulated logs (training data) are never reused across versions. 2: labels look at the zone ahead.
SIM_VERSION = 2
EPOCH_NS = 1_700_000_000 * 1_000_000_000  # a fixed wall-clock-like origin (Nov 2023), never the real clock
_MAX_SECONDS = 3600.0  # the route and agent population grow with the drive; split longer drives by seed
_MS = 1_000_000


@dataclass(frozen=True)
class StreamTiming:
    """Nominal period, jitter sigma and clip of one sensor stream, in nanoseconds."""

    period_ns: int
    jitter_sigma_ns: int
    jitter_clip_ns: int


STREAMS: dict[str, StreamTiming] = {
    "camera": StreamTiming(50 * _MS, _MS // 2, 3 * _MS // 2),
    "radar": StreamTiming(50 * _MS, 4 * _MS // 5, 2 * _MS),
    "map": StreamTiming(1000 * _MS, _MS, 3 * _MS),
    "text": StreamTiming(1000 * _MS, _MS, 3 * _MS),
}
_STREAM_IDS = {"camera": 1, "radar": 2, "map": 3, "text": 4}
# Tie order at equal stamps.
_RANK = {"camera": 0, "radar": 2, "map": 4, "text": 5}


@dataclass(frozen=True)
class DriveConfig:
    """What to simulate. Validated on construction; bad values raise `ConfigError`."""

    seconds: float = 60.0  # drive length; 60 s ~ 1200 camera + 1200 radar frames
    seed: int = 0  # everything random derives from it; same seed, same bytes
    conditions: str = "mixed"  # one of CONDITIONS for the whole drive, or "mixed": a new one every 10-20 s
    camera_size: tuple[int, int] = (640, 360)  # (width, height) in pixels
    scene_type: str | None = None  # None: the drive passes through several scene types; or one of SCENE_TYPES
    jpeg_quality: int = 85  # cv2.IMWRITE_JPEG_QUALITY; 85 keeps lane markings crisp at ~25 KB a frame

    def __post_init__(self) -> None:
        s = self.seconds
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(min(s, _MAX_SECONDS + 1.0)) \
                or s <= 0:
            raise ConfigError(f"seconds must be a positive finite number, got {s!r}")
        if s < 0.05:  # shorter than one camera period: an empty log that every later command refuses
            raise ConfigError(f"seconds must be at least 0.05 (one camera frame), got {s!r}")
        if s > _MAX_SECONDS:
            raise ConfigError(f"seconds must be at most {_MAX_SECONDS:g}, got {s!r}: split longer drives by seed")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.conditions not in CONDITIONS + ("mixed",):
            raise ConfigError(f"conditions must be one of {CONDITIONS + ('mixed',)}, got {self.conditions!r}")
        if self.scene_type is not None and self.scene_type not in SCENE_TYPES:
            raise ConfigError(f"scene_type must be None or one of {SCENE_TYPES}, got {self.scene_type!r}")
        size = self.camera_size
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)):
            raise ConfigError(f"camera_size must be (width, height) integers, got {size!r}")
        w, h = int(size[0]), int(size[1])
        if not (64 <= w <= 3840 and 64 <= h <= 2160):
            raise ConfigError(f"camera_size must be within 64x64 .. 3840x2160, got {w}x{h}")
        q = self.jpeg_quality
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 1 <= q <= 100:
            raise ConfigError(f"jpeg_quality must be an integer in [1, 100], got {q!r}")

    def rig(self) -> Rig:
        """The sensor rig the drive is rendered with."""
        return Rig.default(camera_size=(int(self.camera_size[0]), int(self.camera_size[1])))


def drive_stamps(cfg: DriveConfig) -> tuple[int, dict[str, np.ndarray]]:
    """The drive's start stamp (t = 0) and each stream's stamps (int64 ns), all seeded."""
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0x57A]))
    t0 = EPOCH_NS + int(rng.integers(0, 1_000_000_000))
    cam = STREAMS["camera"].period_ns
    ctx = STREAMS["map"].period_ns
    phase = {"camera": int(rng.integers(0, cam))}
    phase["radar"] = (phase["camera"] + int(rng.integers(12 * _MS, 38 * _MS + 1))) % STREAMS["radar"].period_ns
    phase["map"] = int(rng.integers(0, ctx))
    phase["text"] = (phase["map"] + int(rng.integers(100 * _MS, 900 * _MS + 1))) % ctx
    horizon = int(round(cfg.seconds * 1e9))
    out = {}
    for name, timing in STREAMS.items():
        n = max(0, -(-(horizon - phase[name]) // timing.period_ns))  # nominal stamps in [0, seconds)
        jitter = np.clip(np.round(rng.normal(0.0, timing.jitter_sigma_ns, n)), -timing.jitter_clip_ns,
                         timing.jitter_clip_ns).astype(np.int64)
        # A stream whose phase is within the jitter of t0 could stamp its first message before the drive
        # starts (world time < 0, about 1% of seeds): it is held at t0. Later stamps are never moved.
        out[name] = np.maximum(t0 + phase[name] + np.arange(n, dtype=np.int64) * timing.period_ns + jitter, t0)
    return t0, out


def simulate_drive(cfg: DriveConfig) -> Iterator[Message]:
    """Yield every message of the drive in stamp order (see the module docstring)."""
    if not isinstance(cfg, DriveConfig):
        raise ConfigError(f"simulate_drive needs a DriveConfig, got {type(cfg).__name__}")
    rig = cfg.rig()
    world = World(cfg.seconds, int(cfg.seed), cfg.conditions, cfg.scene_type)
    camera = CameraRenderer(rig, world, int(cfg.seed))
    radar = RadarSimulator(rig, world)
    t0, stamps = drive_stamps(cfg)
    k_matrix = rig.camera.intrinsics.matrix()
    width, height = rig.camera.intrinsics.width, rig.camera.intrinsics.height
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.jpeg_quality)]

    names = list(STREAMS)
    all_stamps = np.concatenate([stamps[n] for n in names])
    all_rank = np.concatenate([np.full(len(stamps[n]), _RANK[n]) for n in names])
    all_stream = np.concatenate([np.full(len(stamps[n]), i) for i, n in enumerate(names)])
    all_index = np.concatenate([np.arange(len(stamps[n])) for n in names])
    order = np.lexsort((all_index, all_rank, all_stamps))
    radar_stamps = stamps["radar"]

    def t_of(stamp: int) -> float:
        return (stamp - t0) / 1e9

    def frame_rng(stream: str, k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([int(cfg.seed), _STREAM_IDS[stream], int(k)]))

    radar_cache: dict[int, tuple[WorldState, RadarFrame]] = {}

    def radar_frame(j: int) -> tuple[WorldState, RadarFrame]:
        if j not in radar_cache:
            st = world.state_at(t_of(int(radar_stamps[j])))
            radar_cache[j] = (st, radar.simulate(st, frame_rng("radar", j)))
            for old in [key for key in radar_cache if key < j - 2]:
                del radar_cache[old]
        return radar_cache[j]

    pending_truth = None  # yielded once every message sharing its stamp is out (tie order)
    for e in order:
        stream = names[all_stream[e]]
        k = int(all_index[e])
        stamp = int(all_stamps[e])
        if pending_truth is not None and stamp > pending_truth.stamp_ns:
            yield pending_truth
            pending_truth = None
        if stream == "camera":
            st = world.state_at(t_of(stamp))
            render = camera.render(st, frame_rng("camera", k))
            ok, buf = cv2.imencode(".jpg", render.image, encode)
            if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
                raise RuntimeError("JPEG encoding failed")
            yield CameraFrame(stamp_ns=stamp, data=buf.tobytes(), encoding="jpeg", frame_id=rig.camera.frame_id,
                              width=width, height=height)
            yield CameraInfo(stamp_ns=stamp, width=width, height=height, k=k_matrix.copy(),
                             frame_id=rig.camera.frame_id)
            # Radar visibility from the radar frame nearest in time, both taken at the radar's stamp.
            radar_vis: dict[int, bool] = {}
            if len(radar_stamps):
                j = int(np.searchsorted(radar_stamps, stamp))
                cands = [c for c in (j - 1, j) if 0 <= c < len(radar_stamps)]
                j = min(cands, key=lambda c: (abs(int(radar_stamps[c]) - stamp), c))
                st_r, frame_r = radar_frame(j)
                radar_vis = radar_visible(st_r, frame_r.points, rig)
            pending_truth = build_ground_truth(stamp, st, render, radar_vis, world.road, rig)
        elif stream == "radar":
            _, frame = radar_frame(k)
            r = rig.radar
            yield RadarTensor(stamp_ns=stamp, data=frame.tensor, channels=("power_db", "radial_velocity_mps"),
                              range_min_m=float(r.range_min_m), range_max_m=float(r.range_max_m),
                              azimuth_min_rad=-float(r.azimuth_max_rad), azimuth_max_rad=float(r.azimuth_max_rad),
                              frame_id=r.frame_id)
            yield RadarDetections(stamp_ns=stamp, points=frame.points, frame_id=r.frame_id)
        elif stream == "map":
            yield map_raster(stamp, world.state_at(t_of(stamp)), world.road, rig.map)
        else:
            yield scene_text(stamp, world.state_at(t_of(stamp)))
    if pending_truth is not None:
        yield pending_truth
