"""Per-modality preprocessing: sensor messages -> the float32 arrays the encoder graphs take.

The single source of truth for both training and the runtime (numpy and OpenCV only, never
torch), so a model sees at deployment exactly what it saw in training. Every function checks its
message and raises `DecodeError` with the reason rather than feeding a graph something odd
(DESIGN.md section 8). The parameters live in `PreprocessConfig`, which travels in the model
package manifest.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
import re
import struct
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

from fusion_rt.errors import ConfigError, DecodeError, UnsupportedMessageError
from fusion_rt.messages import MAP_CODES, CameraFrame, MapRaster, RadarDetections, RadarTensor, TextContext
from fusion_rt.rig import MapGrid, Radar, Rig, is_finite_number

__all__ = [
    "CameraSize",
    "PreprocessConfig",
    "SampleInputs",
    "preprocess_sample",
    "decode_camera",
    "decode_compressed_bgr",
    "image_size",
    "radar_tensor_input",
    "rasterize_detections",
    "detections_to_tensor",
    "EGO_FRAMES",
    "GLOBAL_FRAMES",
    "is_ego_frame",
    "is_radar_frame",
    "DETECTION_CHANNELS",
    "map_input",
    "Vocabulary",
    "tokenize",
    "PAD_ID",
    "UNK_ID",
]

#: Channels `rasterize_detections` produces, in order.
DETECTION_CHANNELS: tuple[str, ...] = ("log_count", "mean_radial_velocity", "mean_rcs")

PAD_ID = 0
UNK_ID = 1
_SPECIAL_TOKENS = ("<pad>", "<unk>")

_RAW_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4}  # alpha is dropped
_COMPRESSED = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"


def _float_tuple(name: str, value, length: int | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{name} must be a sequence of numbers, got {value!r}") from exc
    if length is not None and len(out) != length:
        raise ConfigError(f"{name} must have {length} values, got {value!r}")
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return out


def _int_in(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _positive(name: str, value) -> None:
    if not is_finite_number(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything preprocessing needs, stored in the model package manifest (JSON via to_dict).

    Build it from the sensor rig with `from_rig` so the radar and map grids match the sensors.
    """

    # Camera input, 16:9 like the simulator's 640x360 camera. 144x256 is 0.28x the pixels of the
    # 256x512 baseline (shared/BASELINE.md: the camera CNN was 86% of its 2.4 GFLOP), which keeps a
    # few-minute CPU training run realistic while a car 30 m ahead is still ~10 px wide; 144 and
    # 256 are multiples of 16, so a stride-16 feature map is an exact 9x16 grid of tokens.
    camera_height: int = 144
    camera_width: int = 256
    # ImageNet RGB statistics: standard, and close enough for a network trained from scratch.
    camera_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    camera_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Largest accepted image side, read from the JPEG/PNG header before decoding (decompression
    # bombs: a 20000x20000 header would ask for 1.2 GB before the pixels are even looked at).
    max_image_side: int = 8192
    # Radar tensor channels, picked by name from `RadarTensor.channels`, in this order.
    radar_channels: tuple[str, ...] = ("power_db", "radial_velocity_mps")
    # (range bins, azimuth bins) the radar encoder was built for: `Rig.radar`'s default grid.
    radar_shape: tuple[int, int] = (128, 64)
    # power_db -> (p - offset) / scale. Defaults span a typical 0..40 dB return range; training
    # may fit them to its data and store them here.
    radar_power_db_offset: float = 10.0
    radar_power_db_scale: float = 10.0
    # radial velocity -> v / scale: urban speeds (+-15 m/s) land in about [-1.5, 1.5].
    radar_velocity_scale_mps: float = 10.0
    # Normalized radar values are clipped to [-clip, clip]: an outlier cell cannot dominate a
    # convolution, and int8 calibration gets a bounded input range.
    radar_clip: float = 5.0
    # Non-finite radar cells up to this fraction are masked (set to the normalized 0); more and
    # the frame is rejected as broken. A single bad bin should not drop a whole radar frame.
    radar_max_nonfinite_fraction: float = 0.01
    # Raw radar values (dB, m/s) beyond +-this are no measurement (a corrupted cell, 1e30): they
    # count as non-finite cells (masked, or the frame rejected) instead of being clipped silently.
    radar_max_abs: float = 1e4
    # Append the `DETECTION_CHANNELS` rasterized from a detection list to the radar input.
    radar_use_detections: bool = False
    # Map classes one-hot encoded, in channel order ("unknown" is all-zero, not a channel).
    map_classes: tuple[str, ...] = ("offroad", "sidewalk", "drivable", "crosswalk", "lane_marking")
    # The grid the map encoder sees; rasters of any size, resolution or extent are resampled onto it.
    map_grid: MapGrid = field(default_factory=MapGrid)
    # Text is cut or padded to this many tokens; scene context strings are a handful of words.
    text_max_tokens: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_mean", _float_tuple("camera_mean", self.camera_mean, 3))
        object.__setattr__(self, "camera_std", _float_tuple("camera_std", self.camera_std, 3))
        for name in ("radar_channels", "radar_shape", "map_classes"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        _int_in("max_image_side", self.max_image_side, 16, 65535)
        _int_in("camera_height", self.camera_height, 16, self.max_image_side)
        _int_in("camera_width", self.camera_width, 16, self.max_image_side)
        if any(s <= 0 for s in self.camera_std):
            raise ConfigError(f"camera_std must be positive, got {self.camera_std!r}")
        if not self.radar_channels or not all(isinstance(c, str) and c for c in self.radar_channels):
            raise ConfigError(f"radar_channels must be non-empty names, got {self.radar_channels!r}")
        if len(set(self.radar_channels)) != len(self.radar_channels):
            raise ConfigError(f"radar_channels has duplicates: {self.radar_channels!r}")
        if len(self.radar_shape) != 2:
            raise ConfigError(f"radar_shape must be (range_bins, azimuth_bins), got {self.radar_shape!r}")
        for value in self.radar_shape:
            _int_in("radar_shape entries", value, 4, 4096)
        for name in ("radar_power_db_scale", "radar_velocity_scale_mps", "radar_clip", "radar_max_abs"):
            _positive(name, getattr(self, name))
        if not is_finite_number(self.radar_power_db_offset):
            raise ConfigError(f"radar_power_db_offset must be finite, got {self.radar_power_db_offset!r}")
        if not (isinstance(self.radar_max_nonfinite_fraction, (int, float))
                and 0.0 <= self.radar_max_nonfinite_fraction <= 1.0):
            raise ConfigError("radar_max_nonfinite_fraction must be in [0, 1], "
                              f"got {self.radar_max_nonfinite_fraction!r}")
        if not isinstance(self.radar_use_detections, bool):
            raise ConfigError(f"radar_use_detections must be a bool, got {self.radar_use_detections!r}")
        unknown = [c for c in self.map_classes if c not in MAP_CODES or c == "unknown"]
        if not self.map_classes or unknown or len(set(self.map_classes)) != len(self.map_classes):
            valid = [c for c in MAP_CODES if c != "unknown"]
            raise ConfigError(f"map_classes must be distinct names from {valid}, got {self.map_classes!r}")
        if not isinstance(self.map_grid, MapGrid):
            raise ConfigError(f"map_grid must be a fusion_rt.rig.MapGrid, got {type(self.map_grid).__name__}")
        rows, cols = self.map_grid.shape
        if not (4 <= rows <= 4096 and 4 <= cols <= 4096):
            raise ConfigError(f"map_grid shape must be within [4, 4096] per side, got {(rows, cols)}")
        _int_in("text_max_tokens", self.text_max_tokens, 1, 4096)

    @classmethod
    def from_rig(cls, rig: Rig, **overrides) -> PreprocessConfig:
        """The config whose radar and map grids match `rig`; `overrides` set any other field."""
        base = {"radar_shape": (rig.radar.num_range_bins, rig.radar.num_azimuth_bins), "map_grid": rig.map}
        return cls(**{**base, **overrides})

    @property
    def camera_shape(self) -> tuple[int, int, int]:
        """(3, height, width) of the camera input."""
        return (3, self.camera_height, self.camera_width)

    @property
    def radar_input_channels(self) -> tuple[str, ...]:
        """Names of the radar input's channels, detection channels included when enabled."""
        return self.radar_channels + (DETECTION_CHANNELS if self.radar_use_detections else ())

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """(classes, rows, cols) of the map input."""
        return (len(self.map_classes), *self.map_grid.shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"preprocessing config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown preprocessing config fields {extra}; known: {sorted(known)}")
        kw = dict(d)
        if "map_grid" in kw:
            try:
                if not isinstance(kw["map_grid"], dict):
                    raise TypeError("expected a JSON object")
                kw["map_grid"] = MapGrid(**kw["map_grid"])
            except TypeError as exc:
                raise ConfigError(f"malformed map_grid {kw['map_grid']!r}: {exc}") from exc
        return cls(**kw)


# ---------------------------------------------------------------------------------------- camera

def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first SOF marker of a JPEG stream, without decoding it."""
    n = len(data)
    i = 2
    while i < n:
        if data[i] != 0xFF:
            raise DecodeError(f"corrupt JPEG: expected a marker at byte {i}, found 0x{data[i]:02x}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no payload
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        if i + 2 > n:
            break
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2:
            raise DecodeError(f"corrupt JPEG: segment 0x{marker:02x} has length {length}")
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 7 > n:
                break
            height, width = struct.unpack_from(">HH", data, i + 3)
            return width, height
        i += length
    raise DecodeError("corrupt JPEG: no frame header (SOF) before the end of the data or the first scan")


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise DecodeError("corrupt PNG: missing IHDR header")
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def camera_bytes(data) -> bytes:
    """A camera frame's data as bytes: bytes as they are, a uint8 buffer (a numpy image, a memoryview,
    a bytearray) copied (`len` of a numpy image is its row count: a 640x360x3 frame read as "got 360
    bytes"). DecodeError naming the type for anything else."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, np.ndarray) and data.dtype == np.uint8:
        return data.tobytes()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise DecodeError(f"camera frame data must be bytes or a uint8 buffer, got {type(data).__name__}"
                      + (f" {data.dtype} {data.shape}" if isinstance(data, np.ndarray) else ""))


class CameraSize:
    """The image sizes a rig's camera (`CameraIntrinsics`) sends: its own, and reduced 2, 4 or 8
    times (a driver's downscaled stream, a reduced JPEG decode); the runtime refuses any other, and
    calibration and evaluation take the frames it takes."""

    def __init__(self, intrinsics) -> None:
        self.rig = (int(intrinsics.width), int(intrinsics.height))
        self.sizes = frozenset((-(-self.rig[0] // f), -(-self.rig[1] // f)) for f in (1, 2, 4, 8))

    def check(self, frame: CameraFrame) -> None:
        """DecodeError naming both sizes unless `frame` is one of them (a frame that states no size,
        in an encoding without a header to read, is left to `decode_camera`)."""
        if str(frame.encoding).lower() in ("jpeg", "jpg", "png"):
            _, width, height = image_size(frame.data)
        elif frame.width or frame.height:
            width, height = frame.width, frame.height
        else:
            return
        if (width, height) not in self.sizes:
            raise DecodeError(f"camera image size {width}x{height} differs from the rig's camera "
                              f"{self.rig[0]}x{self.rig[1]}")


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of JPEG or PNG bytes, read from the header without decoding."""
    data = camera_bytes(data)
    if data[:2] == _JPEG_MAGIC:
        return ("jpeg", *_jpeg_size(data))
    if data[:8] == _PNG_MAGIC:
        return ("png", *_png_size(data))
    raise DecodeError(f"not a JPEG or PNG image (first bytes {bytes(data[:8])!r})")


def _check_side(what: str, width: int, height: int, config: PreprocessConfig) -> None:
    limit = config.max_image_side
    if not (1 <= width <= limit and 1 <= height <= limit):
        raise DecodeError(f"{what} size {width}x{height} is outside [1, {limit}] per side; refused before decoding")


def _reduced_factor(width: int, height: int, config: PreprocessConfig) -> int:
    """The largest JPEG DCT scaling factor (1, 2, 4, 8) that still decodes at least the target size."""
    for factor in (8, 4, 2):
        if width // factor >= config.camera_width and height // factor >= config.camera_height:
            return factor
    return 1


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_compressed_bgr(frame: CameraFrame, fmt: str, config: PreprocessConfig) -> np.ndarray:
    """Decode a JPEG/PNG frame to BGR at the reduced resolution `decode_camera` uses (DecodeError if bad)."""
    data = frame.data
    found, width, height = image_size(data)
    if found != fmt:
        raise DecodeError(f"camera frame says encoding {frame.encoding!r} but the data is {found}")
    _check_side(f"{fmt} image", width, height, config)
    if frame.width and frame.height and (frame.width, frame.height) != (width, height):
        raise DecodeError(f"{fmt} header says {width}x{height} but the frame says {frame.width}x{frame.height}")
    # A truncated stream decodes "successfully" into a grey-filled image (libjpeg only warns), so
    # the end markers are checked first.
    if fmt == "jpeg" and data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise DecodeError("corrupt JPEG: truncated (no end-of-image marker)")
    if fmt == "png" and data[-8:-4] != b"IEND":
        raise DecodeError("corrupt PNG: truncated (no IEND chunk)")
    if fmt == "png" and len(data) > 24 and data[24] == 16:  # IHDR bit depth (OpenCV would scale it to 8 bits)
        raise DecodeError("16-bit PNG (a depth or high-dynamic-range image?): a camera frame is 8-bit")
    # Reduced decoding scales in the DCT domain: only JPEG gains from it (OpenCV resizes PNGs after
    # a full decode). EXIF orientation is ignored: the camera geometry is fixed by the rig.
    factor = _reduced_factor(width, height, config) if fmt == "jpeg" else 1
    flags = _REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise DecodeError(f"corrupt {fmt}: {exc}") from exc
    if image is None:
        raise DecodeError(f"corrupt {fmt}: OpenCV could not decode {len(data)} bytes")
    expect = (-(-height // factor), -(-width // factor))
    if image.shape[:2] != expect or image.ndim != 3 or image.shape[2] != 3:
        raise DecodeError(f"{fmt} decoded to shape {image.shape}, expected {expect + (3,)}")
    return image  # BGR


def _decode_raw(frame: CameraFrame, encoding: str, config: PreprocessConfig) -> tuple[np.ndarray, bool]:
    """A raw frame as BGR (or RGB, then True); `encoding` is the frame's, lower-cased."""
    channels = _RAW_CHANNELS[encoding]
    _check_side(f"{frame.encoding} image", frame.width, frame.height, config)
    expected = frame.width * frame.height * channels
    if len(frame.data) != expected:
        raise DecodeError(f"{frame.encoding} frame {frame.width}x{frame.height} needs {expected} bytes, "
                          f"got {len(frame.data)}")
    image = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, channels)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), False
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3]), encoding == "rgba8"
    return image, encoding == "rgb8"


