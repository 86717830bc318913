"""Calibration data from logs: stratified frame selection and an ONNX Runtime data reader.

Frames are read through `LogDataset` and preprocessed with the runtime's own functions, so the
calibrated ranges are those the deployed model sees. Selection is stratified over
(condition, scene type) from the ground truth, so a night/fog minority is not drowned by day
frames (activation ranges differ most between conditions); a log without ground truth falls
back to frames evenly spaced in time. `ArrayCalibrationReader` feeds any dict of arrays to
onnxruntime's calibrators, in chunks so histograms of big activations never all sit in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from fusion_rt.calibration.predict import Frames
from fusion_rt.errors import ConfigError, LogError
from fusion_rt.messages import MODALITIES
from fusion_rt.package import ModelPackage
from fusion_rt.preprocess import CameraSize, PreprocessConfig, Vocabulary, preprocess_sample

__all__ = ["CalibrationSet", "ArrayCalibrationReader", "stratified_indices", "load_calibration_set",
           "frames_from_split", "package_preprocessing", "package_max_age_ns", "NO_TRUTH"]

#: Stratum of a frame without ground truth (selected evenly in time).
NO_TRUTH = ("unlabelled", "unlabelled")


@dataclass
class CalibrationSet:
    """Selected, preprocessed calibration frames and where they came from."""

    frames: Frames
    strata: list[tuple[str, str]]  # (condition, scene_type) per frame, NO_TRUTH without ground truth
    logs: list[str]
    available: int  # camera frames in the logs
    skipped: dict[str, int] = field(default_factory=dict)  # camera frames rejected at decode, ...

    def counts(self) -> dict:
        """Frames per condition, per scene type and per (condition, scene type): the report's view."""
        return {
            "frames": len(self.strata), "available": self.available,
            "per_condition": dict(sorted(Counter(c for c, _ in self.strata).items())),
            "per_scene_type": dict(sorted(Counter(s for _, s in self.strata).items())),
            "per_stratum": {f"{c}/{s}": n for (c, s), n in sorted(Counter(self.strata).items())},
            "skipped": dict(self.skipped),
        }


