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

from fusion_rt.sim.drive import EPOCH_NS, SIM_VERSION, STREAMS, DriveConfig, StreamTiming, drive_stamps, simulate_drive
from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES

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