def decode_camera(frame: CameraFrame, config: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a camera frame into the normalized RGB input [3, H, W] float32.

    JPEG/PNG are decoded with OpenCV (JPEG at reduced resolution when the target is at least 2x
    smaller: faster, shared/BASELINE.md), resized with linear interpolation to the configured size
    (the whole frame, so token column j still sees the image's column fraction j), converted to
    RGB and normalized with the configured mean/std. Raw bgr8/rgb8/bgra8/rgba8/mono8 need width and height.
    Writes into `out` ([3, H, W] float32, C-contiguous) when given, allocating nothing else per
    pixel beyond the decoded image. Raises DecodeError for anything that is not a sound image.
    """
    if not isinstance(frame.data, bytes):
        frame = dataclasses.replace(frame, data=camera_bytes(frame.data))
    encoding = frame.encoding.lower()
    if encoding in _COMPRESSED:
        bgr, is_rgb = decode_compressed_bgr(frame, _COMPRESSED[encoding], config), False
    elif encoding in _RAW_CHANNELS:
        bgr, is_rgb = _decode_raw(frame, encoding, config)
    else:
        raise DecodeError(f"unsupported camera encoding {frame.encoding!r}; "
                          f"expected one of {sorted(_COMPRESSED) + sorted(_RAW_CHANNELS)}")
    h, w = config.camera_height, config.camera_width
    if out is None:
        out = np.empty((3, h, w), dtype=np.float32)
    elif out.shape != (3, h, w) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ConfigError(f"out must be a C-contiguous float32 array of shape {(3, h, w)}, "
                          f"got {out.dtype} {out.shape}")
    if bgr.shape[:2] != (h, w):
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    scale, bias = _camera_affine(config)
    order = (0, 1, 2) if is_rgb else (2, 1, 0)  # output channel c reads input channel order[c]
    for c, src in enumerate(order):
        np.multiply(bgr[:, :, src], scale[c], out=out[c], casting="unsafe")
        out[c] += bias[c]
    return out


def _camera_affine(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(x / 255 - mean) / std as x * scale + bias, per RGB channel."""
    std = np.asarray(config.camera_std, dtype=np.float64)
    mean = np.asarray(config.camera_mean, dtype=np.float64)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


# ----------------------------------------------------------------------------------------- radar

def radar_tensor_input(msg: RadarTensor, config: PreprocessConfig, out: np.ndarray | None = None,
                       masked: dict[str, int] | None = None, radar: Radar | None = None) -> np.ndarray:
    """Normalize a range-azimuth radar tensor into the radar input [C, R, A] float32.

    Channels are picked by name in `config.radar_channels` order: power in dB becomes
    (p - offset) / scale, radial velocity v / scale, any other channel passes through; values are
    clipped to +-radar_clip. Non-finite cells, and raw values beyond +-`radar_max_abs`, are masked
    to 0 (the normalized "nothing here") when they are at most `radar_max_nonfinite_fraction` of
    the tensor, and the frame is rejected with DecodeError above that. A tensor whose range or
    azimuth extent is not finite and increasing (a negative range included) is rejected. With
    `radar_use_detections`, `out` has the extra detection channels; this function fills only the
    tensor channels (see `rasterize_detections`). `masked`, when given, receives how many cells were
    masked of each kind: {"nonfinite": n, "out_of_range": n} (only the kinds that occurred).
    With `radar` (the model's rig), the tensor must cover the same range and azimuth within half a
    bin: bins of another radar's geometry would be read as this one's (a return at 2.1 m of a
    0-25 m radar fed to the model as 8.7 m). Each channel is named once.
    """
    data = np.asarray(msg.data)
    if data.ndim != 3:
        raise DecodeError(f"radar tensor must be [channels, range, azimuth], got shape {data.shape}")
    if len(msg.channels) != data.shape[0]:
        raise DecodeError(f"radar tensor has {data.shape[0]} channels but names {len(msg.channels)}: {msg.channels!r}")
    if tuple(data.shape[1:]) != config.radar_shape:
        raise DecodeError(f"radar tensor grid {tuple(data.shape[1:])} differs from the model's {config.radar_shape} "
                          f"(range bins, azimuth bins)")
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype, np.integer):
        raise DecodeError(f"radar tensor dtype must be numeric, got {data.dtype}")
    missing = [c for c in config.radar_channels if c not in msg.channels]
    if missing:
        raise DecodeError(f"radar tensor lacks channels {missing}; it has {list(msg.channels)}")
    extent = (msg.range_min_m, msg.range_max_m, msg.azimuth_min_rad, msg.azimuth_max_rad)
    try:
        r0, r1, a0, a1 = (float(v) for v in extent)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"radar tensor geometry invalid: range and azimuth limits must be numbers, got {extent!r}") \
            from exc
    if not (math.isfinite(r0 + r1 + a0 + a1) and 0.0 <= r0 < r1 and a0 < a1):
        raise DecodeError(f"radar tensor geometry invalid: range [{r0:g}, {r1:g}] m and azimuth [{a0:g}, {a1:g}] rad "
                          f"must be finite with 0 <= range_min_m < range_max_m and azimuth_min_rad < azimuth_max_rad")
    if len(set(msg.channels)) != len(msg.channels):
        raise DecodeError(f"radar tensor names a channel twice in its channels {list(msg.channels)}")
    if radar is not None:
        ours = (radar.range_min_m, radar.range_max_m, -radar.azimuth_max_rad, radar.azimuth_max_rad)
        range_bin, azimuth_bin = radar.range_resolution_m, radar.azimuth_resolution_rad
        tolerance = (range_bin / 2, range_bin / 2, azimuth_bin / 2, azimuth_bin / 2)
        if any(abs(a - b) > tol for a, b, tol in zip((r0, r1, a0, a1), ours, tolerance, strict=True)):
            raise DecodeError(f"radar tensor geometry differs from the model's radar: it covers range [{r0:g}, {r1:g}] "
                              f"m, azimuth [{a0:.4g}, {a1:.4g}] rad; the model's radar [{ours[0]:g}, {ours[1]:g}] m, "
                              f"[{ours[2]:.4g}, {ours[3]:.4g}] rad")
    n_in = len(config.radar_input_channels)
    shape = (n_in, *config.radar_shape)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ConfigError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
    tensor = out[: len(config.radar_channels)]
    bad = np.empty(tensor.shape, dtype=np.bool_)
    for c, name in enumerate(config.radar_channels):
        dst = out[c]
        np.copyto(dst, data[msg.channels.index(name)], casting="unsafe")
        with np.errstate(invalid="ignore"):
            np.greater(np.abs(dst), config.radar_max_abs, out=bad[c])  # +-inf included; NaN compares False
        bad[c] |= np.isnan(dst)
        if name == "power_db":
            dst -= config.radar_power_db_offset
            dst *= 1.0 / config.radar_power_db_scale
        elif name == "radial_velocity_mps":
            dst *= 1.0 / config.radar_velocity_scale_mps
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        fraction = n_bad / tensor.size
        n_nonfinite = int(np.count_nonzero(~np.isfinite(tensor)))
        if fraction > config.radar_max_nonfinite_fraction:
            kinds = [f"{n_nonfinite} non-finite"] if n_nonfinite else []
            kinds += [f"{n_bad - n_nonfinite} out-of-range (beyond +-{config.radar_max_abs:g})"] \
                if n_bad > n_nonfinite else []
            raise DecodeError(f"radar tensor has {' and '.join(kinds)} values ({fraction:.1%}), more than the "
                              f"{config.radar_max_nonfinite_fraction:.1%} that are masked")
        tensor[bad] = 0.0
        if masked is not None:
            counts = {"nonfinite": n_nonfinite, "out_of_range": n_bad - n_nonfinite}
            masked.update({k: v for k, v in counts.items() if v})
    np.clip(tensor, -config.radar_clip, config.radar_clip, out=tensor)
    return out


