"""R11 soak (issue #8): 12,000 frames (10 minutes at 20 Hz) pushed through the runtime: resident
memory flat after the first 2,000 frames, file handles and threads constant, the counts still exact.

The stream is synthetic and pushed directly (no simulator, no log) so the full count runs in well
under a minute; the CI variant pushes 2,000 frames, measured after a 500-frame warm-up.
"""

from __future__ import annotations

import os
import threading

import pytest

from fusion_rt.runtime import FusionRuntime

from ..test_runtime import _assert_counts_add_up
from ._stream import sensor_stream
from .conftest import scaled


def _rss_mb() -> float:
    """Resident memory counted page by page when read (smaps_rollup walks the mappings), rather
    than the kernel's running counters behind VmRSS (see test_log_faults._peak_growth_mb)."""
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Rss:")) / 1024


def _resources() -> dict:
    return {"rss_mb": round(_rss_mb(), 1), "fds": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(), "os_threads": len(os.listdir("/proc/self/task"))}


@pytest.mark.parametrize(("warmup", "frames"), scaled((500, 2_000), (2_000, 12_000)))
def test_r11_soak_memory_handles_and_threads_stay_flat(tiny_package, figures, warmup, frames):
    samples = {}
    outputs = 0
    with FusionRuntime(tiny_package, window=1024) as rt:
        for message in sensor_stream(frames, seed=11):
            produced = rt.push(message)
            if produced:
                outputs += 1
                if outputs in (warmup, frames // 2, frames):
                    samples[outputs] = _resources()
        stats = rt.stats()
    _assert_counts_add_up(stats)
    assert outputs == frames == stats["outputs"]["total"] and stats["messages"]["camera"]["rejected"] == 0
    first, middle, last = samples[warmup], samples[frames // 2], samples[frames]
    growth = last["rss_mb"] - first["rss_mb"]
    assert growth < 20, samples
    for key in ("fds", "threads", "os_threads"):
        assert first[key] == middle[key] == last[key], (key, samples)
    figures.update(frames=frames, rss_growth_mb_after_warmup=round(growth, 1), warmup_frames=warmup,
                   samples={str(k): v for k, v in samples.items()}, messages=stats["received"])
