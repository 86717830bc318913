"""Sensor rig geometry: camera intrinsics and extrinsics, radar pose and field of view, BEV grid.

Frames follow ROS REP-103: the ego (``base_link``) frame has x forward, y left, z up, origin on
the ground below the rear axle. The camera optical frame has z forward, x right, y down.
The rig is plain data (JSON round-trip through `to_dict` / `from_dict`) so that it can travel
in a model package manifest and in a log's metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from fusion_rt.errors import ConfigError

__all__ = ["Pose", "CameraIntrinsics", "Camera", "Radar", "BevGrid", "MapGrid", "Rig", "CLASS_NAMES",
           "is_finite_number", "log_bev_grid"]

#: Agent classes, in the order used by ground truth, BEV occupancy and scene labels.
CLASS_NAMES: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist")


def is_finite_number(value: object) -> bool:
    """A finite int or float (an int too large for a float, e.g. 10**400 from a JSON file, is not)."""
    try:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:
        return False


def _positive(name: str, value: float) -> None:
    if not (is_finite_number(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _finite(name: str, value: object) -> None:
    if not is_finite_number(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Pose:
    """A rigid pose in the ego frame: translation in metres, rotation as roll/pitch/yaw in radians."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    roll: float = 0.0
    pitch: float = 0.0  # positive pitch tilts the sensor's forward axis down (REP-103 y-axis rotation)
    yaw: float = 0.0

    def __post_init__(self) -> None:
        for name in ("x", "y", "z", "roll", "pitch", "yaw"):
            _finite(f"pose {name}", getattr(self, name))

    def rotation(self) -> np.ndarray:
        """3x3 rotation matrix R = Rz(yaw) @ Ry(pitch) @ Rx(roll), sensor axes expressed in ego."""
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
        return rz @ ry @ rx

    def translation(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z], dtype=np.float64)

    def to_ego(self, points: np.ndarray) -> np.ndarray:
        """Points [N, 3] in this sensor's frame -> ego frame."""
        return points @ self.rotation().T + self.translation()

    def from_ego(self, points: np.ndarray) -> np.ndarray:
        """Points [N, 3] in the ego frame -> this sensor's frame."""
        return (points - self.translation()) @ self.rotation()


