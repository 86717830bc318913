"""Training and evaluation data: simulated drives -> MCAP logs -> preprocessed arrays in memory.

The path a sample takes is the deployment path: the simulator's messages are recorded to MCAP,
read back with `LogDataset` (camera-triggered, latest-within-max-age matching of the other
streams) and preprocessed with the very functions of `fusion_rt.preprocess` the runtime calls.
Only the storage differs: camera inputs are kept as float16 (values within [-2.2, 2.7] keep
~1e-3 precision, well under one 8-bit grey level, 0.017 after normalization) and map inputs as
float16 (fractions of 1/16, exact), which halves the memory of a training set.

Logs are cached by their drive settings; preprocessed splits in an ``.npz`` keyed by a hash of the
data and preprocessing configs (`np.load(..., allow_pickle=False)`: strings are stored as fixed
width unicode arrays, never objects).

The cache may be shared by runs at the same time (two `fusion-rt train --cache C`): every file is
written under a temporary name of its own beside its destination and renamed into place, so a
reader only ever finds complete files, and a run renaming its copy over another's complete copy
of the same entry changes nothing. Each cached log has a checksum file (`NAME.mcap.json`: the
drive, its size and sha256), checked before the log is read; a log that fails it (truncated,
corrupted, recorded for another drive, or older than the checksums) is recorded again, and an
array file that does not load is rebuilt, each said through `note`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from fusion_rt.errors import ConfigError, LogError
from fusion_rt.export.configs import DataConfig, DriveSpec
from fusion_rt.messages import MODALITIES, RadarTensor
from fusion_rt.outputs import atomic_output, write_text
from fusion_rt.package import sha256_file
from fusion_rt.preprocess import PreprocessConfig, Vocabulary, preprocess_sample
from fusion_rt.rig import CLASS_NAMES, BevGrid, Radar

__all__ = ["Split", "LoadedData", "SCENE_LABELS", "default_cache_dir", "drive_log_path", "record_drives",
           "fit_radar_normalization", "read_logs", "load_data", "CACHE_VERSION"]

#: Scene labels, in model output order (the same tuple as fusion_rt.export.models.SCENE_LABELS,
#: repeated so that data handling does not import torch).
SCENE_LABELS: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist", "hazard")

#: Bump when the meaning of cached arrays changes, so stale caches are never read.
#: 2: BEV truth mapped to the model's classes by name, bev_known; 3: built only from verified logs
#: (arrays built from a truncated cached log were kept under the normal key)
CACHE_VERSION = 3

ProgressFn = Callable[[str, int, int], None]  # (stage description, done, total)
NoteFn = Callable[[str], None]  # what the cache repaired (a log recorded again, an array file rebuilt)

_LOG_CHECK_FORMAT = "fusion-rt.cached-log"


def _log_check_path(log: Path) -> Path:
    return log.with_name(f"{log.name}.json")


def _cached_log_problem(log: Path, drive: dict) -> str | None:
    """Why the cached `log` cannot be reused for `drive` (DriveConfig as JSON), or None."""
    try:
        check = json.loads(_log_check_path(log).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "it has no checksum file (recorded before checksums, or interrupted)"
    except (OSError, ValueError) as exc:
        return f"its checksum file is unreadable ({type(exc).__name__})"
    if not isinstance(check, dict) or check.get("format") != _LOG_CHECK_FORMAT:
        return "its checksum file is malformed"
    if check.get("drive") != drive:
        return "it was recorded for another drive"
    size = log.stat().st_size
    if check.get("bytes") != size:
        return f"it is {size} bytes, {check.get('bytes')} when recorded (truncated or overwritten)"
    if check.get("sha256") != sha256_file(log):
        return "its sha256 differs from the recorded one (corrupted)"
    return None


def _skipped(issues: Sequence) -> list:
    """The issues that cost records: those of `NOTE_KINDS` (a schema assumed, a message out of order)
    skip nothing, as replay counts them."""
    from fusion_rt.logs.reader import NOTE_KINDS

    return [issue for issue in issues if issue.kind not in NOTE_KINDS]


def _refuse_damaged(path, issues: Sequence) -> None:
    """ConfigError naming a cached log that read with damaged records (cached logs must be whole)."""
    issues = _skipped(issues)
    if issues:
        first = issues[0]
        raise ConfigError(f"cached log {str(path)!r} is damaged: {len(issues)} record(s) skipped (first: "
                          f"{first.kind} at offset {first.offset}: {first.detail}); delete it to record it again")


def default_cache_dir() -> Path:
    """Where simulated logs and preprocessed arrays are cached: $XDG_CACHE_HOME/fusion-rt (~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fusion-rt"


@dataclass
class Split:
    """Preprocessed samples of one split, as parallel arrays over N samples."""

    camera: np.ndarray  # [N, 3, H, W] float16 normalized RGB (float32 when read for evaluation)
    radar: np.ndarray  # [N, C, R, A] float32 normalized range-azimuth tensor (0 where absent)
    map: np.ndarray  # [N, K, rows, cols] float16 one-hot map (0 where absent)
    text: np.ndarray  # [N] unicode scene text ("" where absent)
    present: np.ndarray  # [N, 4] bool: modality available for the frame, MODALITIES order
    labels: np.ndarray  # [N, L] uint8 scene labels, SCENE_LABELS order
    bev: np.ndarray  # [N, classes, rows, cols] uint8 BEV occupancy, classes in the model's order
    bev_known: np.ndarray  # [N, classes] bool: the frame's truth has the class (False: 0 plane, not scored)
    condition: np.ndarray  # [N] unicode: day | night | fog | rain ("" for a frame without ground truth)
    scene_type: np.ndarray  # [N] unicode: urban | highway | school_zone | construction ("" likewise)
    log_index: np.ndarray  # [N] int32: which log the sample came from
    stamp_ns: np.ndarray  # [N] int64 camera stamp

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def text_ids(self, vocab: Vocabulary) -> np.ndarray:
        """[N, max_tokens] int64 word ids through `vocab` (empty text is all padding)."""
        out = np.zeros((len(self), vocab.max_tokens), dtype=np.int64)
        for i, text in enumerate(self.text):
            vocab.encode(str(text), out[i])
        return out

    def save(self, path: Path, **extra: np.ndarray) -> None:
        """Write the split (and `extra` arrays) to `path` atomically, under a temporary name of this
        writer's own (a concurrent run may be saving the same cache entry)."""
        path = Path(path)
        with atomic_output(path) as tmp, open(tmp, "xb") as out:
            np.savez(out, **{f.name: getattr(self, f.name) for f in fields(self)}, **extra)

    @classmethod
    def load(cls, path: Path) -> tuple[Split, dict[str, np.ndarray]]:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # empty (EOFError), truncated, not a zip, object arrays (refused)...
            raise ConfigError(f"cache file {path} is damaged ({type(exc).__name__}: {exc}); delete it to "
                              f"rebuild") from exc
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ConfigError(f"cache file {path} lacks arrays {missing}; delete it to rebuild")
        return cls(**{n: arrays.pop(n) for n in names}), arrays


@dataclass
class LoadedData:
    """What training needs: both splits, the fitted preprocessing config and the vocabulary."""

    train: Split
    val: Split
    preprocess: PreprocessConfig
    vocab: Vocabulary
    log_paths: dict[str, list[str]]  # split -> cached MCAP files


def drive_log_path(drive: DriveSpec, camera_size: tuple[int, int], jpeg_quality: int, cache_dir: Path) -> Path:
    """The cache file of a drive: named by every setting that changes its bytes (the length
    exactly, as `repr` writes the float: 3000.0 and 2999.996 s are two logs)."""
    from fusion_rt.sim import SIM_VERSION

    w, h = camera_size
    scene = drive.scene_type or "any"
    return (Path(cache_dir) / "logs" / f"drive-sim{SIM_VERSION}-s{drive.seed}-{drive.conditions}-{scene}-"
                                       f"{float(drive.seconds)!r}s-{w}x{h}-q{jpeg_quality}.mcap")


def record_drives(drives: Sequence[DriveSpec], camera_size: tuple[int, int], jpeg_quality: int, cache_dir: Path,
                  progress: ProgressFn | None = None, note: NoteFn | None = None,
                  verify: bool = True) -> list[Path]:
    """Simulate and record each drive not already in the cache; returns the log paths in order.

    With `verify`, a cached log is reused only when its checksum file vouches for it (this drive,
    this size and sha256); otherwise it is recorded again and `note` told why. Without it (the
    logs will not be read: their arrays are cached), a present log is taken as it is.
    """
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    paths = [drive_log_path(d, camera_size, jpeg_quality, cache_dir) for d in drives]
    for i, (drive, path) in enumerate(zip(drives, paths, strict=True)):
        if progress:
            progress("simulating drives", i, len(drives))
        config = DriveConfig(seconds=drive.seconds, seed=drive.seed, conditions=drive.conditions,
                             camera_size=tuple(camera_size), scene_type=drive.scene_type, jpeg_quality=jpeg_quality)
        described = json.loads(json.dumps(asdict(config)))
        if path.is_file():
            if not verify:
                continue
            problem = _cached_log_problem(path, described)
            if problem is None:
                continue
            if note:
                note(f"cached log {path} cannot be reused: {problem}; recording it again")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:  # a name of this run's own: never half a log, nor another run's
            summary = record_drive(config, tmp)
            check = {"format": _LOG_CHECK_FORMAT, "version": 1, "drive": described, "bytes": tmp.stat().st_size,
                     "sha256": sha256_file(tmp), "messages": sum(summary.counts.values())}
        # The checksum goes in place after its log: a reader in between finds none and records the
        # drive again (the same bytes), never a checksum vouching for another log.
        write_text(_log_check_path(path), json.dumps(check, indent=1) + "\n")
    if progress:
        progress("simulating drives", len(drives), len(drives))
    return paths


def fit_radar_normalization(paths: Sequence[Path], stride: int = 4, strict: bool = False) -> tuple[float, float]:
    """(offset, scale) of the radar power channel, from every `stride`-th radar scan of `paths`.

    offset = median power (the noise floor, where almost every cell lies); scale = (99.9th
    percentile - median) / 4, so the strongest 0.1% of cells (the targets) land at about 4 and
    only the very strongest reach the +-5 clip, keeping the RCS contrast between a truck and a
    pedestrian that a mean/std normalization (std dominated by noise) would clip away.

    With `strict` (cached logs, which must be whole), a log read with damaged records is a
    ConfigError naming it.
    """
    from fusion_rt.logs import LogReader
    from fusion_rt.logs.schemas import DEFAULT_TOPICS

    samples = []
    for path in paths:
        with LogReader(path) as reader:
            for k, item in enumerate(reader.messages(topics=[DEFAULT_TOPICS[RadarTensor]])):
                msg = item.message
                if k % stride or not isinstance(msg, RadarTensor) or "power_db" not in msg.channels:
                    continue
                power = np.asarray(msg.data[msg.channels.index("power_db")], dtype=np.float32)
                samples.append(power[np.isfinite(power)][::7])  # a fixed thinning: plenty for percentiles
            if strict:
                _refuse_damaged(path, reader.issues)
    if not samples:
        raise LogError(f"no radar tensors with a power_db channel in {[str(p) for p in paths]}: cannot fit "
                       "the radar normalization")
    values = np.concatenate(samples)
    median = float(np.median(values))
    top = float(np.percentile(values, 99.9))
    scale = max((top - median) / 4.0, 1e-3)
    return round(median, 4), round(scale, 4)


def _bev_truth(gt, classes: Sequence[str], shape: tuple[int, int], path,
               other_grid_unscored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The truth planes of `gt` in the order of `classes`, matched by name as replay does: a class
    the truth lacks gets a zero plane marked unknown (not scored). A truth on another grid is a
    LogError, or with `other_grid_unscored` zero planes all unknown (BEV not scored, as replay does)."""
    truth = np.asarray(gt.bev, dtype=np.uint8)
    if truth.ndim != 3 or truth.shape[0] != len(gt.bev_classes):
        raise LogError(f"ground truth in {path} at stamp {gt.stamp_ns}: BEV of shape {truth.shape} for "
                       f"{len(gt.bev_classes)} classes {list(gt.bev_classes)}; expected one plane per class")
    if truth.shape[1:] != tuple(shape) and other_grid_unscored:
        return np.zeros((len(classes), *shape), dtype=np.uint8), np.zeros(len(classes), dtype=bool)
    if truth.shape[1:] != tuple(shape):
        raise LogError(f"ground truth in {path} at stamp {gt.stamp_ns} is on a {truth.shape[1]}x{truth.shape[2]} "
                       f"BEV grid; the model expects {shape[0]}x{shape[1]}")
    index = [gt.bev_classes.index(c) if c in gt.bev_classes else -1 for c in classes]
    known = np.array([i >= 0 for i in index], dtype=bool)
    bev = np.zeros((len(classes), *shape), dtype=np.uint8)
    bev[known] = truth[[i for i in index if i >= 0]]
    return bev, known


def read_logs(paths: Sequence[Path | str], preprocess: PreprocessConfig, frame_stride: int = 1,
              progress: ProgressFn | None = None, require_truth: bool = True,
              bev_classes: Sequence[str] = CLASS_NAMES,
              bev_shape: tuple[int, int] | None = None,
              topics: Mapping[str, str] | None = None, strict: bool = False,
              max_age_ns: Mapping[str, int | None] | None = None,
              rig_radar: Radar | None = None, camera_dtype=np.float16,
              bev_other_grid_unscored: bool = False, camera_size=None,
              bev_unscored_logs: Collection[int] = ()) -> tuple[Split, dict[str, int]]:
    """Read logs through `LogDataset` and preprocess every `frame_stride`-th camera frame.

    `max_age_ns` (LogDataset's limits; a package's `max_age_ns` to match its runtime) and
    `rig_radar` (the model's radar: tensors of another geometry are rejected, and a radar that
    publishes only detections is binned on its grid, as replay does) and `camera_size` (a
    `preprocess.CameraSize`: images of another size are rejected, as the runtime rejects them) are
    for evaluating a package;
    `camera_dtype` float32 keeps the camera input exactly as the runtime computes it (training
    stores float16: half the memory).

    With `require_truth` (training, evaluation), frames without ground truth are skipped and a log
    with none at all is an error. Without it (model inputs only: export parity, calibration),
    every frame is kept; unlabelled ones get zero labels and BEV and an empty condition and
    scene type. A frame whose camera image does not decode is
    skipped, as the runtime rejects it; a radar tensor or map that does not decode marks that
    modality absent, as the runtime masks it. Returns the split and counts of what was skipped.

    The BEV truth is laid out for a model predicting `bev_classes` on a `bev_shape` grid (default:
    the rig's, `BevGrid().shape`): planes are matched by name through the truth's own
    `bev_classes`, as replay does; a class the truth lacks is a zero plane with `bev_known` False
    (left out of the IoU, as replay leaves it), and a truth on another grid is a LogError, or with
    `bev_other_grid_unscored` (evaluating a package) all unknown, counted in `bev_other_grid`, as are
    the frames of the logs `bev_unscored_logs` (indices) names (their rig puts truth on another grid).

    Damaged records are skipped and counted (`skipped_records`), as for any field log; with
    `strict` (cached logs, which must be whole) a log with any is a ConfigError naming it.
    """
    from fusion_rt.logs import LogDataset

    pre = preprocess
    rows = {name: [] for name in ("camera", "radar", "map", "text", "present", "labels", "bev", "bev_known",
                                  "condition", "scene_type", "log_index", "stamp_ns")}
    counts = {"frames": 0, "no_ground_truth": 0, "camera_rejected": 0, "radar_rejected": 0, "map_rejected": 0,
              "skipped_records": 0, "bev_other_grid": 0}
    radar_zero = np.zeros((len(pre.radar_input_channels), *pre.radar_shape), dtype=np.float32)
    map_zero = np.zeros(pre.map_shape, dtype=np.float16)
    classes = tuple(bev_classes)
    bev_grid = tuple(bev_shape) if bev_shape is not None else BevGrid().shape
    no_bev = np.zeros((len(classes), *bev_grid), dtype=np.uint8)
    first_camera_reason = ""
    for li, path in enumerate(paths):
        if not Path(path).exists():
            raise LogError(f"log {str(path)!r} does not exist")
        if progress:
            progress("reading logs", li, len(paths))
        with_truth = 0
        eligible = 0  # frames the stride counts: every frame, or with require_truth the labelled ones
        dataset = LogDataset(path, topics=topics, max_age_ns=max_age_ns)
        for sample in dataset:
            counts["frames"] += 1
            gt = sample.ground_truth
            if gt is None:
                counts["no_ground_truth"] += 1
                if require_truth:
                    continue
            else:
                with_truth += 1
            eligible += 1
            if (eligible - 1) % frame_stride:  # (a stride over every frame could land on unlabelled ones only)
                continue
            inputs = preprocess_sample(sample, pre, rig_radar, camera_size)
            for m in inputs.rejected:
                counts[f"{m}_rejected"] += 1
            first_camera_reason = first_camera_reason or inputs.reasons.get("camera", "")
            if inputs.camera is None:
                continue
            camera, text = inputs.camera.astype(camera_dtype, copy=False), inputs.text
            has_radar, has_map = inputs.radar is not None, inputs.map is not None
            radar = inputs.radar if has_radar else radar_zero
            grid = inputs.map.astype(np.float16) if has_map else map_zero
            if gt is not None:
                missing = [c for c in SCENE_LABELS if c not in gt.labels]
                if missing:
                    raise LogError(f"ground truth in {path} lacks scene labels {missing}")
                if li in bev_unscored_logs:
                    bev, known = no_bev, np.zeros(len(classes), dtype=bool)
                else:
                    bev, known = _bev_truth(gt, classes, bev_grid, path, bev_other_grid_unscored)
                if li in bev_unscored_logs or np.asarray(gt.bev).shape[1:] != bev_grid:
                    counts["bev_other_grid"] += 1
            rows["camera"].append(camera)
            rows["radar"].append(radar)
            rows["map"].append(grid)
            rows["text"].append(text or "")
            rows["present"].append((True, has_radar, has_map, text is not None))
            if gt is not None:
                rows["labels"].append([int(gt.labels[c]) for c in SCENE_LABELS])
                rows["bev"].append(bev)
                rows["bev_known"].append(known)
                rows["condition"].append(gt.condition)
                rows["scene_type"].append(gt.scene_type)
            else:  # kept only when require_truth is False (model inputs for export parity, calibration)
                rows["labels"].append([0] * len(SCENE_LABELS))
                rows["bev"].append(no_bev)
                rows["bev_known"].append(np.zeros(len(classes), dtype=bool))
                rows["condition"].append("")
                rows["scene_type"].append("")
            rows["log_index"].append(li)
            rows["stamp_ns"].append(sample.stamp_ns)
        skipped = _skipped([issue for issues in dataset.issues.values() for issue in issues])
        if strict:
            _refuse_damaged(path, skipped)
        counts["skipped_records"] += len(skipped)  # damaged records, reported
        if require_truth and with_truth == 0:
            raise LogError(f"log {str(path)!r} has no ground truth for any camera frame; evaluation and training "
                           "need labelled logs (e.g. from 'fusion-rt simulate')")
    if progress:
        progress("reading logs", len(paths), len(paths))
    if not rows["labels"]:
        why = f": {counts['camera_rejected']} camera frames rejected ({first_camera_reason})"
        raise LogError(f"no usable samples in {[str(p) for p in paths]}{why if first_camera_reason else ''}")
    assert len(MODALITIES) == 4 and MODALITIES[0] == "camera"  # the present tuple above follows MODALITIES
    split = Split(
        camera=np.stack(rows["camera"]), radar=np.stack(rows["radar"]), map=np.stack(rows["map"]),
        text=np.array(rows["text"], dtype=str), present=np.array(rows["present"], dtype=bool),
        labels=np.array(rows["labels"], dtype=np.uint8), bev=np.stack(rows["bev"]),
        bev_known=np.array(rows["bev_known"], dtype=bool),
        condition=np.array(rows["condition"], dtype=str), scene_type=np.array(rows["scene_type"], dtype=str),
        log_index=np.array(rows["log_index"], dtype=np.int32), stamp_ns=np.array(rows["stamp_ns"], dtype=np.int64))
    return split, counts


def _cached_split(path: Path, note: NoteFn | None, *needed: str) -> tuple[Split, dict[str, np.ndarray]] | None:
    """The split cached at `path` with its `needed` extra arrays; None when there is none, or when
    it does not load (then `note` is told, and the caller rebuilds it)."""
    if not path.is_file():
        return None
    try:
        split, extra = Split.load(path)
        missing = [n for n in needed if n not in extra]
        if missing:
            raise ConfigError(f"cache file {path} lacks {missing}")
    except ConfigError as exc:
        if note:
            note(f"{str(exc).removesuffix('; delete it to rebuild')}; rebuilding it")
        return None
    return split, extra


def load_data(config: DataConfig, base_preprocess: PreprocessConfig, cache_dir: Path | None = None,
              progress: ProgressFn | None = None, note: NoteFn | None = None) -> LoadedData:
    """Record (or reuse) the drives of `config`, fit the radar normalization on the training logs,
    and return both splits preprocessed, with the vocabulary built from the training texts.

    Cached arrays are reused when they load; cached logs that are about to be read are verified
    first (see `record_drives`). What the cache repaired is told to `note`; a cached log that
    still reads with damaged records is a ConfigError naming it.
    """
    from fusion_rt.sim import SIM_VERSION

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    array_dir = cache_dir / "arrays"
    array_dir.mkdir(parents=True, exist_ok=True)
    norm = ("radar_power_db_offset", "radar_power_db_scale")

    key = config.digest(base_preprocess.to_dict(), {"cache_version": CACHE_VERSION, "sim_version": SIM_VERSION})
    train_file = array_dir / f"train-{key}.npz"
    cached = _cached_split(train_file, note, *norm)
    # logs are verified (their sha256) only when they will be read: a warm cache stays cheap
    train_paths = record_drives(config.train_drives, config.camera_size, config.jpeg_quality, cache_dir, progress,
                                note, verify=cached is None)
    if cached is not None:
        train, extra = cached
        offset, scale = float(extra[norm[0]]), float(extra[norm[1]])
        preprocess = replace(base_preprocess, radar_power_db_offset=offset, radar_power_db_scale=scale)
    else:
        offset, scale = fit_radar_normalization(train_paths, config.radar_fit_stride, strict=True)
        preprocess = replace(base_preprocess, radar_power_db_offset=offset, radar_power_db_scale=scale)
        train, _ = read_logs(train_paths, preprocess, config.train_frame_stride, progress, strict=True)
        train.save(train_file, radar_power_db_offset=np.float64(offset), radar_power_db_scale=np.float64(scale))

    val_key = config.digest(preprocess.to_dict(), {"cache_version": CACHE_VERSION, "sim_version": SIM_VERSION,
                                                   "split": "val"})
    val_file = array_dir / f"val-{val_key}.npz"
    cached = _cached_split(val_file, note)
    val_paths = record_drives(config.val_drives, config.camera_size, config.jpeg_quality, cache_dir, progress,
                              note, verify=cached is None)
    if cached is not None:
        val, _ = cached
    else:
        val, _ = read_logs(val_paths, preprocess, config.val_frame_stride, progress, strict=True)
        val.save(val_file)
    vocab = Vocabulary.build((str(t) for t in train.text), max_tokens=preprocess.text_max_tokens)
    return LoadedData(train=train, val=val, preprocess=preprocess, vocab=vocab,
                      log_paths={"train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths]})