def rasterize_detections(points: np.ndarray, radar: Radar, config: PreprocessConfig,
                         out: np.ndarray | None = None) -> np.ndarray:
    """Bin a detection list [N, 5] (x, y, z, radial velocity, rcs; radar frame) into the radar grid.

    Returns [3, range_bins, azimuth_bins] float32 with `DETECTION_CHANNELS`: log(1 + count), mean
    radial velocity / velocity scale, and mean RCS / 10 dBsm, 0 where a cell has no detection.
    Range is the 3-D distance, azimuth atan2(y, x) (bin 0 the rightmost, as in RadarTensor).
    Rows with a non-finite position or velocity and points outside the field of view are dropped;
    an unknown (NaN) RCS, as a cloud without an RCS field gives, leaves the detection in and out of
    the RCS mean (0 where no detection of the cell has one). Vectorized with bincount.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 5:
        raise DecodeError(f"radar detections must be [N, 5], got shape {pts.shape}")
    if (radar.num_range_bins, radar.num_azimuth_bins) != config.radar_shape:
        raise ConfigError(f"radar grid {(radar.num_range_bins, radar.num_azimuth_bins)} differs from "
                          f"radar_shape {config.radar_shape}")
    n_r, n_a = config.radar_shape
    shape = (len(DETECTION_CHANNELS), n_r, n_a)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ConfigError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
    pts = pts[np.isfinite(pts[:, :4]).all(axis=1)]
    rng = np.sqrt(pts[:, 0] ** 2 + pts[:, 1] ** 2 + pts[:, 2] ** 2)
    az = np.arctan2(pts[:, 1], pts[:, 0])
    r_idx = np.floor((rng - radar.range_min_m) / radar.range_resolution_m).astype(np.int64)
    a_idx = np.floor((az + radar.azimuth_max_rad) / radar.azimuth_resolution_rad).astype(np.int64)
    inside = (r_idx >= 0) & (r_idx < n_r) & (a_idx >= 0) & (a_idx < n_a)
    cell = r_idx[inside] * n_a + a_idx[inside]
    size = n_r * n_a
    count = np.bincount(cell, minlength=size)
    denom = np.maximum(count, 1)
    vel = np.bincount(cell, weights=pts[inside, 3], minlength=size) / denom
    rcs_known = np.isfinite(pts[inside, 4])
    rcs = np.bincount(cell[rcs_known], weights=pts[inside, 4][rcs_known], minlength=size) / np.maximum(
        np.bincount(cell[rcs_known], minlength=size), 1)
    out[0] = np.log1p(count).reshape(n_r, n_a)
    out[1] = (vel / config.radar_velocity_scale_mps).reshape(n_r, n_a)
    out[2] = (rcs / 10.0).reshape(n_r, n_a)
    np.clip(out, -config.radar_clip, config.radar_clip, out=out)
    return out


#: frame_ids of the ego frame (REP-103 base_link) that detections and maps may be published in.
#: base_footprint (REP-105: base_link projected onto the ground) has base_link's x and y; the rig
#: gives no height of base_link above the ground, so a z in base_footprint is read as if it were
#: base_link's (as if base_link were on the ground): off by that height, which changes a detection's
#: 3-D range from the radar by at most as much (about 3 mm at 16 m for 0.3 m).
EGO_FRAMES: frozenset[str] = frozenset({"base_link", "/base_link", "base_footprint", "/base_footprint", "ego",
                                        "vehicle"})

#: frame_ids of world-fixed frames (REP-105 map, odom; world, earth): data in them need the ego
#: pose at its stamp to reach the ego frame, a transform fusion-rt does not apply.
GLOBAL_FRAMES: frozenset[str] = frozenset({"map", "odom", "world", "earth"})


def _frame_name(frame_id: str) -> str:
    """A frame_id without a leading "/" (ROS 1 style) and without a namespace ("robot1/base_link")."""
    return frame_id.strip().rsplit("/", 1)[-1]


def is_radar_frame(frame_id: str, radar: Radar) -> bool:
    """Whether `frame_id` names the rig's radar frame (with or without a leading "/" or a namespace)."""
    return _frame_name(frame_id) == _frame_name(radar.frame_id)


