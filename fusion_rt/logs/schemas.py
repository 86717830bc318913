"""ROS 2 message definitions (``ros2msg`` text) and default topics of fusion-rt logs.

Every log is MCAP with profile ``ros2``, CDR-encoded messages, and schemas in ``ros2msg`` encoding:
the message's own definition followed by each dependency as a block that starts with a line of 80
``=`` and a ``MSG: pkg/Type`` line (the format rosbag2 and Foxglove read and write).

How each `fusion_rt.messages` type maps to a ROS 2 message (see `fusion_rt.logs.convert`):

================  ===================================  ==================================
message           schema                                default topic
================  ===================================  ==================================
CameraFrame       sensor_msgs/msg/CompressedImage       /camera/front/image/compressed
CameraFrame (raw) sensor_msgs/msg/Image                 /camera/front/image_raw
CameraInfo        sensor_msgs/msg/CameraInfo            /camera/front/camera_info
RadarTensor       fusion_rt_msgs/msg/RadarTensor        /radar/front/tensor
RadarDetections   sensor_msgs/msg/PointCloud2           /radar/front/detections
MapRaster         nav_msgs/msg/OccupancyGrid            /map/local
TextContext       std_msgs/msg/String                   /context/text
GroundTruth       fusion_rt_msgs/msg/GroundTruth        /ground_truth
================  ===================================  ==================================

The two custom types are documented in their definitions below. `RadarTensor` is laid out like
``sensor_msgs/Image``: a shape, a dtype string and a flat little-endian ``uint8[] data``
(row-major [channel, range, azimuth]); logs store float16 by default (half the size, about three
significant digits, which is below the sensor's noise) and readers always return float32.
Its bin extents are float64 (not float32) so that they round-trip exactly.
"""

from __future__ import annotations

import re

from fusion_rt.messages import (
    CameraFrame,
    CameraInfo,
    GroundTruth,
    MapRaster,
    RadarDetections,
    RadarTensor,
    TextContext,
)

__all__ = [
    "SCHEMAS",
    "DEFAULT_TOPICS",
    "RAW_IMAGE_TOPIC",
    "SCHEMA_MODALITY",
    "COMPRESSED_IMAGE",
    "IMAGE",
    "CAMERA_INFO",
    "POINT_CLOUD2",
    "OCCUPANCY_GRID",
    "STRING",
    "RADAR_TENSOR",
    "GROUND_TRUTH",
    "normalize_schema_name",
    "byte_view_schema",
]

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
OCCUPANCY_GRID = "nav_msgs/msg/OccupancyGrid"
STRING = "std_msgs/msg/String"
RADAR_TENSOR = "fusion_rt_msgs/msg/RadarTensor"
GROUND_TRUTH = "fusion_rt_msgs/msg/GroundTruth"

_SEPARATOR = "=" * 80

# --- standard definitions (ROS 2 Humble field lists; comments shortened) ---------------------

_TIME = """\
# Time since the epoch: seconds plus nanoseconds in [0, 1e9).
int32 sec
uint32 nanosec
"""

_HEADER = """\
# Standard metadata for higher-level stamped data types.
builtin_interfaces/Time stamp
string frame_id
"""

_COMPRESSED_IMAGE = """\
# A compressed image; format is "jpeg" or "png".
std_msgs/Header header
string format
uint8[] data
"""

_IMAGE = """\
# An uncompressed image; (0, 0) is the top-left corner.
std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data
"""

_REGION_OF_INTEREST = """\
uint32 x_offset
uint32 y_offset
uint32 height
uint32 width
bool do_rectify
"""

_CAMERA_INFO = """\
# Calibration of a pinhole camera: K is the row-major 3x3 intrinsic matrix.
std_msgs/Header header
uint32 height
uint32 width
string distortion_model
float64[] d
float64[9] k
float64[9] r
float64[12] p
uint32 binning_x
uint32 binning_y
sensor_msgs/RegionOfInterest roi
"""

_POINT_FIELD = """\
uint8 INT8    = 1
uint8 UINT8   = 2
uint8 INT16   = 3
uint8 UINT16  = 4
uint8 INT32   = 5
uint8 UINT32  = 6
uint8 FLOAT32 = 7
uint8 FLOAT64 = 8
string name
uint32 offset
uint8 datatype
uint32 count
"""

