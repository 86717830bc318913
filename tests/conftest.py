"""Shared fixtures: small real artefacts (logs, images) generated on the fly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 120.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m fusion_rt ARGS` in a subprocess, as a user would from the shell."""
    return subprocess.run([sys.executable, "-m", "fusion_rt", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def record_test_drive(tmp_path_factory, name: str, seconds: float, seed: int, conditions: str = "mixed") -> Path:
    """Record a simulated drive as `<tmp>/<name>.mcap` (the one helper every log fixture uses)."""
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    path = tmp_path_factory.mktemp("logs") / f"{name}.mcap"
    record_drive(DriveConfig(seconds=seconds, seed=seed, conditions=conditions), path)
    return path


@pytest.fixture(scope="session")
def short_drive(tmp_path_factory) -> Path:
    """A 4 s mixed-condition simulated drive recorded as MCAP (shared by the session's tests)."""
    return record_test_drive(tmp_path_factory, "short_drive", 4.0, seed=3)