def is_ego_frame(frame_id: str) -> bool:
    """Whether `frame_id` names the ego frame (`EGO_FRAMES`, with or without a leading "/" or a
    namespace such as "robot1/base_link")."""
    return frame_id in EGO_FRAMES or _frame_name(frame_id) in EGO_FRAMES


def detections_to_tensor(det: RadarDetections, radar: Radar, config: PreprocessConfig) -> RadarTensor:
    """A radar detection list (any PointCloud2 layout, e.g. nuScenes) as the range-azimuth tensor the
    runtime's radar encoder takes.

    An approximation, for radars that only publish detections: detections are binned on the
    package's radar grid (`rasterize_detections`); "power_db" is set so that it normalizes to
    log(1 + detections in the cell) and "radial_velocity_mps" is the cell's mean radial velocity.
    A model trained on full tensors sees a sparser input than it was trained on. Detections in the
    ego frame (`frame_id` base_link or base_footprint, `EGO_FRAMES`, as many drivers publish them)
    are moved into the radar's frame by the rig's radar pose first (binned as they were, a point
    20 m ahead of the car read 20.3 m from a radar mounted 3.7 m forward instead of 16.3 m).
    Detections in a world-fixed frame (`GLOBAL_FRAMES`: odom, map; they need the ego pose) are
    refused with UnsupportedMessageError (a DecodeError) naming it. Any other frame (the rig's
    `radar.frame_id`, an empty one, a driver's own name for its sensor such as "radar" or "ars408")
    is taken as the radar's: replay warns when it is not the rig's radar frame, since another
    sensor's frame would put the detections in the wrong cells. A measured radial velocity is the
    radar's own and is kept; one computed from velocity components (`det.velocity`, vx/vy in the ego
    frame) is computed again along the line of sight from the radar.
    """
    points = det.points
    frame = det.frame_id if isinstance(det.frame_id, str) else ""
    if _frame_name(frame) in GLOBAL_FRAMES:
        ego = ", ".join(sorted(f for f in EGO_FRAMES if not f.startswith("/")))
        raise UnsupportedMessageError(f"radar detections in frame {frame!r} (a world-fixed frame, which needs the ego "
                                      f"pose): only the ego frame ({ego}) or the radar's own frame can be placed")
    if is_ego_frame(frame):
        points = np.array(points, dtype=np.float64, copy=True)
        if points.ndim == 2 and points.shape[1] >= 3:
            points[:, :3] = radar.pose.from_ego(points[:, :3])
            velocity = det.velocity
            if velocity is not None and points.shape[1] >= 4 and np.shape(velocity) == (len(points), 2):
                v = np.zeros((len(points), 3))
                v[:, :2] = velocity
                v = v @ radar.pose.rotation()  # into the radar's axes (a direction: no translation)
                r = np.hypot(points[:, 0], points[:, 1])
                dot = points[:, 0] * v[:, 0] + points[:, 1] * v[:, 1]
                points[:, 3] = np.divide(dot, r, out=np.zeros_like(r), where=r > 0)
    raster = rasterize_detections(points, radar, config)  # [3, R, A]: log count, v / scale, rcs / 10
    data = np.zeros((len(config.radar_channels), *config.radar_shape), dtype=np.float32)
    for c, name in enumerate(config.radar_channels):
        if name == "power_db":
            data[c] = raster[0] * config.radar_power_db_scale + config.radar_power_db_offset
        elif name == "radial_velocity_mps":
            data[c] = raster[1] * config.radar_velocity_scale_mps
    return RadarTensor(stamp_ns=det.stamp_ns, data=data, channels=config.radar_channels,
                       range_min_m=radar.range_min_m, range_max_m=radar.range_max_m,
                       azimuth_min_rad=-radar.azimuth_max_rad, azimuth_max_rad=radar.azimuth_max_rad,
                       frame_id=det.frame_id)


