"""Benchmarks: outside the default test run (`make bench`), warm-up first, fixed inputs.

`FUSION_RT_BENCH_PACKAGE` points the runtime and replay suites at a real package (e.g. the shipped
one, or an int8 package from `fusion-rt quantize`); without it they use the heavy tiny package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package_path(tmp_path_factory) -> Path:
    env = os.environ.get("FUSION_RT_BENCH_PACKAGE")
    if env:
        return Path(env)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_package import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("bench") / "pkg", heavy=True)
