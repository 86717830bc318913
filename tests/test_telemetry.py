"""Telemetry: exact deadline counts, percentiles over a bounded deterministic window, health."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fusion_rt.errors import ConfigError
from fusion_rt.telemetry import StageStats, Telemetry

MS = 1_000_000


def test_percentiles_match_numpy_and_misses_are_exact():
    rng = np.random.default_rng(0)
    samples = rng.integers(1 * MS, 20 * MS, 1000)
    stats = StageStats("head", budget_ms=10.0, window=4096)
    missed = [stats.add(int(s)) for s in samples]
    summary = stats.summary()
    assert summary["count"] == 1000
    assert summary["misses"] == sum(missed) == int(np.count_nonzero(samples > 10 * MS))
    for q in (50, 90, 99):
        assert summary[f"p{q}"] == pytest.approx(np.percentile(samples, q) / 1e6)
    assert summary["max"] == samples.max() / 1e6
    assert summary["mean"] == pytest.approx(samples.mean() / 1e6)


def test_budget_boundary_is_not_a_miss():
    stats = StageStats("s", budget_ms=5.0)
    assert stats.add(5 * MS) is False
    assert stats.add(5 * MS + 1) is True
    assert stats.misses == 1


def test_window_keeps_the_most_recent_samples_and_exact_totals():
    stats = StageStats("s", budget_ms=1.0, window=10)
    for k in range(25):
        stats.add(k * MS)
    assert list(stats.recent()) == [k * MS for k in range(15, 25)]  # oldest first, deterministic
    assert stats.count == 25 and stats.misses == 23  # exact over the whole run, not the window
    assert stats.summary()["max"] == 24.0
    assert stats.summary()["p50"] == pytest.approx(19.5)


def test_window_none_keeps_every_sample():
    """An offline replay's percentiles cover the whole log: window=None grows instead of wrapping."""
    stats = StageStats("radar_encoder", budget_ms=1.0, window=None)
    samples = np.concatenate([np.full(3000, 8_000_000), np.full(3000, 1_000_000)])  # slow first half
    for v in samples:
        stats.add(int(v))
    assert stats.recent().size == 6000
    assert stats.summary()["p99"] == pytest.approx(np.percentile(samples, 99) / 1e6)  # 8 ms, not the last 1 ms
    assert stats.recent_miss_rate() == pytest.approx(0.5)


def test_telemetry_records_unbudgeted_stages_and_times_blocks():
    tel = Telemetry({"end_to_end": 30.0})
    assert tel.record("end_to_end", 31 * MS) is True
    assert tel.record("radar_encoder", 100 * MS) is False  # no budget: timed, never a miss
    with tel.timer("sleep"):
        time.sleep(0.002)
    summary = tel.summary()
    assert summary["sleep"]["count"] == 1 and summary["sleep"]["p50"] >= 2.0
    assert tel.deadline_misses() == {"end_to_end": 1}
    assert summary["radar_encoder"]["budget_ms"] is None
    assert tel.summary()["end_to_end"]["p50"] == 31.0


def test_health_states():
    tel = Telemetry({"end_to_end": 10.0, "head": 2.0}, window=100)
    assert tel.health().state == "ok"
    for _ in range(100):
        tel.record("end_to_end", 1 * MS)
        tel.record("head", 1 * MS)
    assert tel.health().state == "ok"
    for _ in range(10):
        tel.record("head", 3 * MS)
    health = tel.health()
    assert health.state == "degraded" and "head" in health.reasons[0]
    for _ in range(60):
        tel.record("end_to_end", 50 * MS)
    assert tel.health().state == "failing"


def test_bad_arguments_name_the_value():
    with pytest.raises(ConfigError, match="window"):
        StageStats("s", window=0)
    with pytest.raises(ConfigError, match="'head'"):
        StageStats("head", budget_ms=-1)
    with pytest.raises(ConfigError, match="degraded_miss_rate"):
        Telemetry(degraded_miss_rate=0.9, failing_miss_rate=0.1)


def test_a_rare_stage_needs_more_than_one_miss_to_degrade_health():
    # The text encoder runs a few times a drive: one warm-up hiccup read as a 100% miss rate, and
    # health said "degraded" for as long as it took ~20 more encodes to dilute it (hours).
    t = Telemetry({"text_encoder": 1.0})
    t.record("text_encoder", 2_000_000)  # one 2 ms hiccup
    t.record("text_encoder", 100_000)
    assert t.health().state == "ok"
    t.record("text_encoder", 2_000_000)
    t.record("text_encoder", 2_000_000)  # three misses of four: a real problem
    health = t.health()
    assert health.state == "degraded" and "75%" in health.reasons[0]


def test_a_short_window_still_degrades():
    # With window 1 or 2 the three-miss minimum could never be reached: "ok" whatever was missed.
    t = Telemetry({"end_to_end": 1.0}, window=2)
    for _ in range(5):
        t.record("end_to_end", 2_000_000)
    assert t.health().state == "failing"
