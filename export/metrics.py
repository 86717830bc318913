"""Evaluation metrics in numpy: per-class ROC AUC, F1 at a threshold, BEV IoU per class.

Numpy only (no sklearn), so evaluation runs wherever the runtime runs. Conventions follow
scikit-learn: AUC is the probability that a random positive scores above a random negative,
ties counting one half (the Mann-Whitney U statistic); a class with only one kind of label has
no AUC (NaN), and F1/IoU with an empty denominator are NaN too, so "undefined" is never
mistaken for 0 or 1. Aggregates use nanmean.
"""

from __future__ import annotations

import numpy as np

from fusion_rt.errors import ConfigError

__all__ = ["roc_auc", "roc_auc_per_class", "f1_score", "f1_per_class", "bev_iou_per_class"]


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scores must be numbers: {exc}") from exc
    if y.shape != s.shape:
        raise ConfigError(f"labels {y.shape} and scores {s.shape} must have the same shape")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ConfigError(f"labels must be 0/1, got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(s).all():
        raise ConfigError("scores must be finite")
    return y.astype(bool), s


def _threshold(threshold, classes: int | None = None) -> np.ndarray | float:
    """A finite threshold: a number, or (with `classes`) one per class."""
    try:
        t = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be a number, got {threshold!r}") from None
    if t.ndim > 1 or (t.ndim == 1 and (classes is None or t.shape[0] != classes)) or not np.isfinite(t).all():
        per = f" or one per class ({classes})" if classes is not None else ""
        raise ConfigError(f"threshold must be a finite number{per}, got {threshold!r}")
    return t if t.ndim else float(t)


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Average ranks (1-based) with ties sharing the mean of their positions.
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc(labels, scores) -> float:
    """ROC AUC of 0/1 `labels` [N] against `scores` [N]; NaN when only one class is present."""
    y, s = _labels_scores(labels, scores)
    if y.ndim != 1:
        raise ConfigError(f"roc_auc takes 1-D arrays, got shape {y.shape}")
    return _rank_auc(y, s)


def roc_auc_per_class(labels, scores) -> np.ndarray:
    """Per-column ROC AUC of `labels` [N, K] against `scores` [N, K] -> [K] (NaN where undefined)."""
    y, s = _labels_scores(labels, scores)
    if y.ndim != 2:
        raise ConfigError(f"roc_auc_per_class takes [N, K] arrays, got shape {y.shape}")
    return np.array([_rank_auc(y[:, k], s[:, k]) for k in range(y.shape[1])])


def _f1(y: np.ndarray, pred: np.ndarray, axis) -> np.ndarray:
    tp = np.sum(y & pred, axis=axis)
    fp = np.sum(~y & pred, axis=axis)
    fn = np.sum(y & ~pred, axis=axis)
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def f1_score(labels, scores, threshold: float = 0.5) -> float:
    """F1 of predictions `scores >= threshold` against 0/1 `labels` [N]; NaN if no positive either side."""
    y, s = _labels_scores(labels, scores)
    return float(_f1(y.ravel(), s.ravel() >= _threshold(threshold), axis=None))


def f1_per_class(labels, scores, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Per-column F1 of `labels` [N, K] against `scores` [N, K] >= threshold (scalar or [K])."""
    y, s = _labels_scores(labels, scores)
    if y.ndim != 2:
        raise ConfigError(f"f1_per_class takes [N, K] arrays, got shape {y.shape}")
    return _f1(y, s >= _threshold(threshold, y.shape[1]), axis=0)


#: Frames per slice of `bev_iou_per_class` (its scores are float64: 128 KB a frame of 4x64x64).
BEV_ROWS_PER_SLICE = 64


def _iou_counts(target, scores, threshold) -> tuple[np.ndarray, np.ndarray]:
    y, s = _labels_scores(target, scores)
    if y.ndim == 3:
        y, s = y[None], s[None]
    if y.ndim != 4:
        raise ConfigError(f"bev_iou_per_class takes [N, C, H, W] or [C, H, W], got shape {y.shape}")
    pred = s >= _threshold(threshold)
    return np.sum(y & pred, axis=(0, 2, 3)), np.sum(y | pred, axis=(0, 2, 3))


def bev_iou_per_class(target, scores, threshold: float = 0.5) -> np.ndarray:
    """IoU per class of occupancy `scores >= threshold` against 0/1 `target`, both [N, C, H, W] or
    [C, H, W], accumulated over the whole set (intersection and union summed first) -> [C];
    NaN for a class absent from both. [N, C, H, W] arrays are counted slice of frames by slice
    (the counts add up exactly): no float64 copy of every frame's scores (256 MB at 2000 frames)."""
    rows = BEV_ROWS_PER_SLICE
    if (isinstance(target, np.ndarray) and isinstance(scores, np.ndarray) and target.ndim == 4
            and target.shape == scores.shape and len(target) > rows):
        counts = [_iou_counts(target[i:i + rows], scores[i:i + rows], threshold) for i in range(0, len(target), rows)]
        inter, union = sum(c[0] for c in counts), sum(c[1] for c in counts)
    else:
        inter, union = _iou_counts(target, scores, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