def stratified_indices(keys: Sequence, count: int) -> np.ndarray:
    """Pick `count` positions of `keys` (in time order), spread evenly over the distinct keys.

    Each stratum gets an equal share (water-filling: a small stratum gives its unused share to
    the others); within a stratum, the picks are evenly spaced in time. With a single stratum
    this is plain even spacing. Returns sorted positions.
    """
    if count < 1:
        raise ConfigError(f"calibration sample count must be >= 1, got {count}")
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    count = min(count, len(keys))
    quota = {k: 0 for k in groups}
    left = count
    open_keys = sorted(groups, key=lambda k: len(groups[k]))
    while left > 0 and open_keys:
        share = max(1, left // len(open_keys))
        for k in list(open_keys):
            take = min(share, len(groups[k]) - quota[k], left)
            quota[k] += take
            left -= take
            if quota[k] == len(groups[k]):
                open_keys.remove(k)
            if left == 0:
                break
    picked = []
    for k, members in groups.items():
        if quota[k]:
            pos = np.linspace(0, len(members) - 1, num=quota[k]).round().astype(np.int64)
            picked.extend(members[p] for p in np.unique(pos))
    return np.array(sorted(picked), dtype=np.int64)


def package_preprocessing(package: ModelPackage) -> tuple[PreprocessConfig, Vocabulary | None]:
    """The preprocessing config and vocabulary a package's manifest prescribes."""
    try:
        preprocess = PreprocessConfig.from_dict(package.preprocess)
    except ConfigError as exc:
        raise ConfigError(f"package {str(package.root)!r}: manifest preprocess is not usable: {exc}") from exc
    return preprocess, package.vocabulary if "text" in package.modalities else None  # parsed by load_package


def package_max_age_ns(package: ModelPackage) -> dict[str, int | None]:
    """`LogDataset` age limits matching the package's runtime (its manifest's `max_age_ns`), so a
    sensor counts as present in calibration and evaluation exactly when the runtime would fuse it."""
    from fusion_rt.logs.dataset import DEFAULT_MAX_AGE_NS

    return {**DEFAULT_MAX_AGE_NS, **{m: a for m, a in package.max_age_ns.items() if m in DEFAULT_MAX_AGE_NS}}


def _check_logs(logs: Sequence[str | Path]) -> list[Path]:
    if not logs:
        raise ConfigError("no calibration log given: pass --calib FILE.mcap (or a ROS 2 bag directory)")
    paths = [Path(p) for p in logs]
    for p in paths:
        if not p.exists():
            raise LogError(f"log {str(p)!r} does not exist")
    return paths


def load_calibration_set(logs: Sequence[str | Path], package: ModelPackage, count: int,
                         topics: Mapping[str, str] | None = None) -> CalibrationSet:
    """Select `count` frames of `logs`, stratified by (condition, scene type), and preprocess them
    (`topics` as replay's --topics; each log's other topics resolved as replay does).

    Two passes over the logs: the first reads only stamps and ground-truth metadata, the second
    preprocesses the selected frames (memory stays bounded by `count`, not by the log length).
    """
    from fusion_rt.logs import LogDataset

    paths = _check_logs(logs)
    preprocess, vocab = package_preprocessing(package)
    keys: list[tuple[str, str]] = []
    where: list[tuple[int, int]] = []  # (log, frame number in that log)
    ages = package_max_age_ns(package)
    for li, path in enumerate(paths):
        for k, sample in enumerate(LogDataset(path, topics=topics, max_age_ns=ages)):
            gt = sample.ground_truth
            keys.append((str(gt.condition), str(gt.scene_type)) if gt is not None else NO_TRUTH)
            where.append((li, k))
    if not keys:
        raise LogError(f"no camera frames in {[str(p) for p in paths]}: nothing to calibrate on")
    chosen = {where[i]: keys[i] for i in stratified_indices(keys, count)}

    rows: dict[str, list[np.ndarray]] = {m: [] for m in package.modalities}
    present, strata = [], []
    skipped = Counter()
    camera_reason = ""  # why the first rejected camera frame was
    camera_size = CameraSize(package.rig.camera.intrinsics)  # the runtime's size rule
    radar_zero = np.zeros((len(preprocess.radar_input_channels), *preprocess.radar_shape), dtype=np.float32)
    map_zero = np.zeros(preprocess.map_shape, dtype=np.float32)
    for li, path in enumerate(paths):
        for k, sample in enumerate(LogDataset(path, topics=topics, max_age_ns=ages)):
            if (li, k) not in chosen:
                continue
            # the same rules as training's read_logs, and the runtime's radar geometry check (and its
            # binning of radar detections where a log has no radar tensor)
            inputs = preprocess_sample(sample, preprocess, package.rig.radar, camera_size)
            skipped.update(f"{m}_rejected" for m in inputs.rejected)
            camera_reason = camera_reason or inputs.reasons.get("camera", "")
            if inputs.camera is None:
                continue
            camera, text = inputs.camera, inputs.text
            has_radar, has_map = inputs.radar is not None, inputs.map is not None
            radar = inputs.radar if has_radar else radar_zero
            grid = inputs.map if has_map else map_zero
            values = {"camera": camera, "radar": radar, "map": grid}
            for m in package.modalities:
                rows[m].append(vocab.encode(text or "") if m == "text" else values[m])
            present.append((True, has_radar, has_map, text is not None))
            strata.append(chosen[(li, k)])
    if not strata:
        why = f" (the runtime would reject them too: {camera_reason})" if camera_reason else ""
        raise LogError(f"none of the {len(chosen)} selected camera frames of {[str(p) for p in paths]} "
                       f"decoded{why}")
    frames = Frames({m: np.stack(v) for m, v in rows.items()}, np.array(present, dtype=bool))
    return CalibrationSet(frames=frames, strata=strata, logs=[str(p) for p in paths], available=len(keys),
                          skipped=dict(skipped))


def frames_from_split(split, package: ModelPackage, vocab: Vocabulary | None) -> Frames:
    """Model inputs of a `fusion_rt.export.data.Split` (labelled evaluation frames): the split's own
    arrays, not float32 copies (camera and map are float16 there; `PackageRunner` casts each batch
    to the graph's input dtype), so evaluation holds each frame once."""
    assert MODALITIES[0] == "camera"  # Split.present follows MODALITIES
    inputs = {}
    for m in package.modalities:
        inputs[m] = split.text_ids(vocab) if m == "text" else getattr(split, m)
    return Frames(inputs, split.present.copy())


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds `{input name: [N, ...]}` to an ORT calibrator, `batch_size` rows per `get_next`.

    `set_range` restricts it to rows [start, end) (the calibrator is fed chunk by chunk so that
    histograms are merged per chunk instead of holding every activation of every frame).
    """

    def __init__(self, feeds: Mapping[str, np.ndarray], batch_size: int = 1) -> None:
        sizes = {len(v) for v in feeds.values()}
        if len(sizes) != 1:
            raise ConfigError(f"calibration feeds have different row counts: {sorted(sizes)}")
        self.feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        self.rows = sizes.pop()
        self.batch_size = batch_size
        self.set_range(0, self.rows)

    def __len__(self) -> int:
        return self.rows

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, self.rows)

    def get_next(self) -> dict | None:
        if self._next >= self._end:
            return None
        sl = slice(self._next, min(self._end, self._next + self.batch_size))
        self._next = sl.stop
        return {k: v[sl] for k, v in self.feeds.items()}