_POINT_CLOUD2 = """\
# A collection of N-dimensional points; fusion-rt radar detections carry float32 fields
# x, y, z (m, radar frame), radial_velocity (m/s, positive = moving away) and rcs (dBsm).
std_msgs/Header header
uint32 height
uint32 width
sensor_msgs/PointField[] fields
bool is_bigendian
uint32 point_step
uint32 row_step
uint8[] data
bool is_dense
"""

_POINT = """\
float64 x
float64 y
float64 z
"""

_QUATERNION = """\
float64 x 0
float64 y 0
float64 z 0
float64 w 1
"""

_POSE = """\
geometry_msgs/Point position
geometry_msgs/Quaternion orientation
"""

_MAP_META_DATA = """\
builtin_interfaces/Time map_load_time
float32 resolution
uint32 width
uint32 height
geometry_msgs/Pose origin
"""

_OCCUPANCY_GRID = """\
# A 2-D grid map; data is row-major starting at cell (0, 0) at info.origin, x along a row.
# fusion-rt maps: origin = the (x_min, y_min) corner in base_link, identity rotation; cells hold
# fusion_rt.messages.MAP_CODES (-1 unknown, 0 offroad ... 100 lane marking).
std_msgs/Header header
nav_msgs/MapMetaData info
int8[] data
"""

_STRING = """\
string data
"""

# --- fusion-rt definitions ---------------------------------------------------------------------

_RADAR_TENSOR = """\
# A range-azimuth radar tensor, laid out like sensor_msgs/Image.
# data holds num_channels * num_range * num_azimuth values of type `dtype` ("float16" or
# "float32"), little-endian, row-major [channel, range, azimuth].
# Range bins evenly cover [range_min_m, range_max_m]; azimuth bins evenly cover
# [azimuth_min_rad, azimuth_max_rad], index 0 being the most negative (rightmost) azimuth.
# fusion-rt writes float16 by default to keep logs small; readers decode to float32.
std_msgs/Header header
uint32 num_channels
uint32 num_range
uint32 num_azimuth
float64 range_min_m
float64 range_max_m
float64 azimuth_min_rad
float64 azimuth_max_rad
string[] channels         # one name per channel, e.g. power_db, radial_velocity_mps
string dtype              # float16 | float32
uint8[] data
"""

_AGENT = """\
# One road user in the ego (base_link) frame at the ground-truth stamp.
int64 id
string class_name
float64 x                 # m
float64 y
float64 z
float64 vx                # velocity over ground along the ego axes, m/s
float64 vy
float64 length            # m
float64 width
float64 height
float64 yaw               # heading relative to the ego x axis, rad
bool visible_camera
bool visible_radar
"""

_GROUND_TRUTH = """\
# What a model should predict for the camera frame with the same header.stamp.
std_msgs/Header header
string scene_type
string condition
float64 ego_speed_mps
string[] label_names      # scene labels, parallel to labels
uint8[] labels            # 0 or 1 per label name
fusion_rt_msgs/Agent[] agents
uint32 bev_rows           # BEV occupancy is [len(bev_classes), bev_rows, bev_cols] uint8,
uint32 bev_cols           # row-major; row 0 = far edge (x_max), column 0 = left edge (y_max)
string[] bev_classes
uint8[] bev
string[] extras_keys      # free-form scalars, parallel arrays
float64[] extras_values
"""


def _concat(main: str, *deps: tuple[str, str]) -> str:
    """A ros2msg schema: the main definition, then each dependency as `MSG: pkg/Type` block."""
    parts = [main]
    for name, text in deps:
        parts.append(f"{_SEPARATOR}\nMSG: {name}\n{text}")
    return "".join(parts)


_D_TIME = ("builtin_interfaces/Time", _TIME)
_D_HEADER = ("std_msgs/Header", _HEADER)

