"""Preprocessing: camera decoding and its refusals, radar normalization and rasterization, map
resampling, the text vocabulary, and the config's JSON round-trip."""

from __future__ import annotations

import json
import math
import struct
import zlib

import cv2
import numpy as np
import pytest

from fusion_rt.errors import ConfigError, DecodeError
from fusion_rt.messages import MAP_CODES, CameraFrame, MapRaster, RadarTensor, TextContext
from fusion_rt.preprocess import (
    DETECTION_CHANNELS,
    PAD_ID,
    UNK_ID,
    PreprocessConfig,
    Vocabulary,
    decode_camera,
    image_size,
    map_input,
    radar_tensor_input,
    rasterize_detections,
    tokenize,
)
from fusion_rt.rig import MapGrid, Rig

CFG = PreprocessConfig()


def _test_image(width: int = 640, height: int = 360) -> np.ndarray:
    """A BGR image with smooth gradients (JPEG-friendly) and a distinct colour per channel."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 200)], axis=2).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _expected(image_bgr: np.ndarray, cfg: PreprocessConfig = CFG) -> np.ndarray:
    small = cv2.resize(image_bgr, (cfg.camera_width, cfg.camera_height), interpolation=cv2.INTER_LINEAR)
    rgb = small[:, :, ::-1].astype(np.float32) / 255.0
    return ((rgb - np.float32(cfg.camera_mean)) / np.float32(cfg.camera_std)).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------- config

def test_config_json_round_trip():
    cfg = PreprocessConfig.from_rig(Rig.default(), text_max_tokens=12, radar_use_detections=True)
    again = PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.camera_shape == (3, 144, 256)
    assert cfg.map_shape == (5, 64, 64)
    assert cfg.radar_input_channels == cfg.radar_channels + DETECTION_CHANNELS


@pytest.mark.parametrize(
    ("field", "value"),
    [("camera_width", 0), ("camera_std", (0.2, 0.0, 0.2)), ("camera_mean", (0.5, 0.5)),
     ("radar_channels", ()), ("radar_shape", (128,)), ("radar_power_db_scale", -1.0),
     ("radar_max_nonfinite_fraction", 1.5), ("map_classes", ("drivable", "lava")),
     ("map_classes", ("unknown",)), ("text_max_tokens", 0)],
)
def test_config_rejects_bad_values_naming_them(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        PreprocessConfig(**{field: value})


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="camera_heigth"):
        PreprocessConfig.from_dict({"camera_heigth": 100})


# ---------------------------------------------------------------------------------------- camera

def test_jpeg_decode_matches_reference_and_uses_out_buffer():
    image = _test_image()
    frame = CameraFrame(stamp_ns=1, data=_jpeg(image))
    out = np.full(CFG.camera_shape, np.nan, dtype=np.float32)
    result = decode_camera(frame, CFG, out=out)
    assert result is out
    assert result.dtype == np.float32 and result.shape == (3, 144, 256)
    # JPEG loss and the reduced (DCT-scaled) decode: close to the exact pipeline, not equal.
    assert np.abs(result - _expected(image)).mean() < 0.05
    # channel order: R (from the image's third channel, constant 200) is channel 0
    r = (200 / 255 - CFG.camera_mean[0]) / CFG.camera_std[0]
    assert abs(float(result[0].mean()) - r) < 0.05


def test_png_and_raw_encodings_agree():
    image = _test_image(320, 180)
    cfg = PreprocessConfig()
    png = decode_camera(CameraFrame(stamp_ns=1, data=_png(image), encoding="png"), cfg)
    bgr = decode_camera(CameraFrame(stamp_ns=1, data=image.tobytes(), encoding="bgr8", width=320, height=180), cfg)
    rgb = decode_camera(CameraFrame(stamp_ns=1, data=image[:, :, ::-1].tobytes(), encoding="rgb8", width=320,
                                    height=180), cfg)
    np.testing.assert_allclose(png, _expected(image), atol=1e-5)
    np.testing.assert_array_equal(png, bgr)
    np.testing.assert_array_equal(bgr, rgb)
    # encodings are case-insensitive, raw ones included (an upper-case RGB8 is still RGB)
    upper = decode_camera(CameraFrame(stamp_ns=1, data=image[:, :, ::-1].tobytes(), encoding="RGB8", width=320,
                                      height=180), cfg)
    np.testing.assert_array_equal(upper, rgb)
    # four-channel raw images (a CARLA bridge's bgra8) drop their alpha
    alpha = np.full((180, 320, 1), 7, np.uint8)
    bgra = decode_camera(CameraFrame(stamp_ns=1, data=np.concatenate([image, alpha], 2).tobytes(), encoding="bgra8",
                                     width=320, height=180), cfg)
    rgba = decode_camera(CameraFrame(stamp_ns=1, data=np.concatenate([image[:, :, ::-1], alpha], 2).tobytes(),
                                     encoding="rgba8", width=320, height=180), cfg)
    np.testing.assert_array_equal(bgra, bgr)
    np.testing.assert_array_equal(rgba, bgr)
    gray = decode_camera(CameraFrame(stamp_ns=1, data=image[:, :, 0].tobytes(), encoding="mono8", width=320,
                                     height=180), cfg)
    # grey replicated to three channels: equal before normalization
    raw = gray * np.float32(cfg.camera_std)[:, None, None] + np.float32(cfg.camera_mean)[:, None, None]
    np.testing.assert_allclose(raw[0], raw[2], atol=1e-5)


def test_raw_frame_of_wrong_size_is_rejected():
    with pytest.raises(DecodeError, match="needs 172800 bytes"):
        decode_camera(CameraFrame(stamp_ns=1, data=b"\0" * 100, encoding="bgr8", width=320, height=180), CFG)
    with pytest.raises(DecodeError, match="unsupported camera encoding"):
        decode_camera(CameraFrame(stamp_ns=1, data=b"\0", encoding="yuv422"), CFG)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "scan_garbled"])
def test_corrupt_jpeg_raises_decode_error(damage):
    data = _jpeg(_test_image())
    if damage == "garbage":
        data = b"\xff\xd8" + bytes(range(256)) * 8
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    else:  # a header that claims a size, then a scan full of nonsense
        data = data[:200] + b"\xff\x00" * 3 + b"\xff\xd9"
    with pytest.raises(DecodeError):
        decode_camera(CameraFrame(stamp_ns=1, data=data), CFG)


def test_encoding_must_match_data():
    with pytest.raises(DecodeError, match="says encoding 'png' but the data is jpeg"):
        decode_camera(CameraFrame(stamp_ns=1, data=_jpeg(_test_image()), encoding="png"), CFG)


def _jpeg_header(width: int, height: int) -> bytes:
    """SOI + a baseline SOF0 frame header claiming width x height (no pixel data)."""
    # length(2) precision(1) height(2) width(2) components(1) + 3 bytes per component
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def test_header_dimensions_are_read_without_decoding():
    assert image_size(_jpeg(_test_image(320, 180))) == ("jpeg", 320, 180)
    assert image_size(_png(_test_image(320, 180))) == ("png", 320, 180)
    assert image_size(_jpeg_header(20000, 20000)) == ("jpeg", 20000, 20000)


@pytest.mark.parametrize(("make", "encoding"), [(_jpeg_header, "jpeg"), (_png_header, "png")])
def test_decompression_bomb_header_is_refused_before_decoding(make, encoding, monkeypatch):
    def _no_decode(*args, **kwargs):
        raise AssertionError("imdecode must not be called for a refused header")

    monkeypatch.setattr(cv2, "imdecode", _no_decode)
    with pytest.raises(DecodeError, match="20000x20000 is outside"):
        decode_camera(CameraFrame(stamp_ns=1, data=make(20000, 20000), encoding=encoding), CFG)


def test_reduced_decode_is_used_for_large_jpegs(monkeypatch):
    seen = []
    real = cv2.imdecode

    def _spy(buf, flags):
        seen.append(flags)
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", _spy)
    decode_camera(CameraFrame(stamp_ns=1, data=_jpeg(_test_image(1280, 720))), CFG)  # 5x larger: 4x reduction
    decode_camera(CameraFrame(stamp_ns=1, data=_jpeg(_test_image(320, 180))), CFG)  # < 2x: full decode
    assert seen[0] & ~cv2.IMREAD_IGNORE_ORIENTATION == cv2.IMREAD_REDUCED_COLOR_4
    assert seen[1] & ~cv2.IMREAD_IGNORE_ORIENTATION == cv2.IMREAD_COLOR


# ----------------------------------------------------------------------------------------- radar

def _radar_msg(data: np.ndarray, channels=("power_db", "radial_velocity_mps")) -> RadarTensor:
    return RadarTensor(stamp_ns=1, data=data, channels=channels, range_min_m=0.5, range_max_m=100.0,
                       azimuth_min_rad=-math.pi / 3, azimuth_max_rad=math.pi / 3)


def test_radar_tensor_normalization_and_channel_selection():
    rng = np.random.default_rng(0)
    power = rng.uniform(0, 40, (128, 64)).astype(np.float32)
    vel = rng.uniform(-20, 20, (128, 64)).astype(np.float32)
    extra = np.zeros((128, 64), np.float32)
    # channels in another order plus one the model ignores
    msg = _radar_msg(np.stack([vel, extra, power]), ("radial_velocity_mps", "snr", "power_db"))
    x = radar_tensor_input(msg, CFG)
    assert x.shape == (2, 128, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], (power - 10.0) / 10.0, rtol=1e-6)
    np.testing.assert_allclose(x[1], vel / 10.0, rtol=1e-6)


def test_radar_tensor_masks_few_nonfinite_cells_and_rejects_many():
    data = np.zeros((2, 128, 64), np.float32)
    data[0, 3, 4] = np.nan
    data[1, 5, 6] = np.inf
    data[0, 7, 8] = 1e30  # finite but no measurement (beyond radar_max_abs): masked like a non-finite cell
    data[0, 9, 9] = 200.0  # a strong but real return: clipped
    x = radar_tensor_input(_radar_msg(data), CFG)
    assert np.isfinite(x).all()
    assert x[0, 3, 4] == 0.0 and x[1, 5, 6] == 0.0 and x[0, 7, 8] == 0.0 and x[0, 9, 9] == CFG.radar_clip
    data[0, :20] = np.nan  # 20 of 128 rows of one channel: 7.8% > 1%
    with pytest.raises(DecodeError, match="non-finite"):
        radar_tensor_input(_radar_msg(data), CFG)


def test_radar_tensor_shape_and_channel_checks():
    with pytest.raises(DecodeError, match="differs from the model"):
        radar_tensor_input(_radar_msg(np.zeros((2, 64, 64), np.float32)), CFG)
    with pytest.raises(DecodeError, match="lacks channels"):
        radar_tensor_input(_radar_msg(np.zeros((2, 128, 64), np.float32), ("power_db", "snr")), CFG)


def test_rasterize_detections_matches_a_python_loop():
    rig = Rig.default()
    radar = rig.radar
    rng = np.random.default_rng(1)
    n = 500
    r = rng.uniform(0, 110, n)
    az = rng.uniform(-1.2, 1.2, n)
    pts = np.stack([r * np.cos(az), r * np.sin(az), np.zeros(n), rng.normal(0, 5, n), rng.normal(5, 3, n)], 1)
    pts[:3] = pts[10:13]  # duplicated cells
    pts[20, 3] = np.nan  # dropped
    pts[30:60, 4] = np.nan  # RCS unknown: counted, left out of the RCS mean
    got = rasterize_detections(pts.astype(np.float32), radar, CFG)

    count = np.zeros(CFG.radar_shape)
    vel = np.zeros(CFG.radar_shape)
    rcs = np.zeros(CFG.radar_shape)
    rcs_count = np.zeros(CFG.radar_shape)
    for p in pts.astype(np.float32).astype(np.float64):
        if not np.isfinite(p[:4]).all():
            continue
        ri = math.floor((math.sqrt(p[0] ** 2 + p[1] ** 2 + p[2] ** 2) - radar.range_min_m) / radar.range_resolution_m)
        ai = math.floor((math.atan2(p[1], p[0]) + radar.azimuth_max_rad) / radar.azimuth_resolution_rad)
        if 0 <= ri < radar.num_range_bins and 0 <= ai < radar.num_azimuth_bins:
            count[ri, ai] += 1
            vel[ri, ai] += p[3]
            if np.isfinite(p[4]):
                rcs[ri, ai] += p[4]
                rcs_count[ri, ai] += 1
    nz = count > 0
    assert nz.sum() > 100 and (nz & (rcs_count == 0)).any()
    np.testing.assert_allclose(got[0], np.log1p(count), rtol=1e-6)
    np.testing.assert_allclose(got[1][nz], np.clip(vel[nz] / count[nz] / 10.0, -5, 5), rtol=1e-5, atol=1e-6)
    known = rcs_count > 0
    np.testing.assert_allclose(got[2][known], np.clip(rcs[known] / rcs_count[known] / 10.0, -5, 5), rtol=1e-5,
                               atol=1e-6)
    assert (got[1:, ~nz] == 0).all() and (got[2, ~known] == 0).all()


# ------------------------------------------------------------------------------------------- map

def _raster(grid: MapGrid, fill: str = "drivable") -> tuple[MapRaster, np.ndarray]:
    rows, cols = grid.shape
    g = np.full((rows, cols), MAP_CODES[fill], dtype=np.int8)
    return MapRaster(stamp_ns=1, grid=g, cell_m=grid.cell_m, x_max_m=grid.x_max_m, y_max_m=grid.y_max_m), g


def test_map_one_hot_on_the_same_grid_is_exact():
    rng = np.random.default_rng(2)
    codes = np.array(list(MAP_CODES.values()), dtype=np.int8)
    grid = codes[rng.integers(0, len(codes), CFG.map_grid.shape)]
    msg = MapRaster(stamp_ns=1, grid=grid, cell_m=CFG.map_grid.cell_m, x_max_m=CFG.map_grid.x_max_m,
                    y_max_m=CFG.map_grid.y_max_m)
    x = map_input(msg, CFG)
    assert x.shape == (5, 64, 64) and x.dtype == np.float32
    for k, name in enumerate(CFG.map_classes):
        np.testing.assert_array_equal(x[k], (grid == MAP_CODES[name]).astype(np.float32))
    np.testing.assert_array_equal(x.sum(0), (grid != -1).astype(np.float32))


def test_map_of_other_size_and_resolution_is_resampled():
    # A 4x finer raster covering the same area, left half sidewalk, right half drivable.
    fine = MapGrid(cell_m=CFG.map_grid.cell_m / 4)
    msg, g = _raster(fine)
    g[:, : g.shape[1] // 2] = MAP_CODES["sidewalk"]
    x = map_input(msg, CFG)
    assert x.shape == (5, 64, 64)
    np.testing.assert_array_equal(x[CFG.map_classes.index("sidewalk"), :, :32], 1.0)
    np.testing.assert_array_equal(x[CFG.map_classes.index("drivable"), :, 32:], 1.0)
    # A small, coarse raster covering only the area ahead: outside cells are all-zero, inside one-hot.
    coarse = MapGrid(x_min_m=0.0, x_max_m=60.0, y_min_m=-30.0, y_max_m=30.0, cell_m=3.0)
    msg, _ = _raster(coarse, "crosswalk")
    x = map_input(msg, CFG)
    xs, ys = CFG.map_grid.cell_centres()
    inside = ((xs > 0.75) & (xs < 59.25))[:, None] & ((ys > -29.25) & (ys < 29.25))[None, :]
    k = CFG.map_classes.index("crosswalk")
    np.testing.assert_array_equal(x[k][inside], 1.0)
    np.testing.assert_array_equal(x.sum(0)[~((xs >= -0.75) & (xs <= 60.75))[:, None].repeat(64, 1)], 0.0)


def test_map_rejects_malformed_rasters():
    with pytest.raises(DecodeError, match="2-D"):
        map_input(MapRaster(stamp_ns=1, grid=np.zeros(5, np.int8), cell_m=1.0, x_max_m=1.0, y_max_m=1.0), CFG)
    with pytest.raises(DecodeError, match="cell_m"):
        map_input(MapRaster(stamp_ns=1, grid=np.zeros((5, 5), np.int8), cell_m=0.0, x_max_m=1.0, y_max_m=1.0), CFG)
    with pytest.raises(DecodeError, match="integer"):
        map_input(MapRaster(stamp_ns=1, grid=np.zeros((5, 5), np.float32), cell_m=1.0, x_max_m=1.0, y_max_m=1.0),
                  CFG)
    # finite but absurd geometry: refused by name (no silent int overflow, no OverflowError)
    for cell_m, x_max, needle in ((1e-300, 1.0, "at least 1e-6"), (1e-310, 1.0, "at least 1e-6"),
                                  (1.0, 1e300, "out of range.*cell_m")):
        with pytest.raises(DecodeError, match=needle):
            map_input(MapRaster(stamp_ns=1, grid=np.zeros((5, 5), np.int8), cell_m=cell_m, x_max_m=x_max,
                                y_max_m=1.0), CFG)
    # numpy scalars are numbers like any other
    grid, _ = _raster(CFG.map_grid)
    as_f32 = MapRaster(stamp_ns=1, grid=grid.grid, cell_m=np.float32(grid.cell_m), x_max_m=np.float64(grid.x_max_m),
                       y_max_m=grid.y_max_m)
    np.testing.assert_array_equal(map_input(as_f32, CFG), map_input(grid, CFG))


# ------------------------------------------------------------------------------------------ text

def test_tokenize_and_vocabulary_encode():
    assert tokenize("School zone, RAIN; 30 km/h") == ["school", "zone", "rain", "30", "km", "h"]
    # other scripts stay whole words (unknown to an ASCII vocabulary), never ASCII fragments
    assert tokenize("naïve Straße") == ["naïve", "strasse"]
    assert tokenize("ＳＣＨＯＯＬ zone ３０") == ["school", "zone", "30"]  # full-width forms, NFKC
    vocab = Vocabulary(["na", "ve", "rain", "school"], max_tokens=4)
    assert vocab.encode("naïve rain").tolist() == [UNK_ID, vocab._ids["rain"], 0, 0]
    vocab = Vocabulary.build(["school zone rain", "rain at night", "rain"], max_tokens=5)
    assert vocab.words[0] == "rain"  # most frequent first
    assert len(vocab) == len(vocab.words) + 2
    ids = vocab.encode("Rain, fog and school")
    assert ids.dtype == np.int64 and ids.shape == (5,)
    rain, school = vocab.words.index("rain") + 2, vocab.words.index("school") + 2
    assert ids.tolist() == [rain, UNK_ID, UNK_ID, school, PAD_ID]
    assert vocab.encode("rain " * 20).tolist() == [rain] * 5  # cut at max_tokens
    assert vocab.text_input(TextContext(stamp_ns=1, text="")).tolist() == [PAD_ID] * 5
    # a huge message costs what its first words cost: NFKC expands U+FDFA 18-fold (4 words each)
    import tracemalloc

    huge = "rain " * 5 + "\ufdfa" * 2_000_000
    tracemalloc.start()
    assert vocab.encode(huge).tolist() == [rain] * 5
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak  # the whole text normalized and split: ~800 MB
    assert tokenize("a " * 40, limit=3) == ["a", "a", "a"]


def test_vocabulary_json_round_trip(tmp_path):
    vocab = Vocabulary.build(["highway fog", "urban night 30 km h"], max_tokens=8)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    again = Vocabulary.load(path)
    assert again.words == vocab.words and again.max_tokens == 8
    assert again.encode("fog on highway").tolist() == vocab.encode("fog on highway").tolist()
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a fusion-rt vocabulary"):
        Vocabulary.load(path)
    with pytest.raises(ConfigError, match="lowercase alphanumeric"):
        Vocabulary(["Fog"])


def test_radar_tensor_of_another_radar_geometry_is_refused():
    """Only bin counts were compared: a 0-25 m radar's tensor went to the model as if it covered
    0.5-100 m (a return at 2.1 m read as 8.7 m). With the model's radar, the extents must match
    within half a bin; a channel named twice is refused too."""
    import dataclasses

    from fusion_rt.rig import Rig

    radar = Rig.default().radar
    config = PreprocessConfig.from_rig(Rig.default())
    data = np.zeros((2, *config.radar_shape), np.float32)
    msg = dataclasses.replace(_radar_msg(data), range_min_m=0.5, range_max_m=100.0)
    radar_tensor_input(msg, config, radar=radar)  # the rig's own geometry
    half_bin = (100.0 - 0.5) / radar.num_range_bins / 2
    radar_tensor_input(dataclasses.replace(msg, range_max_m=100.0 + 0.9 * half_bin), config, radar=radar)
    for other in ({"range_max_m": 25.0, "range_min_m": 0.0}, {"azimuth_min_rad": 0.0}):
        with pytest.raises(DecodeError, match="geometry differs from the model's radar"):
            radar_tensor_input(dataclasses.replace(msg, **other), config, radar=radar)
    radar_tensor_input(dataclasses.replace(msg, range_max_m=25.0), config)  # no rig given: not checked
    with pytest.raises(DecodeError, match="names a channel twice"):
        radar_tensor_input(_radar_msg(np.zeros((3, *config.radar_shape), np.float32),
                                      channels=("power_db", "radial_velocity_mps", "power_db")), config)


def test_camera_data_may_be_a_uint8_buffer():
    # A numpy image as CameraFrame.data (LogWriter writes it right) was measured with len(): its row
    # count ("bgr8 frame 640x360 needs 691200 bytes, got 360"); a JPEG as an array or memoryview crashed.
    import cv2

    from fusion_rt.errors import DecodeError
    from fusion_rt.messages import CameraFrame
    from fusion_rt.preprocess import PreprocessConfig, decode_camera

    config = PreprocessConfig(camera_height=36, camera_width=64)
    image = np.random.default_rng(0).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    raw = decode_camera(CameraFrame(stamp_ns=1, data=image.tobytes(), encoding="bgr8", width=128, height=72), config)
    got = decode_camera(CameraFrame(stamp_ns=1, data=image, encoding="bgr8", width=128, height=72), config)
    np.testing.assert_array_equal(got, raw)
    jpeg = cv2.imencode(".jpg", image)[1]  # a uint8 array, as OpenCV returns it
    want = decode_camera(CameraFrame(stamp_ns=1, data=jpeg.tobytes()), config)
    for data in (jpeg, memoryview(jpeg.tobytes())):
        np.testing.assert_array_equal(decode_camera(CameraFrame(stamp_ns=1, data=data), config), want)
    with pytest.raises(DecodeError, match="must be bytes or a uint8 buffer, got ndarray float64"):
        decode_camera(CameraFrame(stamp_ns=1, data=image.astype(np.float64), encoding="bgr8", width=128, height=72),
                      config)


def test_a_map_in_another_convention_is_refused():
    # Class indices 0-4 instead of MAP_CODES 0/25/50/80/100 read as an all-zero map, fused as present.
    from fusion_rt.errors import DecodeError
    from fusion_rt.messages import MAP_CODES, MapRaster
    from fusion_rt.preprocess import PreprocessConfig, map_input

    config = PreprocessConfig()
    codes = np.array([v for v in MAP_CODES.values() if v >= 0], dtype=np.int8)
    grid = np.random.default_rng(0).choice(codes, size=(128, 128)).astype(np.int8)
    geometry = {"cell_m": 0.5, "x_max_m": 51.2, "y_max_m": 32.0}
    assert map_input(MapRaster(stamp_ns=1, grid=grid, **geometry), config).sum() > 0
    grid[:3] = 7  # a few foreign cells: read as empty there, as before
    map_input(MapRaster(stamp_ns=1, grid=grid, **geometry), config)
    with pytest.raises(DecodeError, match="not MAP_CODES"):
        map_input(MapRaster(stamp_ns=1, grid=(grid // 25).astype(np.int8), **geometry), config)


def _slam_map(frame_id: str) -> MapRaster:
    """A map_server / slam_toolbox style map around the ego: free 0, walls 100, unknown -1."""
    g = np.zeros((128, 128), np.int8)
    g[:, :10] = -1
    g[40:44, :] = 100
    return MapRaster(stamp_ns=1, grid=g, cell_m=0.5, x_max_m=51.2, y_max_m=32.0, frame_id=frame_id)


def test_a_ros_occupancy_map_or_a_map_in_a_world_frame_is_refused():
    # Free 0 / occupied 100 are MAP_CODES values (off-road, lane marking): a slam_toolbox map or a nav2
    # costmap was fused as a class map, free space read as off-road everywhere.
    codes = np.array([v for v in MAP_CODES.values() if v >= 0], dtype=np.int8)
    classes = np.random.default_rng(0).choice(codes, size=(128, 128)).astype(np.int8)
    geometry = {"cell_m": 0.5, "x_max_m": 51.2, "y_max_m": 32.0}
    for frame in ("map", "odom", "world", "/map", "robot1/odom"):
        with pytest.raises(DecodeError, match=f"frame '{frame}' \\(a world-fixed frame\\)"):
            map_input(MapRaster(stamp_ns=1, grid=classes, frame_id=frame, **geometry), CFG)
    with pytest.raises(DecodeError, match="frame 'radar_front' \\(not the ego frame\\)"):
        map_input(MapRaster(stamp_ns=1, grid=classes, frame_id="radar_front", **geometry), CFG)
    for frame in ("base_link", "/base_link", "base_footprint", "robot1/base_link", ""):  # "" unset: taken as ego
        assert map_input(MapRaster(stamp_ns=1, grid=classes, frame_id=frame, **geometry), CFG).sum() > 0
    # values alone: only free/occupied (and unknown) is an occupancy map, whatever the frame says
    with pytest.raises(DecodeError, match="only free/occupied values.*a ROS occupancy map, not a class map of MAP_CO"):
        map_input(_slam_map("base_link"), CFG)
    with pytest.raises(DecodeError, match="frame 'map'"):
        map_input(_slam_map("map"), CFG)
    # a class map of off-road and drivable with lane markings is one; all off-road cannot be told apart
    two = np.where(np.arange(128)[None, :] < 64, MAP_CODES["drivable"], MAP_CODES["offroad"]).repeat(128, 0)
    two[:, 60] = MAP_CODES["lane_marking"]
    assert map_input(MapRaster(stamp_ns=1, grid=two.astype(np.int8), **geometry), CFG).sum() > 0
    x = map_input(MapRaster(stamp_ns=1, grid=np.zeros((128, 128), np.int8), **geometry), CFG)
    offroad = CFG.map_classes.index("offroad")
    assert x[offroad].sum() > 0 and not np.delete(x, offroad, axis=0).any()


def test_radar_detections_in_base_footprint_are_ego_and_other_frames_are_refused():
    from fusion_rt.messages import RadarDetections
    from fusion_rt.preprocess import detections_to_tensor

    rig = Rig.default()
    point = np.array([[20.0, 0.0, 0.5, 5.0, 10.0]], np.float32)  # 20 m ahead of the car

    def binned(frame_id: str) -> np.ndarray:
        return detections_to_tensor(RadarDetections(stamp_ns=1, points=point, frame_id=frame_id), rig.radar,
                                    CFG).data

    ego, own = binned("base_link"), binned(rig.radar.frame_id)
    assert not np.array_equal(ego, own)  # moved by the radar pose (3.7 m forward)
    for frame in ("base_footprint", "/base_footprint", "robot1/base_link"):  # same x/y as base_link
        np.testing.assert_array_equal(binned(frame), ego)
    for frame in ("", "/" + rig.radar.frame_id):  # no frame_id set, or ROS 1 style: the radar's
        np.testing.assert_array_equal(binned(frame), own)
    for frame in ("odom", "map", "/odom"):  # world-fixed: they need the ego pose
        with pytest.raises(DecodeError, match=f"frame '{frame}' \\(a world-fixed frame"):
            binned(frame)
    # a driver's own name for its radar is taken as the radar's (replay warns that it is not the rig's name)
    for frame in ("radar", "ars408_link", "radar_rear"):
        np.testing.assert_array_equal(binned(frame), own)


def test_a_16_bit_png_is_no_camera_frame():
    """A depth image saved as a 16-bit PNG decoded "successfully" (OpenCV scales it to 8 bits) and ran
    through the camera encoder when pushed straight into the runtime; logs already refused it."""
    depth = (np.arange(320 * 180, dtype=np.uint16).reshape(180, 320) * 3)
    ok, png16 = cv2.imencode(".png", depth)
    assert ok and png16.tobytes()[24] == 16
    with pytest.raises(DecodeError, match="16-bit PNG"):
        decode_camera(CameraFrame(stamp_ns=1, data=png16.tobytes(), encoding="png"), CFG)
    eight = decode_camera(CameraFrame(stamp_ns=1, data=_png(_test_image(320, 180)), encoding="png"), CFG)
    assert eight.shape == (3, CFG.camera_height, CFG.camera_width)  # 8-bit PNGs as before