# ------------------------------------------------------------------------------------------- map

_MAX_FOREIGN_CODES = 0.5  # share of a raster's labelled cells that may hold codes outside MAP_CODES


def map_input(msg: MapRaster, config: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """One-hot map input [K, rows, cols] float32 on `config.map_grid`, classes `config.map_classes`.

    The raster is resampled by its own geometry (cell size, far-left corner), so rasters of any
    size, resolution or extent are accepted: each target cell averages the one-hot of up to 4x4
    sample points inside it (nearest source cell each), so downsampling yields class fractions
    and an aligned raster of the same grid yields the exact one-hot. Cells outside the raster,
    "unknown" (-1) and codes that are not in MAP_CODES are all-zero; a raster where most sampled
    cells hold codes outside MAP_CODES is refused (DecodeError): it follows another convention.

    Two more kinds of raster are refused (DecodeError) rather than fused as a class map, both what a
    robot's bag carries as its OccupancyGrid: one whose `frame_id` is not the ego frame
    (`is_ego_frame`; an empty frame_id is taken as the ego's) -- a map_server / slam_toolbox map in
    "map", a nav2 costmap in "odom" or "map" is a world-fixed map that needs the ego pose at its
    stamp, which fusion-rt does not apply -- and one whose sampled cells hold only 0 and 100 (and
    -1): free/occupied, a ROS occupancy map (its free space read as off-road, its obstacles as lane
    markings). A raster of 0 (and -1) alone stays accepted (all off-road, or all free: the values
    cannot tell).
    """
    frame = msg.frame_id if isinstance(msg.frame_id, str) else ""
    if frame.strip() and not is_ego_frame(frame):
        kind = "a world-fixed frame" if _frame_name(frame) in GLOBAL_FRAMES else "not the ego frame"
        raise DecodeError(f"map raster in frame {frame!r} ({kind}): the map input is a class map of MAP_CODES in "
                          f"the ego frame (base_link); a map in another frame (a ROS occupancy map or costmap) "
                          f"needs the ego pose at its stamp, which is not applied")
    grid = np.asarray(msg.grid)
    if grid.ndim != 2 or grid.size == 0:
        raise DecodeError(f"map raster must be a non-empty 2-D grid, got shape {grid.shape}")
    if not np.issubdtype(grid.dtype, np.integer):
        raise DecodeError(f"map raster must hold integer codes, got dtype {grid.dtype}")
    if max(grid.shape) > 16384:
        raise DecodeError(f"map raster {grid.shape} is larger than 16384 cells per side")
    for name in ("cell_m", "x_max_m", "y_max_m"):
        value = getattr(msg, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise DecodeError(f"map raster {name} must be a finite number, got {value!r}")
    if not msg.cell_m >= 1e-6:  # a map of micrometre (or denormal) cells is no map: the ratio overflows
        raise DecodeError(f"map raster cell_m must be at least 1e-6 m, got {msg.cell_m!r}")
    target = config.map_grid
    rows, cols = target.shape
    k = len(config.map_classes)
    if out is None:
        out = np.empty((k, rows, cols), dtype=np.float32)
    elif out.shape != (k, rows, cols) or out.dtype != np.float32:
        raise ConfigError(f"out must be float32 of shape {(k, rows, cols)}, got {out.dtype} {out.shape}")

    # Class index (k = "none") of a source code, through a lookup table over the non-negative
    # codes; applied only to the sampled cells, never to the whole (possibly huge) raster.
    lut = np.full(256, k, dtype=np.int64)
    for i, name in enumerate(config.map_classes):
        lut[MAP_CODES[name]] = i

    sub = int(min(4, max(1, math.ceil(target.cell_m / msg.cell_m - 1e-9))))
    offsets = (np.arange(sub) + 0.5) / sub * target.cell_m  # within a target cell, from its far/left edge
    x = target.x_max_m - (np.arange(rows)[:, None] * target.cell_m + offsets[None, :])  # [rows, sub]
    y = target.y_max_m - (np.arange(cols)[:, None] * target.cell_m + offsets[None, :])  # [cols, sub]
    with np.errstate(over="ignore", invalid="ignore"):
        fr = np.floor((msg.x_max_m - x) / msg.cell_m)
        fc = np.floor((msg.y_max_m - y) / msg.cell_m)
    if not ((np.abs(fr) < 2.0**62).all() and (np.abs(fc) < 2.0**62).all()):  # NaN and inf fail too
        raise DecodeError(f"map raster geometry out of range: x_max_m {msg.x_max_m!r}, y_max_m {msg.y_max_m!r}, "
                          f"cell_m {msg.cell_m!r} put the ego grid beyond any index")
    sr, sc = fr.astype(np.int64), fc.astype(np.int64)
    # [rows, sub, 1, 1] x [1, 1, cols, sub] -> every sample point of every target cell
    rr = sr[:, :, None, None]
    cc = sc[None, None, :, :]
    valid = (rr >= 0) & (rr < grid.shape[0]) & (cc >= 0) & (cc < grid.shape[1])
    code = grid[np.clip(rr, 0, grid.shape[0] - 1), np.clip(cc, 0, grid.shape[1] - 1)].astype(np.int64)
    # A raster in another convention (class indices 0-4, occupancy percentages) has mostly codes that
    # are no MAP_CODES value: read as all-zero cells it was fused as a present, empty map.
    labelled = valid & (code != MAP_CODES["unknown"])
    foreign = labelled & ~np.isin(code, list(MAP_CODES.values()))
    if foreign.sum() > _MAX_FOREIGN_CODES * max(1, int(labelled.sum())):
        found = sorted({int(c) for c in np.unique(code[foreign])[:8]})
        raise DecodeError(f"map raster: {foreign.sum() / labelled.sum():.0%} of its sampled cells hold codes that are "
                          f"not MAP_CODES ({found}...; expected {sorted(set(MAP_CODES.values()))}): another convention")
    has_free = bool((labelled & (code == 0)).any())
    has_occupied = bool((labelled & (code == 100)).any())
    if has_free and has_occupied and not (labelled & (code != 0) & (code != 100)).any():
        raise DecodeError("map raster holds only free/occupied values (0, 100 and -1 unknown): a ROS occupancy map, "
                          "not a class map of MAP_CODES")
    known = valid & (code >= 0) & (code <= 255)
    cls = np.where(known, lut[np.clip(code, 0, 255)], k)
    # cls: [rows, sub, cols, sub] -> per target cell, count samples per class with one bincount
    cell = (np.arange(rows)[:, None, None, None] * cols + np.arange(cols)[None, None, :, None])
    counts = np.bincount((cell * (k + 1) + cls).ravel(), minlength=rows * cols * (k + 1))
    counts = counts.reshape(rows, cols, k + 1)[:, :, :k]
    np.divide(counts.transpose(2, 0, 1), sub * sub, out=out, casting="unsafe")
    return out


# ------------------------------------------------------------------------------------------ text

_TOKEN_RE = re.compile(r"[^\W_]+")  # runs of letters and digits, any script


_CHARS_PER_TOKEN = 256  # with a token limit, only this many characters per token are read


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """Case-folded words: "School zone, 30 km/h" -> ["school", "zone", "30", "km", "h"]. Text is
    NFKC-normalized first (full-width "ＳＣＨＯＯＬ ３０" reads as "school 30"), and a word in another
    script stays one word ("naïve", "straße"), an unknown word to an ASCII vocabulary, never ASCII
    fragments that could alias vocabulary words. With `limit`, the first `limit` words, read from a
    bounded prefix: a megabyte-long message (NFKC expands some characters 18-fold) costs no more
    than a short one."""
    if limit is None:
        return _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).casefold())
    prefix = unicodedata.normalize("NFKC", text[: limit * _CHARS_PER_TOKEN]).casefold()
    return [m.group() for m in itertools.islice(_TOKEN_RE.finditer(prefix), limit)]