#: Schema name -> full ros2msg text (main definition + dependencies), as written into logs.
SCHEMAS: dict[str, str] = {
    COMPRESSED_IMAGE: _concat(_COMPRESSED_IMAGE, _D_HEADER, _D_TIME),
    IMAGE: _concat(_IMAGE, _D_HEADER, _D_TIME),
    CAMERA_INFO: _concat(_CAMERA_INFO, _D_HEADER, _D_TIME, ("sensor_msgs/RegionOfInterest", _REGION_OF_INTEREST)),
    POINT_CLOUD2: _concat(_POINT_CLOUD2, _D_HEADER, _D_TIME, ("sensor_msgs/PointField", _POINT_FIELD)),
    OCCUPANCY_GRID: _concat(_OCCUPANCY_GRID, _D_HEADER, _D_TIME, ("nav_msgs/MapMetaData", _MAP_META_DATA),
                            ("geometry_msgs/Pose", _POSE), ("geometry_msgs/Point", _POINT),
                            ("geometry_msgs/Quaternion", _QUATERNION)),
    STRING: _concat(_STRING),
    RADAR_TENSOR: _concat(_RADAR_TENSOR, _D_HEADER, _D_TIME),
    GROUND_TRUTH: _concat(_GROUND_TRUTH, _D_HEADER, _D_TIME, ("fusion_rt_msgs/Agent", _AGENT)),
}

#: Default topic per message type (what the simulator writes and `LogWriter.write` uses).
DEFAULT_TOPICS: dict[type, str] = {
    CameraFrame: "/camera/front/image/compressed",
    CameraInfo: "/camera/front/camera_info",
    RadarTensor: "/radar/front/tensor",
    RadarDetections: "/radar/front/detections",
    MapRaster: "/map/local",
    TextContext: "/context/text",
    GroundTruth: "/ground_truth",
}

#: Default topic of a raw (uncompressed) `CameraFrame`, written as sensor_msgs/msg/Image.
RAW_IMAGE_TOPIC = "/camera/front/image_raw"

#: Schema name -> the `modality` of the message it decodes to (topic-to-modality inference).
SCHEMA_MODALITY: dict[str, str] = {
    COMPRESSED_IMAGE: CameraFrame.modality,
    IMAGE: CameraFrame.modality,
    CAMERA_INFO: CameraInfo.modality,
    POINT_CLOUD2: RadarDetections.modality,
    OCCUPANCY_GRID: MapRaster.modality,
    STRING: TextContext.modality,
    RADAR_TENSOR: RadarTensor.modality,
    GROUND_TRUTH: GroundTruth.modality,
}


def normalize_schema_name(name: str) -> str:
    """`pkg/Type` or `pkg/msg/Type` -> `pkg/msg/Type` (ROS 2 logs use both spellings)."""
    parts = name.split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return name


_INT8_DATA = re.compile(r"^(\s*)int8\[\](\s+data\b)", flags=re.MULTILINE)
_SECTION = re.compile(r"^=+\s*$", flags=re.MULTILINE)


def schema_layout(text: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """The wire layout a ros2msg text describes: per type (the main one under "", each dependency
    under its short name), its fields as (type, name), with types by short name ("Header",
    "PointField[]"); comments, constants, default values and spacing, which change no byte on the
    wire, are left out."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for i, section in enumerate(_SECTION.split(text)):
        name, fields = "", []
        for line in section.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("MSG:"):
                name = line[4:].strip().rsplit("/", 1)[-1]
            elif line and "=" not in line and len(parts := line.split()) >= 2:
                fields.append((parts[0].rsplit("/", 1)[-1], parts[1]))
        out[name if i else ""] = tuple(fields)
    return out


def schema_matches(name: str, text: str) -> bool:
    """Whether a log's definition of a type fusion-rt decodes lays out the wire as fusion-rt's does
    (`SCHEMAS`); True for other types. A log may carry any text under a known name: decoding with
    a different layout misreads every message, or (a sequence of an empty type, one byte on the
    wire per element) builds a Python object per payload byte."""
    canonical = SCHEMAS.get(normalize_schema_name(name))
    if canonical is None:
        return True
    ours, theirs = schema_layout(canonical), schema_layout(text)
    return all(theirs.get(key) == fields for key, fields in ours.items())


def byte_view_schema(name: str, text: str) -> str:
    """The schema text to encode/decode with: OccupancyGrid's ``int8[] data`` read as ``uint8[]``.

    Both have the same CDR wire format (a uint32 length, then one byte per cell), but
    `mcap_ros2` handles ``uint8[]`` as one bytes object and ``int8[]`` one Python int at a time
    (about 4 ms per 64 x 64 map). Files always carry the canonical text; only the codec differs.
    """
    if normalize_schema_name(name) == OCCUPANCY_GRID:
        return _INT8_DATA.sub(r"\1uint8[]\2", text, count=1)
    return text
