"""read_logs lays the BEV truth out for the model: planes matched by class name, as replay does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fusion_rt.errors import LogError
from fusion_rt.export.data import read_logs
from fusion_rt.messages import GroundTruth
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import CLASS_NAMES


@pytest.fixture(scope="module")
def drive_messages() -> list:
    """A 0.3 s simulated drive (ground truth in CLASS_NAMES order), kept in memory for rewriting."""
    from fusion_rt.sim import DriveConfig, simulate_drive

    return list(simulate_drive(DriveConfig(seconds=0.3, seed=7)))


def _write(path: Path, messages: list, truth=lambda gt: gt) -> Path:
    """The drive as a log, each ground truth passed through `truth` (None: left out)."""
    from fusion_rt.logs import LogWriter

    with LogWriter(path) as writer:
        for msg in messages:
            if isinstance(msg, GroundTruth):
                msg = truth(msg)
            if msg is not None:
                writer.write(msg)
    return path


def _classes(gt: GroundTruth, order: list[int]) -> GroundTruth:
    """The same truth with its planes (and their names) in another order, or a subset of them."""
    return dataclasses.replace(gt, bev=gt.bev[order].copy(), bev_classes=tuple(gt.bev_classes[i] for i in order))


def test_bev_truth_is_matched_to_the_model_classes_by_name(drive_messages, tmp_path):
    """A log listing its classes in another order gives the same planes (read_logs stacked them as
    stored, so evaluate and quantize credited the car IoU to the pedestrian plane)."""
    pre = PreprocessConfig()
    original, _ = read_logs([_write(tmp_path / "a.mcap", drive_messages)], pre)
    permuted, _ = read_logs([_write(tmp_path / "b.mcap", drive_messages, lambda gt: _classes(gt, [2, 3, 0, 1]))],
                            pre)
    assert original.bev.shape[1:] == (len(CLASS_NAMES), 64, 64) and original.bev.any()
    np.testing.assert_array_equal(permuted.bev, original.bev)
    assert permuted.bev_known.shape == (len(permuted), 4) and permuted.bev_known.all()
    # the model's own class list (rig.class_names / the package's bev_classes) sets the order
    subset, _ = read_logs([tmp_path / "b.mcap"], pre, bev_classes=("cyclist", "car"))
    np.testing.assert_array_equal(subset.bev, original.bev[:, [3, 0]])


def test_a_class_the_truth_lacks_is_a_zero_plane_left_unscored(drive_messages, tmp_path):
    """As replay: the class is not scored on a frame whose truth does not list it (a zero plane
    scored as truth would count every predicted cell of it as a false positive)."""
    from fusion_rt.export.evaluate import Predictions, summarize

    path = _write(tmp_path / "no_truck.mcap", drive_messages, lambda gt: _classes(gt, [0, 2, 3]))
    split, _ = read_logs([path], PreprocessConfig())
    assert not split.bev_known[:, 1].any() and split.bev_known[:, [0, 2, 3]].all()
    assert not split.bev[:, 1].any()
    n = len(split)
    occupied = split.bev.astype(bool)
    occupied[:, 1] = True  # a truck predicted everywhere: nothing to score it against
    pred = Predictions(scene=np.full((n, 5), 0.5), bev=occupied, share=np.zeros((n, 6, 4)))
    iou = summarize(split, pred, CLASS_NAMES, ("camera", "radar", "map", "text"))["overall"]["bev_iou"]
    assert iou["truck"] is None
    assert all(iou[c] == 1.0 for c in ("car", "pedestrian", "cyclist") if split.bev[:, CLASS_NAMES.index(c)].any())


def test_a_truth_on_another_bev_grid_is_a_log_error(drive_messages, tmp_path):
    path = _write(tmp_path / "coarse.mcap", drive_messages,
                  lambda gt: dataclasses.replace(gt, bev=np.ascontiguousarray(gt.bev[:, ::2, ::2])))
    with pytest.raises(LogError, match=r"coarse\.mcap.* 32x32 BEV grid; the model expects 64x64"):
        read_logs([path], PreprocessConfig())
    read_logs([path], PreprocessConfig(), bev_shape=(32, 32))  # a model on that grid reads it


def test_frames_without_truth_get_zero_planes_of_the_model_classes(drive_messages, tmp_path):
    path = _write(tmp_path / "no_truth.mcap", drive_messages, lambda gt: None)
    split, _ = read_logs([path], PreprocessConfig(), require_truth=False, bev_classes=("car", "cyclist"),
                         bev_shape=(16, 8))
    assert split.bev.shape[1:] == (2, 16, 8) and not split.bev.any()
    assert split.bev_known.shape == (len(split), 2) and not split.bev_known.any()
