"""Fixtures of the reliability battery (issue #8, DESIGN.md section 8).

`figures` records what a test measured (`figures["crashes"] = 0`). The figures of the whole
session are written as JSON only when FUSION_RT_RELIABILITY_FIGURES names a file (`make
reliability` sets it); a plain `pytest` run writes nothing. Keys are test names, so a scaled-down
CI variant (`[ci]`) and its full-count slow variant (`[full]`) keep their own figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fusion_rt.package import ModelPackage, load_package

from ..tiny_package import make_tiny_package

FIGURES_ENV = "FUSION_RT_RELIABILITY_FIGURES"


def scaled(ci, full) -> list:
    """Parameters of a counted test: a scaled-down CI run, and the full count marked slow (a tuple
    gives several parameters)."""
    ci, full = (v if isinstance(v, tuple) else (v,) for v in (ci, full))
    return [pytest.param(*ci, id="ci"), pytest.param(*full, id="full", marks=pytest.mark.slow)]


@pytest.fixture(scope="session")
def _figure_store():
    store: dict[str, dict] = {}
    yield store
    target = os.environ.get(FIGURES_ENV)
    if target and store:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(sorted(store.items())), indent=2, sort_keys=True) + "\n")


@pytest.fixture()
def figures(request, _figure_store) -> dict:
    """This test's measured figures: assign `figures[name] = value` (JSON values)."""
    return _figure_store.setdefault(request.node.name, {})


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> ModelPackage:
    """The tiny real ONNX package, loaded (shared by the battery's runtime tests)."""
    return load_package(make_tiny_package(tmp_path_factory.mktemp("reliability") / "pkg"))
