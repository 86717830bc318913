"""Small hand-made arrays for the evaluation tests (export and calibration alike)."""

from __future__ import annotations

import numpy as np

from fusion_rt.export.data import SCENE_LABELS, Split

#: One occupied cell the model gets right and one free cell whose logit is just below 0: sigmoid
#: 0.499925, which float16 rounds to 0.5 (occupied), where the runtime's float32 says free.
BEV_LOGITS = np.array([[[[4.0, -3e-4]]]], np.float32)


def tiny_split(n: int = 2) -> Split:
    """n frames with a 1x2 BEV grid of one class: the first cell occupied, the second free."""
    bev = np.zeros((n, 1, 1, 2), np.uint8)
    bev[..., 0] = 1
    return Split(camera=np.zeros((n, 3, 2, 2), np.float16), radar=np.zeros((n, 2, 2, 2), np.float32),
                 map=np.zeros((n, 5, 2, 2), np.float16), text=np.array([""] * n), present=np.ones((n, 4), bool),
                 labels=np.zeros((n, len(SCENE_LABELS)), np.uint8), bev=bev, bev_known=np.ones((n, 1), bool),
                 condition=np.array(["day"] * n), scene_type=np.array(["urban"] * n),
                 log_index=np.zeros(n, np.int32), stamp_ns=np.arange(n, dtype=np.int64))
