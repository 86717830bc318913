"""Benchmarks: outside the default test run (`make bench`, `make bench-quick`), warm-up first, fixed inputs.

Environment (the one place bench/ reads it):
- `FUSION_RT_BENCH_PACKAGE`: the package the suites measure. Without it, the runtime and replay
  suites use the heavy tiny package and the budget suite the shipped FP32 package.
- `FUSION_RT_BENCH_INT8`: an INT8 package of the same model (`fusion-rt quantize`) for the int8
  ratios of the budget suite; without it the suite quantizes the package itself (ort-cpu-int8 on
  a simulated calibration drive, as the demo does: ~20 s), so every enforced ratio is measured.
- `FUSION_RT_BENCH_QUICK=1`: CI-sized runs (the budget suite in well under 3 minutes).
- `FUSION_RT_BENCH_SECONDS`, `FUSION_RT_BENCH_FULL`: drive lengths of the replay and sim suites.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PACKAGE = ROOT / "fusion_rt" / "packages" / "fusion-attention"


@pytest.fixture(scope="module")
def package_path(tmp_path_factory) -> Path:
    env = os.environ.get("FUSION_RT_BENCH_PACKAGE")
    if env:
        return Path(env)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_package import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("bench") / "pkg", heavy=True)


@pytest.fixture(scope="module")
def real_package_path() -> Path:
    """A real exported model: $FUSION_RT_BENCH_PACKAGE, else the shipped FP32 package."""
    return Path(os.environ.get("FUSION_RT_BENCH_PACKAGE") or SHIPPED_PACKAGE)


@pytest.fixture(scope="module")
def int8_package_path(real_package_path, tmp_path_factory) -> Path:
    env = os.environ.get("FUSION_RT_BENCH_INT8")
    if env:
        return Path(env)
    from fusion_rt.calibration import QuantizeConfig, quantize_package
    from fusion_rt.demo import DemoConfig
    from fusion_rt.sim.record import record_calibration_set

    demo = DemoConfig(out=tmp_path_factory.getbasetemp())  # the demo's calibration set and sample count
    tmp = tmp_path_factory.mktemp("int8")
    calib = record_calibration_set(tmp / "calibration", demo.calib_seconds_each, seed=demo.seed + 1000)
    config = QuantizeConfig(recipe="ort-cpu-int8", samples=demo.calib_samples)
    return quantize_package(real_package_path, tmp / "int8", config, calib).package.root


@pytest.fixture(scope="session")
def bench_quick() -> bool:
    """FUSION_RT_BENCH_QUICK=1: CI-sized runs."""
    return os.environ.get("FUSION_RT_BENCH_QUICK") == "1"