# Sensor body frame (x fwd, y left, z up) -> camera optical frame (x right, y down, z fwd).
_BODY_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels for an image of `width` x `height` (no distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16 or value > 8192:
                raise ConfigError(f"camera {name} must be an integer in [16, 8192], got {value!r}")
        for name in ("fx", "fy"):
            _positive(f"camera {name}", getattr(self, name))
        for name in ("cx", "cy"):
            _finite(f"camera {name}", getattr(self, name))

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = 80.0) -> CameraIntrinsics:
        """Square pixels, principal point at the image centre, horizontal field of view `hfov_deg`."""
        if not 10.0 <= hfov_deg <= 170.0:
            raise ConfigError(f"hfov_deg must be in [10, 170], got {hfov_deg!r}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width=width, height=height, fx=f, fy=f, cx=width / 2.0, cy=height / 2.0)

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def column_azimuth(self) -> np.ndarray:
        """Azimuth (radians, positive to the left as in the ego frame) of each pixel column's centre."""
        u = np.arange(self.width, dtype=np.float64) + 0.5
        return np.arctan2(-(u - self.cx), self.fx)


@dataclass(frozen=True)
class Camera:
    intrinsics: CameraIntrinsics
    pose: Pose = field(default_factory=lambda: Pose(x=1.6, y=0.0, z=1.4, pitch=math.radians(3.0)))
    frame_id: str = "camera_front"

    def ego_to_optical(self, points_ego: np.ndarray) -> np.ndarray:
        """Points [N, 3] in ego -> camera optical frame (z is depth along the optical axis)."""
        return self.pose.from_ego(points_ego) @ _BODY_TO_OPTICAL.T

    def project(self, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project ego points [N, 3] to pixels. Returns (uv [N, 2] float64, depth [N]).

        Points behind the camera get depth <= 0 and meaningless uv; callers mask them.
        """
        pc = self.ego_to_optical(np.asarray(points_ego, dtype=np.float64).reshape(-1, 3))
        depth = pc[:, 2]
        safe = np.where(np.abs(depth) < 1e-6, 1e-6, depth)
        k = self.intrinsics
        u = k.fx * pc[:, 0] / safe + k.cx
        v = k.fy * pc[:, 1] / safe + k.cy
        return np.stack([u, v], axis=1), depth

    def ray_ego(self, uv: np.ndarray) -> np.ndarray:
        """Unit viewing rays [N, 3] in the ego frame through pixels uv [N, 2]."""
        k = self.intrinsics
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        d_opt = np.stack([(uv[:, 0] - k.cx) / k.fx, (uv[:, 1] - k.cy) / k.fy, np.ones(len(uv))], axis=1)
        d_ego = (d_opt @ _BODY_TO_OPTICAL) @ self.pose.rotation().T
        return d_ego / np.linalg.norm(d_ego, axis=1, keepdims=True)


@dataclass(frozen=True)
class Radar:
    """A front radar producing a range-azimuth tensor and a detection list."""

    pose: Pose = field(default_factory=lambda: Pose(x=3.7, y=0.0, z=0.5))
    range_min_m: float = 0.5
    range_max_m: float = 100.0
    num_range_bins: int = 128
    azimuth_fov_deg: float = 120.0  # total field of view, centred on the boresight
    num_azimuth_bins: int = 64
    frame_id: str = "radar_front"

    def __post_init__(self) -> None:
        _positive("radar range_max_m", self.range_max_m)
        if not 0 <= self.range_min_m < self.range_max_m:
            raise ConfigError(f"radar range_min_m must be in [0, range_max_m), got {self.range_min_m!r}")
        for name in ("num_range_bins", "num_azimuth_bins"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 4 <= value <= 4096:
                raise ConfigError(f"radar {name} must be an integer in [4, 4096], got {value!r}")
        if not 1.0 <= self.azimuth_fov_deg <= 180.0:
            raise ConfigError(f"radar azimuth_fov_deg must be in [1, 180], got {self.azimuth_fov_deg!r}")

    @property
    def azimuth_max_rad(self) -> float:
        return math.radians(self.azimuth_fov_deg) / 2.0

    @property
    def range_resolution_m(self) -> float:
        return (self.range_max_m - self.range_min_m) / self.num_range_bins

    @property
    def azimuth_resolution_rad(self) -> float:
        return 2.0 * self.azimuth_max_rad / self.num_azimuth_bins

    def range_centres(self) -> np.ndarray:
        return self.range_min_m + (np.arange(self.num_range_bins) + 0.5) * self.range_resolution_m

    def azimuth_centres(self) -> np.ndarray:
        """Bin centres in radians, from -max (right) to +max (left)."""
        return -self.azimuth_max_rad + (np.arange(self.num_azimuth_bins) + 0.5) * self.azimuth_resolution_rad


@dataclass(frozen=True)
class BevGrid:
    """Bird's-eye grid in the ego frame: rows along x (forward), columns along y (left to right).

    Row 0 is the far edge (x_max) so that an image of the grid reads like a map with the car at
    the bottom; column 0 is the left edge (y_max).
    """

    x_min_m: float = 0.0
    x_max_m: float = 51.2
    y_min_m: float = -25.6
    y_max_m: float = 25.6
    cell_m: float = 0.8

    def __post_init__(self) -> None:
        _positive("bev cell_m", self.cell_m)
        extents = (self.x_min_m, self.x_max_m, self.y_min_m, self.y_max_m)
        if not all(is_finite_number(v) for v in extents):
            raise ConfigError(f"bev extents must be finite numbers, got x [{self.x_min_m!r}, {self.x_max_m!r}] "
                              f"y [{self.y_min_m!r}, {self.y_max_m!r}]")
        if self.x_max_m <= self.x_min_m or self.y_max_m <= self.y_min_m:
            raise ConfigError(f"bev extents must be increasing, got x [{self.x_min_m}, {self.x_max_m}] "
                              f"y [{self.y_min_m}, {self.y_max_m}]")
        cells = ((self.x_max_m - self.x_min_m) / self.cell_m, (self.y_max_m - self.y_min_m) / self.cell_m)
        if not all(math.isfinite(n) and 1 <= round(n) <= 1 << 16 for n in cells):
            raise ConfigError(f"bev grid must have 1 to 65536 cells per side, got {cells[0]:.6g} x {cells[1]:.6g} "
                              f"(extents / cell_m {self.cell_m!r})")
        if not all(abs(n - round(n)) < 1e-6 for n in cells):  # else part of the stated area is cut off
            raise ConfigError(f"bev extents must be whole numbers of cells of {self.cell_m!r} m, got "
                              f"{cells[0]:.6g} x {cells[1]:.6g} cells")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (int(round((self.x_max_m - self.x_min_m) / self.cell_m)),
                int(round((self.y_max_m - self.y_min_m) / self.cell_m)))

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ego (x, y) -> (row, col, inside) as integer arrays and a boolean mask."""
        rows, cols = self.shape
        r = np.floor((self.x_max_m - np.asarray(x)) / self.cell_m).astype(np.int64)
        c = np.floor((self.y_max_m - np.asarray(y)) / self.cell_m).astype(np.int64)
        inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        return r, c, inside

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Ego x [rows] and y [cols] of cell centres."""
        rows, cols = self.shape
        x = self.x_max_m - (np.arange(rows) + 0.5) * self.cell_m
        y = self.y_max_m - (np.arange(cols) + 0.5) * self.cell_m
        return x, y


@dataclass(frozen=True)
class MapGrid(BevGrid):
    """The context map raster around the ego (same conventions as `BevGrid`), coarser and wider."""

    x_min_m: float = -16.0
    x_max_m: float = 80.0
    y_min_m: float = -48.0
    y_max_m: float = 48.0
    cell_m: float = 1.5


@dataclass(frozen=True)
class Rig:
    """Everything geometric a model and the simulator share."""

    camera: Camera
    radar: Radar = field(default_factory=Radar)
    bev: BevGrid = field(default_factory=BevGrid)
    map: MapGrid = field(default_factory=MapGrid)
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        names = self.class_names
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names \
                or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"class_names must be a non-empty list of distinct names, got {names!r}")
        object.__setattr__(self, "class_names", tuple(names))

    @classmethod
    def default(cls, camera_size: tuple[int, int] = (640, 360), hfov_deg: float = 80.0) -> Rig:
        """The simulator's rig: a front camera of `camera_size` (width, height) and a front radar."""
        width, height = camera_size
        return cls(camera=Camera(intrinsics=CameraIntrinsics.from_fov(width, height, hfov_deg)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Rig:
        try:
            cam = d["camera"]
            return cls(
                camera=Camera(intrinsics=CameraIntrinsics(**cam["intrinsics"]), pose=Pose(**cam["pose"]),
                              frame_id=cam.get("frame_id", "camera_front")),
                radar=Radar(**{**d["radar"], "pose": Pose(**d["radar"]["pose"])}),
                bev=BevGrid(**d["bev"]),
                map=MapGrid(**d["map"]),
                class_names=d.get("class_names", CLASS_NAMES),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"malformed rig description: {exc}") from exc


def log_bev_grid(metadata: Iterable[Mapping[str, Mapping[str, str]]]) -> tuple[BevGrid | None, str]:
    """The BEV grid a log's ground truth is on, from its `fusion_rt.rig` metadata record (the
    simulator writes it; `metadata`: each file's records, name -> string map), or (None, why not)."""
    for records in metadata:
        record = records.get("fusion_rt.rig")
        if record is None:
            continue
        try:
            return BevGrid(**json.loads(record["json"])["bev"]), ""
        except (KeyError, TypeError, ValueError, RecursionError, ConfigError) as exc:
            return None, f"its fusion_rt.rig metadata has no readable BEV grid: {type(exc).__name__}: {exc}"
    return None, "it records no fusion_rt.rig metadata"
