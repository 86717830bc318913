"""Calibration frames: stratified selection and the ORT data reader."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fusion_rt.calibration.reader import ArrayCalibrationReader, load_calibration_set, stratified_indices
from fusion_rt.package import load_package


def test_strata_get_equal_shares_not_proportional_ones():
    keys = [("day", "urban")] * 90 + [("night", "urban")] * 10 + [("fog", "highway")] * 3
    picked = stratified_indices(keys, 30)
    counts = Counter(keys[i] for i in picked)
    assert len(picked) == 30
    assert counts[("fog", "highway")] == 3  # a small stratum gives everything it has
    assert counts[("night", "urban")] == 10
    assert counts[("day", "urban")] == 17


def test_without_ground_truth_frames_are_evenly_spaced_in_time():
    picked = stratified_indices([None] * 100, 5)
    assert picked.tolist() == [0, 25, 50, 74, 99]


def test_calibration_set_is_stratified_over_logs_of_different_conditions(calib_package, calib_log, night_log):
    package = load_package(calib_package)
    calib = load_calibration_set([calib_log, night_log], package, 12)
    counts = calib.counts()
    conditions = counts["per_condition"]
    assert sum(conditions.values()) == 12 and "night" in conditions and len(conditions) >= 2
    assert conditions["night"] >= 12 // len(counts["per_stratum"])  # the short night log is not drowned
    assert set(calib.frames.inputs) == set(package.modalities)
    assert calib.frames.inputs["camera"].shape == (12, 3, 36, 64)
    assert calib.frames.inputs["text"].dtype == np.int64


def test_reader_feeds_batches_and_ranges():
    reader = ArrayCalibrationReader({"x": np.arange(10, dtype=np.float32)[:, None]}, batch_size=4)
    assert len(reader) == 10
    assert [len(b["x"]) for b in reader] == [4, 4, 2]
    reader.set_range(8, 20)
    assert [b["x"][0, 0] for b in reader] == [8.0]
