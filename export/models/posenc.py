"""Fixed positional encodings shared by every encoder and head: where a token looks, as seen from
the camera.

Every position is expressed as (azimuth, range) around the camera's position in the ego frame:
a camera token column carries the azimuth of its pixel columns (from the intrinsics), a radar
token the azimuth and range of its range-azimuth cell, map tokens and BEV queries those of their
cell centres. The azimuth code is the same function everywhere, so a camera column and a radar
cell at the same bearing get the same code and attention can match them. The first half of the
channels encodes azimuth, the second half range (zeros where range is unknown: the camera).
"""

from __future__ import annotations

import numpy as np

from fusion_rt.rig import Rig

__all__ = ["sincos", "polar_encoding", "camera_origin", "to_polar"]


def sincos(values: np.ndarray, dim: int, min_freq: float, max_freq: float) -> np.ndarray:
    """[N] -> [N, dim]: sin and cos at `dim // 2` angular frequencies spaced geometrically."""
    assert dim % 2 == 0, dim
    freqs = np.geomspace(min_freq, max_freq, dim // 2)
    phase = np.asarray(values, dtype=np.float64)[:, None] * freqs[None, :]
    return np.concatenate([np.sin(phase), np.cos(phase)], axis=1)


def polar_encoding(azimuth: np.ndarray, range_m: np.ndarray | None, dim: int) -> np.ndarray:
    """[N] azimuths (rad) and ranges (m, or None) -> [N, dim] float32 encodings.

    Azimuth: frequencies 1..32 rad^-1 (the coarsest is unambiguous over the full circle, the
    finest resolves ~0.05 rad, below a camera token column). Range: periods 400 m down to 4 m.
    """
    assert dim % 4 == 0, dim
    half = dim // 2
    az = sincos(azimuth, half, 1.0, 32.0)
    if range_m is None:
        rng = np.zeros((len(az), half))
    else:
        rng = sincos(range_m, half, 2 * np.pi / 400.0, 2 * np.pi / 4.0)
    return np.concatenate([az, rng], axis=1).astype(np.float32)


def camera_origin(rig: Rig) -> tuple[float, float]:
    """The ego-frame (x, y) that every polar position is measured from."""
    return rig.camera.pose.x, rig.camera.pose.y


def to_polar(x: np.ndarray, y: np.ndarray, rig: Rig) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame points -> (azimuth, range) around the camera, azimuth relative to its heading."""
    ox, oy = camera_origin(rig)
    dx, dy = np.asarray(x, dtype=np.float64) - ox, np.asarray(y, dtype=np.float64) - oy
    az = np.arctan2(dy, dx) - rig.camera.pose.yaw
    return np.arctan2(np.sin(az), np.cos(az)), np.hypot(dx, dy)