class Vocabulary:
    """Word -> id mapping for scene text, saved with the model as JSON (never pickle).

    Id 0 pads, id 1 stands for any word not in the vocabulary. `encode` gives a fixed-length int64
    array, so the text encoder graph has a static shape.
    """

    def __init__(self, words: Iterable[str], max_tokens: int = 16) -> None:
        words = list(words)
        _int_in("max_tokens", max_tokens, 1, 4096)
        if any(not isinstance(w, str) or tokenize(w) != [w] for w in words):
            bad = [w for w in words if not isinstance(w, str) or tokenize(w) != [w]][:5]
            raise ConfigError(f"vocabulary words must be lowercase alphanumeric tokens, got {bad!r}")
        if len(set(words)) != len(words):
            raise ConfigError("vocabulary words must be distinct")
        self.words: tuple[str, ...] = tuple(words)
        self.max_tokens = max_tokens
        self._ids = {w: i + len(_SPECIAL_TOKENS) for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], max_tokens: int = 16, min_count: int = 1,
              max_size: int = 4096) -> Vocabulary:
        """The words of `texts` seen at least `min_count` times, most frequent first (ties by word)."""
        _int_in("min_count", min_count, 1, 1 << 30)
        _int_in("max_size", max_size, 1, 1 << 20)
        counts = Counter(tok for text in texts for tok in tokenize(text))
        ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_size], max_tokens=max_tokens)

    def __len__(self) -> int:
        """Number of ids, the two special ones included (the embedding table size)."""
        return len(self.words) + len(_SPECIAL_TOKENS)

    def encode(self, text: str, out: np.ndarray | None = None) -> np.ndarray:
        """int64 [max_tokens]: word ids, cut at max_tokens, padded with PAD_ID."""
        if out is None:
            out = np.empty(self.max_tokens, dtype=np.int64)
        elif out.shape != (self.max_tokens,) or out.dtype != np.int64:
            raise ConfigError(f"out must be int64 of shape ({self.max_tokens},), got {out.dtype} {out.shape}")
        out.fill(PAD_ID)
        ids = [self._ids.get(tok, UNK_ID) for tok in tokenize(text, self.max_tokens)]
        out[: len(ids)] = ids
        return out

    def text_input(self, msg: TextContext, out: np.ndarray | None = None) -> np.ndarray:
        """The text encoder input for a TextContext message."""
        if not isinstance(msg.text, str):
            raise DecodeError(f"text context must be a string, got {type(msg.text).__name__}")
        return self.encode(msg.text, out)

    def to_dict(self) -> dict:
        return {"format": "fusion-rt-vocabulary", "version": 1, "max_tokens": self.max_tokens,
                "special": list(_SPECIAL_TOKENS), "words": list(self.words)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        if not isinstance(d, dict) or d.get("format") != "fusion-rt-vocabulary":
            raise ConfigError("not a fusion-rt vocabulary (missing format: fusion-rt-vocabulary)")
        if d.get("version") != 1:
            raise ConfigError(f"unsupported vocabulary version {d.get('version')!r}; this fusion-rt reads 1")
        if d.get("special", list(_SPECIAL_TOKENS)) != list(_SPECIAL_TOKENS):
            raise ConfigError(f"vocabulary special tokens {d.get('special')!r} differ from {list(_SPECIAL_TOKENS)}")
        words = d.get("words")
        if not isinstance(words, list):
            raise ConfigError("vocabulary 'words' must be a list")
        return cls(words, max_tokens=d.get("max_tokens", 16))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSON: too deep, huge ints
            raise ConfigError(f"cannot read vocabulary {path}: {type(exc).__name__}: {exc}") from exc
        return cls.from_dict(d)


@dataclass(frozen=True, eq=False)
class SampleInputs:
    """A camera-triggered sample as model inputs, with the runtime's rules for bad data applied.

    A camera frame that does not decode rejects the whole sample (`camera` is None); a radar tensor
    or map that does not decode marks that modality absent (None), as the runtime masks it.
    `reasons` names the modalities whose message was present but did not decode, with why.
    """

    camera: np.ndarray | None  # [3, H, W] float32
    radar: np.ndarray | None  # [C, R, A] float32
    map: np.ndarray | None  # [K, H, W] float32
    text: str | None
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # modality -> the error's message

    @property
    def rejected(self) -> tuple[str, ...]:
        """The modalities whose message was present but did not decode."""
        return tuple(self.reasons)


def preprocess_sample(sample, config: PreprocessConfig, rig_radar: Radar | None = None,
                      camera_size: CameraSize | None = None) -> SampleInputs:
    """Preprocess a `fusion_rt.logs.Sample` (training, calibration and parity data all go through here);
    with `rig_radar` (the model's), a radar tensor of another geometry is rejected, as the runtime does,
    and the sample of a log whose radar publishes only detections (`Sample.radar_from_detections`)
    takes them binned on that radar's grid, as replay feeds them (`detections_to_tensor`); with
    `camera_size` (the model's rig camera), an image of another size is rejected, as the runtime does."""
    reasons = {}
    try:
        if camera_size is not None:
            camera_size.check(sample.camera)
        camera = decode_camera(sample.camera, config)
    except DecodeError as exc:
        camera = None
        reasons["camera"] = str(exc)
    radar = grid = None
    tensor = sample.radar_tensor
    if (camera is not None and tensor is None and rig_radar is not None and sample.radar_detections is not None
            and sample.radar_from_detections):
        try:
            tensor = detections_to_tensor(sample.radar_detections, rig_radar, config)
        except (DecodeError, ConfigError) as exc:
            reasons["radar"] = str(exc)
    if camera is not None and tensor is not None:
        try:
            radar = radar_tensor_input(tensor, config, radar=rig_radar)
        except DecodeError as exc:
            reasons["radar"] = str(exc)
    if camera is not None and sample.map is not None:
        try:
            grid = map_input(sample.map, config)
        except DecodeError as exc:
            reasons["map"] = str(exc)
    text = sample.text.text if sample.text is not None and isinstance(sample.text.text, str) else None
    return SampleInputs(camera=camera, radar=radar, map=grid, text=text, reasons=reasons)

