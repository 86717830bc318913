"""A synthetic sensor stream for the runtime: the simulator's rates and jitter, cheap to make.

Camera every 50 ms (jitter sigma 0.5 ms, clipped at +-1.5 ms), radar 25 ms after each camera frame,
map and text once a second (5 and 7 ms after the second's camera frame). Payloads are real: JPEGs of
the rig's 640x360 size (a few, cycled), random radar tensors, map rasters and text that change every
10 s. Messages come in stamp order; `skip(message)` leaves some out (sensor dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from fusion_rt.messages import CameraFrame, TextContext

from ..test_runtime import _jpeg, _map, _radar

MS = 1_000_000
S = 1_000_000_000
PERIOD_NS = 50 * MS
TEXTS = ("school zone, rain, 30 km/h", "urban, dry, 50 km/h", "construction, night, 40 km/h")


def sensor_stream(frames: int, t0: int = 1_000 * S, seed: int = 0,
                  skip: Callable[[object], bool] | None = None) -> Iterator[object]:
    """`frames` camera periods of messages starting at `t0` (a generator: long soaks stay small)."""
    rng = np.random.default_rng(seed)
    jpegs = [_jpeg(seed=k) for k in range(4)]
    for k in range(frames):
        base = t0 + k * PERIOD_NS
        jitter = int(np.clip(rng.normal(0, 0.5), -1.5, 1.5) * MS)
        batch: list[object] = [CameraFrame(stamp_ns=base + jitter, data=jpegs[k % len(jpegs)])]
        if k % 20 == 0:  # once a second
            era = k // 200  # content changes every 10 s
            batch += [_map(base + 5 * MS, 25 * (era % 3)), TextContext(stamp_ns=base + 7 * MS, text=TEXTS[era % 3])]
        batch.append(_radar(base + 25 * MS + int(np.clip(rng.normal(0, 0.8), -2, 2) * MS), rng))
        for message in batch:
            if skip is None or not skip(message):
                yield message


def camera_stamps(messages) -> list[int]:
    return [m.stamp_ns for m in messages if isinstance(m, CameraFrame)]
