"""Sensor messages and ground truth: plain dataclasses stamped in integer nanoseconds.

These are what the simulator produces, what logs decode to, and what the runtime consumes. They
carry numpy arrays and bytes, never framework tensors. Each sensor message names its `modality`.
How each maps to a ROS 2 message on disk is documented in `fusion_rt.logs.schemas`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = [
    "CameraFrame",
    "CameraInfo",
    "RadarTensor",
    "RadarDetections",
    "MapRaster",
    "TextContext",
    "Agent",
    "GroundTruth",
    "SensorMessage",
    "Message",
    "MODALITIES",
    "MAP_CODES",
    "DETECTION_FIELDS",
]

#: The four input modalities, in the canonical order used by models and manifests.
MODALITIES: tuple[str, ...] = ("camera", "radar", "map", "text")

#: Cell values of a map raster (an OccupancyGrid on disk: int8, 0..100, -1 unknown).
MAP_CODES: dict[str, int] = {"unknown": -1, "offroad": 0, "sidewalk": 25, "drivable": 50, "crosswalk": 80,
                             "lane_marking": 100}

#: Columns of `RadarDetections.points`, matching the PointCloud2 fields on disk.
DETECTION_FIELDS: tuple[str, ...] = ("x", "y", "z", "radial_velocity", "rcs")


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One encoded (JPEG/PNG) or raw camera image.

    `encoding` is "jpeg" or "png" for compressed data, or a raw ROS encoding ("bgr8", "rgb8",
    "mono8") with `width`/`height` set.
    """

    modality: ClassVar[str] = "camera"
    stamp_ns: int
    data: bytes
    encoding: str = "jpeg"
    frame_id: str = "camera_front"
    width: int = 0  # known for raw images; 0 when only the compressed stream knows it
    height: int = 0


@dataclass(frozen=True, eq=False)
class CameraInfo:
    """Calibration of a camera at a time: intrinsics matrix K (3x3) and image size."""

    modality: ClassVar[str] = "camera_info"
    stamp_ns: int
    width: int
    height: int
    k: np.ndarray  # [3, 3] float64
    frame_id: str = "camera_front"


@dataclass(frozen=True, eq=False)
class RadarTensor:
    """A range-azimuth radar tensor: `data` is [channels, range_bins, azimuth_bins] float32.

    Channels are named in `channels` (the simulator writes "power_db" and "radial_velocity_mps").
    Range bins cover [range_min_m, range_max_m]; azimuth bins cover [azimuth_min_rad,
    azimuth_max_rad], index 0 being the most negative (rightmost) azimuth.
    """

    modality: ClassVar[str] = "radar"
    stamp_ns: int
    data: np.ndarray
    channels: tuple[str, ...]
    range_min_m: float
    range_max_m: float
    azimuth_min_rad: float
    azimuth_max_rad: float
    frame_id: str = "radar_front"


@dataclass(frozen=True, eq=False)
class RadarDetections:
    """A radar detection list: `points` is [N, 5] float32 with columns `DETECTION_FIELDS`
    (x, y, z in the radar frame in metres, radial velocity in m/s (positive = moving away), RCS in dBsm).

    `velocity`, [N, 2] float32 (vx, vy in m/s in `frame_id`), is set where the source gave velocity
    components instead of a radial velocity (a PointCloud2 with vx/vy): the radial velocity in
    `points` is then taken from `frame_id`'s origin, and `fusion_rt.preprocess.detections_to_tensor`
    takes it from the radar's own position when `frame_id` is the ego frame.
    """

    modality: ClassVar[str] = "radar_detections"
    stamp_ns: int
    points: np.ndarray
    frame_id: str = "radar_front"
    velocity: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class MapRaster:
    """A bird's-eye map raster around the ego, in the ego frame at `stamp_ns`.

    `grid` is [rows, cols] int8 holding `MAP_CODES`; row 0 is the far edge (x_max), column 0 the
    left edge (y_max), as in `fusion_rt.rig.BevGrid`. `x_max_m`/`y_max_m` anchor that corner.
    """

    modality: ClassVar[str] = "map"
    stamp_ns: int
    grid: np.ndarray
    cell_m: float
    x_max_m: float
    y_max_m: float
    frame_id: str = "base_link"


@dataclass(frozen=True, eq=False)
class TextContext:
    """Scene context as text, e.g. "school zone, rain, 30 km/h"."""

    modality: ClassVar[str] = "text"
    stamp_ns: int
    text: str


@dataclass(frozen=True)
class Agent:
    """One road user in the ego frame at a ground-truth stamp."""

    id: int
    class_name: str
    x: float
    y: float
    z: float
    vx: float  # velocity over ground, ego frame axes, m/s
    vy: float
    length: float
    width: float
    height: float
    yaw: float  # heading relative to the ego's x axis, radians
    visible_camera: bool  # a meaningful part is in the image and not hidden (or too dark/foggy to see)
    visible_radar: bool  # inside the radar's field of view and detected at least once in this frame


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What a model should predict for the camera frame with the same `stamp_ns`.

    `labels` maps scene-label names ("car", "truck", "pedestrian", "cyclist": class present in
    the zone ahead, 0 < x <= 30 m and |y| <= 12 m; "hazard": a vulnerable road user in or within
    1.5 m of the drivable area 0 < x <= 25 m ahead) to 0/1.
    `bev` is [classes, rows, cols] uint8 occupancy on the rig's BEV grid, classes in
    `bev_classes` order.
    """

    modality: ClassVar[str] = "ground_truth"
    stamp_ns: int
    labels: dict[str, int]
    agents: tuple[Agent, ...]
    bev: np.ndarray
    bev_classes: tuple[str, ...]
    scene_type: str
    condition: str
    ego_speed_mps: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)


SensorMessage = CameraFrame | CameraInfo | RadarTensor | RadarDetections | MapRaster | TextContext
Message = SensorMessage | GroundTruth
