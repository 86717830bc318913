"""Replay benchmark: burst replay speed of a simulated drive, as a real-time factor.

Run: `.venv/bin/pytest bench/test_bench_replay.py -s` (outside the default run).

Package: $FUSION_RT_BENCH_PACKAGE if set (the target is an int8 package: >= 3x real time on the
60 s default drive, issue 6), else the tiny package with `heavy=True` (convolutional encoders, so
a frame costs what a real one does in shape, not in absolute terms). Drive length:
$FUSION_RT_BENCH_SECONDS (default 20 s; 60 for the acceptance run). Lockstep is measured in the
same run as the peer, alternated over rounds (the machine is shared: compare medians).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from fusion_rt.bench import load_budgets
from fusion_rt.replay import ReplayConfig, replay
from fusion_rt.sim import DriveConfig
from fusion_rt.sim.record import record_drive

ROUNDS = 3
TARGET_RTF = load_budgets().ratios["replay_realtime_factor"].limit  # issue 6: >= 3x real time, int8 package


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    seconds = float(os.environ.get("FUSION_RT_BENCH_SECONDS", "20"))
    path = tmp_path_factory.mktemp("bench") / "drive.mcap"
    record_drive(DriveConfig(seconds=seconds, seed=7, conditions="mixed"), path)
    return path


def test_burst_replay_realtime_factor(benchmark, package_path, drive):
    replay(drive, package_path, ReplayConfig(mode="burst", threads=2))  # warm-up: page cache, ORT init
    rtf: dict[str, list[float]] = {"burst": [], "lockstep": []}

    def round_of_both() -> None:  # a benchmark (pytest-benchmark times each round): `make bench` runs it
        for mode in ("burst", "lockstep"):
            s = replay(drive, package_path, ReplayConfig(mode=mode, threads=2, keep_frames=False,
                                                         worst_frames=0)).summary
            rtf[mode].append(s["realtime_factor"])

    benchmark.pedantic(round_of_both, rounds=ROUNDS, iterations=1)
    medians = {m: statistics.median(v) for m, v in rtf.items()}
    benchmark.extra_info.update(realtime_factor=medians, runs=rtf)
    print(f"\nreplay real-time factor (median of {ROUNDS}, {drive.stat().st_size / 1e6:.1f} MB log, package "
          f"{package_path}): burst {medians['burst']:.2f}x, lockstep {medians['lockstep']:.2f}x; all {rtf}")
    if os.environ.get("FUSION_RT_BENCH_PACKAGE"):
        assert medians["burst"] >= TARGET_RTF
    else:
        assert medians["burst"] >= 1.0  # the heavy tiny package: at least real time
