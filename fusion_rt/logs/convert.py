"""`fusion_rt.messages` <-> ROS 2 messages (dicts to write, decoded objects to read).

Writing: `to_ros(message)` -> (schema name, dict) for `mcap_ros2`'s CDR encoder.
Reading: `converter_for(schema_name)` -> a function (decoded ROS message, log_time_ns) -> message;
decoded messages are the attribute objects of `mcap_ros2.decoder.DecoderFactory`.

Conventions that are not obvious:

- Header stamps: ``stamp_ns`` splits exactly into ``sec = stamp_ns // 10**9`` and
  ``nanosec = stamp_ns % 10**9``. ``std_msgs/String`` has no header: its stamp is the MCAP publish
  time (the log time when a record has none, and in .db3 bags, which store only the log time).
- Compressed camera frames carry no width/height on disk (CompressedImage has none): they read
  back with ``width = height = 0``, as `CameraFrame` documents.
- Maps: `MapRaster.grid[r, c]` has row 0 at x_max and column 0 at y_max. An OccupancyGrid stores
  cell (i, j) (i along the map x axis, j along y) at ``data[j * width + i]``, cell (0, 0) at the
  origin. With the origin at the (x_min, y_min) corner and identity rotation, the map axes are
  the ego axes, so i counts rows up from x_min and j counts columns up from y_min:
  ``ros[j, i] = grid[rows - 1 - i, cols - 1 - j]``, i.e. ``ros = grid[::-1, ::-1].T`` with
  ``width = rows`` and ``height = cols``. The resolution is float32 on disk; it reads back as the
  shortest decimal that rounds to that float32 (exact for any cell size with up to 7 significant
  digits, the writer refuses others), and the origin is chosen so that ``origin + n * cell``
  reproduces x_max/y_max bit for bit.
- Radar detections read from any PointCloud2 layout with x and y plus either a radial-velocity
  field (radial_velocity, v_r, vr, doppler, ...) or velocity components (vx/vy, else
  vx_comp/vy_comp as in nuScenes), radial velocity = (x vx + y vy) / sqrt(x^2 + y^2).
  A missing z reads as 0 (a planar radar), a missing RCS as NaN (unknown).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fusion_rt.errors import DecodeError, LogError, UnsupportedMessageError
from fusion_rt.logs import schemas as S
from fusion_rt.messages import (
    DETECTION_FIELDS,
    Agent,
    CameraFrame,
    CameraInfo,
    GroundTruth,
    MapRaster,
    Message,
    RadarDetections,
    RadarTensor,
    TextContext,
)

__all__ = ["to_ros", "converter_for", "Converter", "split_stamp", "COMPRESSED_FORMATS", "RAW_ENCODINGS",
           "UnsupportedMessageError"]


Converter = Callable[[Any, int], Message]

_NS = 1_000_000_000
_INT32_MAX = 2**31 - 1

#: CameraFrame encodings written as sensor_msgs/CompressedImage.
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
#: Raw ROS image encodings read and written as sensor_msgs/Image -> bytes per pixel.
RAW_ENCODINGS: dict[str, int] = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}
_TENSOR_DTYPES: dict[str, np.dtype] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}

# PointField datatype -> numpy type code (endianness added per cloud).
_POINT_FIELD_TYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_RADIAL_NAMES = ("radial_velocity", "v_r", "vr", "doppler", "v_radial", "radial_speed", "range_rate")
_VELOCITY_PAIRS = (("vx", "vy"), ("vx_comp", "vy_comp"))
_RCS_NAMES = ("rcs", "rcs_dbsm")


# --- shared helpers ------------------------------------------------------------------------------

def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """stamp_ns -> (sec, nanosec), exact; refuses stamps a ROS 2 Time (int32 sec) cannot hold."""
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
        raise LogError(f"stamp_ns must be an integer number of nanoseconds, got {stamp_ns!r}")
    sec, nanosec = divmod(int(stamp_ns), _NS)
    if not 0 <= sec <= _INT32_MAX:
        raise LogError(f"stamp_ns {stamp_ns} is outside what a log holds (0 .. {(_INT32_MAX + 1) * _NS - 1})")
    return sec, nanosec


def _header(stamp_ns: int, frame_id: str) -> dict:
    sec, nanosec = split_stamp(stamp_ns)
    return {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": frame_id}


def _stamp_of(header: Any) -> int:
    stamp = header.stamp
    if not 0 <= stamp.nanosec < _NS:
        raise DecodeError(f"header stamp nanosec {stamp.nanosec} is not in [0, 1e9)")
    if stamp.sec < 0:  # fusion-rt stamps are nanoseconds since the epoch, never before it
        raise DecodeError(f"header stamp sec {stamp.sec} is negative")
    return stamp.sec * _NS + stamp.nanosec


def _exact_corner(anchor: float, extent: float) -> float:
    """A float64 `origin` with `origin + extent == anchor` exactly, when one exists.

    `anchor - extent` usually is one; otherwise a neighbouring float is (a few ulps away).
    """
    origin = anchor - extent
    candidate = origin
    for _ in range(4):
        if candidate + extent == anchor:
            return candidate
        candidate = float(np.nextafter(candidate, math.inf if candidate + extent < anchor else -math.inf))
    return origin


def _cell_from_float32(resolution: float) -> float:
    """The shortest decimal that rounds to this float32 (0.800000011920929 -> 0.8)."""
    return float(str(np.float32(resolution)))


# --- writing -------------------------------------------------------------------------------------

def to_ros(message: Message, *, radar_tensor_dtype: str = "float16") -> tuple[str, dict]:
    """A fusion-rt message -> (schema name, ROS 2 message as a dict for the CDR encoder).

    Raises `LogError` naming the offending field when the message cannot be represented.
    """
    if type(message) is RadarTensor:
        return _radar_tensor_to_ros(message, radar_tensor_dtype)
    writer = _WRITERS.get(type(message))
    if writer is None:
        raise LogError(f"cannot log a {type(message).__name__}: not a fusion_rt.messages type")
    return writer(message)


def _camera_frame_to_ros(m: CameraFrame) -> tuple[str, dict]:
    data = bytes(m.data)
    if m.encoding in COMPRESSED_FORMATS:
        return S.COMPRESSED_IMAGE, {"header": _header(m.stamp_ns, m.frame_id), "format": m.encoding, "data": data}
    bpp = RAW_ENCODINGS.get(m.encoding)
    if bpp is None:
        raise LogError(f"camera frame encoding {m.encoding!r} is not loggable; "
                       f"use one of {COMPRESSED_FORMATS + tuple(RAW_ENCODINGS)}")
    if len(data) != m.width * m.height * bpp or m.width <= 0 or m.height <= 0:
        raise LogError(f"raw {m.encoding} camera frame at {m.stamp_ns} has {len(data)} bytes, "
                       f"expected {m.width} x {m.height} x {bpp}")
    return S.IMAGE, {"header": _header(m.stamp_ns, m.frame_id), "height": m.height, "width": m.width,
                     "encoding": m.encoding, "is_bigendian": 0, "step": m.width * bpp, "data": data}


def _camera_info_to_ros(m: CameraInfo) -> tuple[str, dict]:
    k = np.asarray(m.k, dtype=np.float64)
    if k.shape != (3, 3):
        raise LogError(f"camera info K must be 3x3, got shape {k.shape}")
    p = np.zeros((3, 4))
    p[:, :3] = k
    return S.CAMERA_INFO, {
        "header": _header(m.stamp_ns, m.frame_id), "height": m.height, "width": m.width,
        "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": k.ravel().tolist(),
        "r": np.eye(3).ravel().tolist(), "p": p.ravel().tolist(), "binning_x": 0, "binning_y": 0,
        "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
    }


def _radar_tensor_to_ros(m: RadarTensor, dtype_name: str) -> tuple[str, dict]:
    dtype = _TENSOR_DTYPES.get(dtype_name)
    if dtype is None:
        raise LogError(f"radar tensor dtype must be one of {tuple(_TENSOR_DTYPES)}, got {dtype_name!r}")
    data = np.asarray(m.data)
    if data.ndim != 3 or data.shape[0] != len(m.channels):
        raise LogError(f"radar tensor at {m.stamp_ns} must be [channels={len(m.channels)}, range, azimuth], "
                       f"got shape {data.shape}")
    with np.errstate(over="ignore"):  # overflow is detected just below, with a better message
        stored = data.astype(dtype)
    if not np.array_equal(np.isfinite(stored), np.isfinite(data)):
        raise LogError(f"radar tensor at {m.stamp_ns} holds values beyond {dtype_name} range "
                       f"(max |value| {np.nanmax(np.abs(data[np.isfinite(data)]))}); "
                       f"write it with radar_tensor_dtype='float32'")
    c, r, a = data.shape  # [channels, range, azimuth]
    return S.RADAR_TENSOR, {
        "header": _header(m.stamp_ns, m.frame_id), "num_channels": c, "num_range": r, "num_azimuth": a,
        "range_min_m": m.range_min_m, "range_max_m": m.range_max_m,
        "azimuth_min_rad": m.azimuth_min_rad, "azimuth_max_rad": m.azimuth_max_rad,
        "channels": list(m.channels), "dtype": dtype_name, "data": stored.tobytes(),
    }


def _radar_detections_to_ros(m: RadarDetections) -> tuple[str, dict]:
    points = np.asarray(m.points)
    if points.ndim != 2 or points.shape[1] != len(DETECTION_FIELDS):
        raise LogError(f"radar detections at {m.stamp_ns} must be [N, {len(DETECTION_FIELDS)}], "
                       f"got shape {points.shape}")
    points = np.ascontiguousarray(points, dtype="<f4")
    n = points.shape[0]
    fields = [{"name": name, "offset": 4 * i, "datatype": 7, "count": 1} for i, name in enumerate(DETECTION_FIELDS)]
    step = 4 * len(DETECTION_FIELDS)
    return S.POINT_CLOUD2, {
        "header": _header(m.stamp_ns, m.frame_id), "height": 1, "width": n, "fields": fields,
        "is_bigendian": False, "point_step": step, "row_step": step * n, "data": points.tobytes(),
        "is_dense": bool(np.isfinite(points).all()),
    }


def _map_to_ros(m: MapRaster) -> tuple[str, dict]:
    grid = np.asarray(m.grid)
    if grid.ndim != 2 or grid.dtype != np.int8:
        raise LogError(f"map raster at {m.stamp_ns} must be a 2-D int8 grid, got {grid.dtype} {grid.shape}")
    cell = float(m.cell_m)
    if not (math.isfinite(cell) and cell > 0) or _cell_from_float32(cell) != cell:
        raise LogError(f"map cell_m {m.cell_m!r} cannot be stored exactly as an OccupancyGrid float32 resolution; "
                       f"use a positive value with at most 7 significant digits")
    rows, cols = grid.shape
    ros = grid[::-1, ::-1].T  # [cols (map y), rows (map x)]: see the module docstring
    sec, nanosec = split_stamp(m.stamp_ns)
    return S.OCCUPANCY_GRID, {
        "header": _header(m.stamp_ns, m.frame_id),
        "info": {
            "map_load_time": {"sec": sec, "nanosec": nanosec}, "resolution": cell, "width": rows, "height": cols,
            "origin": {"position": {"x": _exact_corner(float(m.x_max_m), rows * cell),
                                    "y": _exact_corner(float(m.y_max_m), cols * cell), "z": 0.0},
                       "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
        },
        "data": ros.tobytes(),  # int8 cells as bytes: written through `schemas.byte_view_schema`
    }


def _text_to_ros(m: TextContext) -> tuple[str, dict]:
    if not isinstance(m.text, str):  # mcap_ros2 would write str(b"...") without a word
        raise TypeError(f"TextContext.text must be a str, got {type(m.text).__name__}")
    return S.STRING, {"data": m.text}


def _ground_truth_to_ros(m: GroundTruth) -> tuple[str, dict]:
    bev = np.asarray(m.bev)
    if bev.ndim != 3 or bev.shape[0] != len(m.bev_classes):
        raise LogError(f"ground truth bev at {m.stamp_ns} must be [classes={len(m.bev_classes)}, rows, cols], "
                       f"got shape {bev.shape}")
    # NaN passes every comparison and a cast truncates 0.6 to 0: only whole numbers in 0..255 are stored
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(bev) & (bev == np.round(bev)) & (bev >= 0) & (bev <= 255)
    if not ok.all():
        raise LogError(f"ground truth bev at {m.stamp_ns} must hold whole numbers 0..255, got {bev[~ok][:5].tolist()}")
    bad = {k: v for k, v in m.labels.items() if not (float(v).is_integer() and 0 <= float(v) <= 255)}
    if bad:
        raise LogError(f"ground truth labels at {m.stamp_ns} must be whole numbers 0..255, got {bad}")
    agents = [{
        "id": a.id, "class_name": a.class_name, "x": a.x, "y": a.y, "z": a.z, "vx": a.vx, "vy": a.vy,
        "length": a.length, "width": a.width, "height": a.height, "yaw": a.yaw,
        "visible_camera": bool(a.visible_camera), "visible_radar": bool(a.visible_radar),
    } for a in m.agents]
    return S.GROUND_TRUTH, {
        "header": _header(m.stamp_ns, "base_link"), "scene_type": m.scene_type, "condition": m.condition,
        "ego_speed_mps": m.ego_speed_mps, "label_names": list(m.labels),
        "labels": bytes(int(v) for v in m.labels.values()), "agents": agents,
        "bev_rows": bev.shape[1], "bev_cols": bev.shape[2], "bev_classes": list(m.bev_classes),
        "bev": np.ascontiguousarray(bev, dtype=np.uint8).tobytes(),
        "extras_keys": list(m.extras), "extras_values": [float(v) for v in m.extras.values()],
    }


_WRITERS: dict[type, Callable[[Any], tuple[str, dict]]] = {
    CameraFrame: _camera_frame_to_ros,
    CameraInfo: _camera_info_to_ros,
    RadarDetections: _radar_detections_to_ros,
    MapRaster: _map_to_ros,
    TextContext: _text_to_ros,
    GroundTruth: _ground_truth_to_ros,
}


# --- reading -------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _compressed_image(msg: Any, log_time_ns: int) -> CameraFrame:
    # image_transport writes "<original encoding>; <codec> compressed [<target>]" (the target only for
    # colour encodings: "rgb8; jpeg compressed bgr8", "mono8; jpeg compressed ", "16UC1; png compressed ",
    # "16UC1; compressedDepth png"); older recorders and Foxglove write "jpeg", "png", "jpeg compressed bgr8".
    # The original encoding is held to what the raw Image path reads: a depth image compressed to a
    # 16-bit PNG decodes "successfully" to a scaled 8-bit picture that is no camera frame.
    original, sep, rest = msg.format.partition(";")
    if not sep:
        original, rest = "", original
    original = original.strip()
    if original and original not in RAW_ENCODINGS:
        raise UnsupportedMessageError(f"CompressedImage format {msg.format!r}: encoding {original!r} is not "
                                      f"supported as a camera frame; expected one of {tuple(RAW_ENCODINGS)}")
    words = rest.lower().split()
    if "compresseddepth" in words:
        raise UnsupportedMessageError(f"CompressedImage format {msg.format!r} is a compressedDepth (depth) image, "
                                      f"no camera frame")
    target = words[words.index("compressed") + 1:][:1] if "compressed" in words else []
    if target and target[0] not in RAW_ENCODINGS:
        raise UnsupportedMessageError(f"CompressedImage format {msg.format!r}: target encoding {target[0]!r} is not "
                                      f"supported as a camera frame; expected one of {tuple(RAW_ENCODINGS)}")
    fmt = rest.lower()
    if "png" in fmt:
        encoding = "png"
    elif "jpeg" in fmt or "jpg" in fmt:
        encoding = "jpeg"
    else:
        raise UnsupportedMessageError(f"CompressedImage format {msg.format!r} is neither jpeg nor png")
    data = bytes(msg.data)
    # a PNG says its bit depth in IHDR (byte 24): a 16-bit one is a depth or high-dynamic-range image
    # whatever its format string says ("png" alone, as ROS 1 and Foxglove write it)
    if encoding == "png" and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 24 \
            and data[24] == 16:
        raise UnsupportedMessageError(f"CompressedImage format {msg.format!r} holds a 16-bit PNG (a depth image?); "
                                      f"a camera frame is 8-bit")
    return CameraFrame(stamp_ns=_stamp_of(msg.header), data=data, encoding=encoding,
                       frame_id=msg.header.frame_id)


def _image(msg: Any, log_time_ns: int) -> CameraFrame:
    bpp = RAW_ENCODINGS.get(msg.encoding)
    if bpp is None:
        raise UnsupportedMessageError(f"Image encoding {msg.encoding!r} is not supported; expected one of "
                                      f"{tuple(RAW_ENCODINGS)}")
    width, height, step = msg.width, msg.height, msg.step
    row = width * bpp
    if step < row:
        raise DecodeError(f"Image {width}x{height} {msg.encoding} has step {step}, shorter than a row of "
                          f"{row} bytes")
    if len(msg.data) < step * height:
        raise DecodeError(f"Image {width}x{height} {msg.encoding} with step {step} needs {step * height} bytes, "
                          f"has {len(msg.data)}")
    data = bytes(msg.data[: step * height])
    if step != row:  # drop row padding
        data = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row].tobytes()
    return CameraFrame(stamp_ns=_stamp_of(msg.header), data=data, encoding=msg.encoding,
                       frame_id=msg.header.frame_id, width=width, height=height)


def _camera_info(msg: Any, log_time_ns: int) -> CameraInfo:
    if len(msg.k) != 9:
        raise DecodeError(f"CameraInfo k has {len(msg.k)} values, expected 9")
    return CameraInfo(stamp_ns=_stamp_of(msg.header), width=msg.width, height=msg.height,
                      k=np.array(msg.k, dtype=np.float64).reshape(3, 3), frame_id=msg.header.frame_id)


def _radar_tensor(msg: Any, log_time_ns: int) -> RadarTensor:
    dtype = _TENSOR_DTYPES.get(msg.dtype)
    if dtype is None:
        raise DecodeError(f"RadarTensor dtype {msg.dtype!r} is not one of {tuple(_TENSOR_DTYPES)}")
    shape = (msg.num_channels, msg.num_range, msg.num_azimuth)  # [channel, range, azimuth]
    expected = shape[0] * shape[1] * shape[2] * dtype.itemsize
    if len(msg.data) != expected:
        raise DecodeError(f"RadarTensor {shape} {msg.dtype} needs {expected} data bytes, has {len(msg.data)}")
    if len(msg.channels) != shape[0]:
        raise DecodeError(f"RadarTensor names {len(msg.channels)} channels for {shape[0]} channel planes")
    data = np.frombuffer(msg.data, dtype=dtype).reshape(shape).astype(np.float32)
    return RadarTensor(stamp_ns=_stamp_of(msg.header), data=data, channels=tuple(msg.channels),
                       range_min_m=msg.range_min_m, range_max_m=msg.range_max_m,
                       azimuth_min_rad=msg.azimuth_min_rad, azimuth_max_rad=msg.azimuth_max_rad,
                       frame_id=msg.header.frame_id)


def _point_cloud_columns(msg: Any) -> dict[str, np.ndarray]:
    """The PointCloud2's fields as arrays [height * width], by lower-case name (no per-point loop)."""
    n = msg.width * msg.height
    step = msg.point_step
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        code = _POINT_FIELD_TYPES.get(f.datatype)
        size = int(code[1]) if code else 0
        name = f.name.lower()
        count = max(f.count, 1)  # some drivers write count 0 for scalars
        if code is None or name in names or f.offset + size * count > step:
            continue  # a field we cannot address is one we do not read
        names.append(name)
        formats.append((order + code, (count,)) if count > 1 else order + code)
        offsets.append(f.offset)
    if n == 0:
        return {name: np.zeros(0) for name in names}
    needed = msg.row_step * (msg.height - 1) + msg.width * step
    if step <= 0 or msg.row_step < msg.width * step or len(msg.data) < needed:
        raise DecodeError(f"PointCloud2 {msg.width}x{msg.height} with point_step {step} and row_step {msg.row_step} "
                          f"does not fit its {len(msg.data)} data bytes")
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if msg.row_step == msg.width * step:
        records = raw[: n * step].view(dtype)
    else:  # padded rows: cut each row to its points
        rows = np.lib.stride_tricks.as_strided(raw, shape=(msg.height, msg.width * step), strides=(msg.row_step, 1))
        records = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return {name: records[name] if records[name].ndim == 1 else records[name][:, 0] for name in names}


