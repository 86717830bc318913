"""Record a simulated drive into an MCAP log: the simulator's messages through the log writer."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from fusion_rt.logs import LogWriter
from fusion_rt.outputs import atomic_output
from fusion_rt.sim import DriveConfig, simulate_drive
from fusion_rt.sim.summary import DriveSummary

__all__ = ["record_drive", "record_calibration_set"]


def record_drive(
    config: DriveConfig,
    path: str | os.PathLike,
    compression: str = "zstd",
    progress: Callable[[int], None] | None = None,
) -> DriveSummary:
    """Simulate `config` and write it to `path`; returns the drive's summary.

    The file is written next to its destination and renamed into place when complete, so an
    interrupted run never leaves a half-written log under the requested name. `progress` is called
    with each message's stamp (ns) so callers can show how far the drive has got. A symlink's target
    is replaced (the link kept); a device or FIFO (`/dev/null`) is written in place.
    """
    summary = DriveSummary()
    with atomic_output(path) as tmp, LogWriter(tmp, compression=compression) as writer:
        writer.add_metadata("fusion_rt.rig", {"json": json.dumps(config.rig().to_dict(), sort_keys=True)})
        writer.add_metadata("fusion_rt.sim", {k: json.dumps(v) for k, v in sorted(asdict(config).items())})
        for msg in simulate_drive(config):
            writer.write(msg)
            summary.add(msg)
            if progress is not None:
                progress(msg.stamp_ns)
    return summary


def record_calibration_set(folder: str | os.PathLike, seconds: float = 0.75, seed: int = 0,
                           camera_size: tuple[int, int] = (640, 360), jpeg_quality: int = 85,
                           compression: str = "zstd",
                           progress: Callable[[Path, DriveSummary], None] | None = None) -> list[Path]:
    """Record one short drive per condition and scene type into `folder` (`<condition>_<scene>.mcap`,
    each `seconds` long, seeds `seed`, `seed + 1`, ...); returns their paths, for quantize's --calib.
    `progress` is called with each log and its summary once written. Every drive's settings are
    checked (ConfigError) before the first is recorded.

    A calibration set must hold every condition the model will meet: INT8 ranges set on frames
    without it clip there. Calibrated on the demo's former 12 s mixed drive (fog and night on a
    highway only), the INT8 encoders scored an unseen 30 s drive at scene cosine 0.993 and moved
    its scene AUC by 2.9%; on 16 drives of 0.75 s, one per condition and scene type (the same 12 s),
    at 0.9999 and 0.01%.
    """
    from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES

    out = Path(folder)
    drives = [(out / f"{condition}_{scene}.mcap",
               DriveConfig(seconds=seconds, seed=seed + i, conditions=condition, scene_type=scene,
                           camera_size=camera_size, jpeg_quality=jpeg_quality))
              for i, (condition, scene) in enumerate(itertools.product(CONDITIONS, SCENE_TYPES))]
    out.mkdir(parents=True, exist_ok=True)
    for path, config in drives:
        summary = record_drive(config, path, compression=compression)
        if progress is not None:
            progress(path, summary)
    return [path for path, _ in drives]
