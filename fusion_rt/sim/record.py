"""Record a simulated drive into an MCAP log: the simulator's messages through the log writer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict

from fusion_rt.logs import LogWriter
from fusion_rt.outputs import atomic_output
from fusion_rt.sim import DriveConfig, simulate_drive
from fusion_rt.sim.summary import DriveSummary

__all__ = ["record_drive"]


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