def _radar_detections(msg: Any, log_time_ns: int) -> RadarDetections:
    cols = _point_cloud_columns(msg)
    if "x" not in cols or "y" not in cols:
        raise UnsupportedMessageError(f"PointCloud2 has no x/y fields (fields: {sorted(cols)})")
    with np.errstate(invalid="ignore"):  # a signalling NaN (damaged bytes) raises FE_INVALID when widened;
        x = cols["x"].astype(np.float64)  # non-finite detections are masked with a reason downstream
        y = cols["y"].astype(np.float64)
    radial = next((cols[k] for k in _RADIAL_NAMES if k in cols), None)
    velocity = None
    if radial is None:
        pair = next(((cols[a], cols[b]) for a, b in _VELOCITY_PAIRS if a in cols and b in cols), None)
        if pair is None:
            raise UnsupportedMessageError(f"PointCloud2 has neither a radial velocity field {_RADIAL_NAMES} nor "
                                          f"velocity components {_VELOCITY_PAIRS} (fields: {sorted(cols)})")
        velocity = np.stack(pair, axis=1).astype(np.float32)  # kept: the radial one depends on where the radar is
        r = np.hypot(x, y)
        dot = x * pair[0] + y * pair[1]
        radial = np.divide(dot, r, out=np.zeros_like(r), where=r > 0)
    n = x.shape[0]
    z = cols.get("z", np.zeros(n))
    rcs = next((cols[k] for k in _RCS_NAMES if k in cols), np.full(n, np.nan))
    points = np.empty((n, len(DETECTION_FIELDS)), dtype=np.float32)  # [N, x y z radial_velocity rcs]
    for i, column in enumerate((cols["x"], cols["y"], z, radial, rcs)):
        points[:, i] = column
    return RadarDetections(stamp_ns=_stamp_of(msg.header), points=points, frame_id=msg.header.frame_id,
                           velocity=velocity)


