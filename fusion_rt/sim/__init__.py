"""Synthetic sensor world: one seeded procedural scene rendered to camera, radar, map and text.

The simulator is the project's own benchmark: the same agents appear to every sensor, and
conditions (day, night, fog, rain) and scene types (urban, highway, school zone, construction)
change what each sensor can see, so fusion has something to gain.

    from fusion_rt.sim import DriveConfig, simulate_drive
    for msg in simulate_drive(DriveConfig(seconds=10.0, seed=1, conditions="night")):
        ...

Building blocks, one per module: `world` (road, zones, agents, props, dynamics), `ground`
(painted road surface), `camera`, `radar`, `context` (map raster, scene text), `truth`
(ground truth) and `drive` (configuration and the message scheduler).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion_rt.sim.drive import (
        EPOCH_NS,
        SIM_VERSION,
        STREAMS,
        DriveConfig,
        StreamTiming,
        drive_stamps,
        simulate_drive,
    )
    from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES

# Loaded on first use: the renderer pulls in OpenCV (~0.2 s), which the CLI's argument parser
# (it lists CONDITIONS and SCENE_TYPES) and verbs that never simulate should not pay for.
_HOMES = {"CONDITIONS": "world", "SCENE_TYPES": "world"}


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES.get(name, 'drive')}"), name)
    globals()[name] = value
    return value

__all__ = [
    "DriveConfig",
    "simulate_drive",
    "SIM_VERSION",
    "CONDITIONS",
    "SCENE_TYPES",
    "EPOCH_NS",
    "STREAMS",
    "StreamTiming",
    "drive_stamps",
]
