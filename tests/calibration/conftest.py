"""Fixtures of the calibration tests: a tiny package and a short mixed-condition drive."""

from __future__ import annotations

import pytest

from ..conftest import record_test_drive
from ._fixtures import make_calibration_package


@pytest.fixture(scope="session")
def calib_package(tmp_path_factory):
    return make_calibration_package(tmp_path_factory.mktemp("pkg") / "tiny")


@pytest.fixture(scope="session")
def calib_log(tmp_path_factory):
    """A 3 s mixed-condition drive (several conditions, so stratification has something to do)."""
    return record_test_drive(tmp_path_factory, "calib", 3.0, seed=5)


@pytest.fixture(scope="session")
def night_log(tmp_path_factory):
    """A 1 s night drive: a minority condition next to calib_log."""
    return record_test_drive(tmp_path_factory, "night", 1.0, seed=7, conditions="night")