def _occupancy_grid(msg: Any, log_time_ns: int) -> MapRaster:
    info = msg.info
    q = info.origin.orientation
    if (q.x, q.y, q.z) != (0.0, 0.0, 0.0) or abs(q.w) != 1.0:
        raise UnsupportedMessageError(f"OccupancyGrid origin is rotated (quaternion {q.x}, {q.y}, {q.z}, {q.w}); "
                                      f"only axis-aligned maps are supported")
    rows, cols = info.width, info.height  # map x = ego x (rows), map y = ego y (columns)
    if len(msg.data) != rows * cols:
        raise DecodeError(f"OccupancyGrid {info.width}x{info.height} has {len(msg.data)} cells")
    cell = _cell_from_float32(info.resolution)
    cells = msg.data  # bytes through `schemas.byte_view_schema`, else a list of ints
    ros = (np.frombuffer(cells, np.int8) if isinstance(cells, bytes) else np.array(cells, np.int8)).reshape(cols, rows)
    grid = np.ascontiguousarray(ros.T[::-1, ::-1])  # inverse of _map_to_ros
    return MapRaster(stamp_ns=_stamp_of(msg.header), grid=grid, cell_m=cell,
                     x_max_m=info.origin.position.x + rows * cell, y_max_m=info.origin.position.y + cols * cell,
                     frame_id=msg.header.frame_id)


