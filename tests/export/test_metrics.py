"""Metrics against hand-computed values and brute-force references (sklearn's conventions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion_rt.errors import ConfigError
from fusion_rt.export.metrics import bev_iou_per_class, f1_per_class, f1_score, roc_auc, roc_auc_per_class


def _brute_auc(y, s) -> float:
    pos = [b for a, b in zip(y, s, strict=True) if a == 1]
    neg = [b for a, b in zip(y, s, strict=True) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_known_values():
    # scikit-learn's roc_auc_score documentation example: 0.75
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.2, 0.9]) == 1.0
    assert roc_auc([0, 1], [0.9, 0.2]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    # ties across classes: pos {0.5, 0.7}, neg {0.5, 0.1}: pairs 0.5 (tie), 1, 1, 1 -> 3.5 / 4
    assert roc_auc([1, 1, 0, 0], [0.5, 0.7, 0.5, 0.1]) == pytest.approx(0.875)
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40))
def test_auc_matches_brute_force_with_ties(pairs):
    y = [a for a, _ in pairs]
    s = [b / 6 for _, b in pairs]  # few distinct scores: many ties
    if len(set(y)) < 2:
        assert math.isnan(roc_auc(y, s))
    else:
        assert roc_auc(y, s) == pytest.approx(_brute_auc(y, s))


def test_auc_per_class_columns():
    y = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])
    s = np.array([[0.1, 0.3], [0.4, 0.2], [0.35, 0.9], [0.8, 0.1]])
    auc = roc_auc_per_class(y, s)
    assert auc[0] == pytest.approx(0.75)
    assert auc[1] == pytest.approx(_brute_auc(y[:, 1], s[:, 1]))  # = 0.0: the negative scores highest


def test_f1_known_values():
    # predictions at 0.5: [1, 1, 0, 0, 1] vs labels [1, 0, 1, 0, 1]: tp 2, fp 1, fn 1 -> 4 / 6
    assert f1_score([1, 0, 1, 0, 1], [0.9, 0.6, 0.4, 0.1, 0.5]) == pytest.approx(2 / 3)
    assert f1_score([1, 0, 1, 0, 1], [0.9, 0.6, 0.4, 0.1, 0.5], threshold=0.95) == 0.0
    assert math.isnan(f1_score([0, 0], [0.1, 0.2]))  # no positives anywhere: undefined
    f1 = f1_per_class([[1, 0], [0, 0], [1, 1]], [[0.9, 0.2], [0.8, 0.1], [0.2, 0.7]], threshold=[0.5, 0.5])
    np.testing.assert_allclose(f1, [0.5, 1.0])  # col 0: tp 1 fp 1 fn 1


def test_bev_iou_known_values():
    target = np.zeros((2, 2, 4, 4), np.uint8)
    scores = np.zeros((2, 2, 4, 4))
    target[0, 0, :2, :2] = 1  # 4 cells
    scores[0, 0, 1:3, 1:3] = 0.9  # 4 cells, 1 overlapping -> IoU 1 / 7
    target[1, 0, 3, 3] = 1
    scores[1, 0, 3, 3] = 0.8  # frame 2 adds one intersecting cell -> 2 / 8 over the set
    iou = bev_iou_per_class(target, scores)
    assert iou[0] == pytest.approx(2 / 8)
    assert math.isnan(iou[1])  # class 1 absent from both
    assert bev_iou_per_class(target[0], scores[0])[0] == pytest.approx(1 / 7)


def test_metrics_reject_bad_inputs():
    with pytest.raises(ConfigError, match="same shape"):
        roc_auc([0, 1], [0.5])
    with pytest.raises(ConfigError, match="0/1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ConfigError, match="finite"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ConfigError, match="numbers"):
        roc_auc([0, 1], ["a", "b"])
    # a NaN threshold made every F1 and IoU 0 without a word
    with pytest.raises(ConfigError, match="threshold must be a finite number, got nan"):
        f1_score([0, 1], [0.2, 0.8], threshold=float("nan"))
    with pytest.raises(ConfigError, match="one per class"):
        f1_per_class(np.zeros((3, 5)), np.zeros((3, 5)), threshold=[0.5, 0.5])
    with pytest.raises(ConfigError, match="threshold"):
        bev_iou_per_class(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), threshold="high")
    np.testing.assert_array_equal(f1_per_class([[1, 0], [1, 1]], [[0.6, 0.1], [0.7, 0.9]], threshold=[0.5, 0.95]),
                                  [1.0, 0.0])


def test_bev_iou_counts_slices_of_frames_exactly_and_without_a_float64_copy():
    """quantize's evaluation scores 2000 frames of 4x64x64 BEV: the scores went to float64 all at
    once (256 MB). Counted slice of frames by slice, the IoU is the same to the bit and the peak is
    a slice's."""
    import tracemalloc

    rng = np.random.default_rng(5)
    target = rng.random((300, 4, 16, 16)) < 0.3
    scores = rng.random((300, 4, 16, 16)).astype(np.float32)
    target[:, 3] = False
    scores[:, 3] = 0.0  # a class absent from both: NaN
    inter = (target & (scores >= 0.5)).sum(axis=(0, 2, 3))
    union = (target | (scores >= 0.5)).sum(axis=(0, 2, 3))
    with np.errstate(invalid="ignore"):
        want = np.where(union > 0, inter / np.maximum(union, 1), np.nan)  # every frame at once
    np.testing.assert_array_equal(bev_iou_per_class(target, scores, 0.5), want)  # NaN in the same places
    np.testing.assert_array_equal(bev_iou_per_class(target, scores >= 0.5, 0.5), want)
    with pytest.raises(ConfigError, match="same shape"):
        bev_iou_per_class(target, scores[:, :3], 0.5)

    big = np.zeros((512, 4, 64, 64), dtype=bool)  # 8 MB; 64 MB as float64
    big[::3, 1, 10:20, 10:20] = True
    tracemalloc.start()
    try:
        iou = bev_iou_per_class(big, big, 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < big.size * 8 / 2, f"{peak / 2**20:.0f} MB"  # half of one float64 copy (64 MB)
    assert iou[1] == 1.0 and np.isnan(iou[0])