def _string(msg: Any, log_time_ns: int) -> TextContext:
    return TextContext(stamp_ns=log_time_ns, text=msg.data)


def _ground_truth(msg: Any, log_time_ns: int) -> GroundTruth:
    if len(msg.label_names) != len(msg.labels) or len(msg.extras_keys) != len(msg.extras_values):
        raise DecodeError("GroundTruth parallel arrays (label_names/labels, extras_keys/extras_values) "
                          "differ in length")
    shape = (len(msg.bev_classes), msg.bev_rows, msg.bev_cols)  # [classes, rows, cols]
    if len(msg.bev) != shape[0] * shape[1] * shape[2]:
        raise DecodeError(f"GroundTruth bev {shape} needs {shape[0] * shape[1] * shape[2]} bytes, has {len(msg.bev)}")
    agents = tuple(Agent(id=a.id, class_name=a.class_name, x=a.x, y=a.y, z=a.z, vx=a.vx, vy=a.vy,
                         length=a.length, width=a.width, height=a.height, yaw=a.yaw,
                         visible_camera=a.visible_camera, visible_radar=a.visible_radar) for a in msg.agents)
    return GroundTruth(
        stamp_ns=_stamp_of(msg.header), labels=dict(zip(msg.label_names, msg.labels, strict=True)), agents=agents,
        bev=np.frombuffer(msg.bev, dtype=np.uint8).reshape(shape).copy(), bev_classes=tuple(msg.bev_classes),
        scene_type=msg.scene_type, condition=msg.condition, ego_speed_mps=msg.ego_speed_mps,
        extras=dict(zip(msg.extras_keys, msg.extras_values, strict=True)),
    )


_READERS: dict[str, Converter] = {
    S.COMPRESSED_IMAGE: _compressed_image,
    S.IMAGE: _image,
    S.CAMERA_INFO: _camera_info,
    S.RADAR_TENSOR: _radar_tensor,
    S.POINT_CLOUD2: _radar_detections,
    S.OCCUPANCY_GRID: _occupancy_grid,
    S.STRING: _string,
    S.GROUND_TRUTH: _ground_truth,
}


def converter_for(schema_name: str) -> Converter | None:
    """The function that turns a decoded ROS message of this schema into a fusion-rt message, or None."""
    return _READERS.get(S.normalize_schema_name(schema_name))
