"""Stage timing, streaming percentiles, latency budgets and deadline accounting (DESIGN.md §7).

Every stage of the runtime (`camera_preprocess`, `camera_encoder`, `head`, `end_to_end`, ...) is
timed with `time.perf_counter_ns` and recorded here. Per stage:

- exact counters over the whole run: samples, deadline misses against the stage's budget (from
  the manifest's `latency_budget_ms`; a sample strictly above the budget is a miss), total, max;
- percentiles (p50/p90/p99) over the most recent `window` samples, kept in a preallocated ring
  buffer: bounded memory, deterministic (no random reservoir), and what an operator wants to
  see anyway (the current behaviour, not the average since boot). `max` is over the whole run.
  `window=None` keeps every sample instead (an offline replay, whose percentiles must cover the
  whole log: memory grows with it, 9 bytes a sample).

`health()` summarizes recent deadline behaviour as "ok" / "degraded" / "failing".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from fusion_rt.errors import ConfigError

__all__ = ["StageStats", "Telemetry", "Health", "HEALTH_STATES"]

HEALTH_STATES: tuple[str, ...] = ("ok", "degraded", "failing")


class StageStats:
    """One stage's samples: exact counters plus a ring buffer of the last `window` durations (ns),
    or of every one with `window=None`."""

    def __init__(self, name: str, budget_ms: float | None = None, window: int | None = 4096) -> None:
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ConfigError(f"window must be a positive integer or None (every sample), got {window!r}")
        if budget_ms is not None and not (isinstance(budget_ms, (int, float)) and not isinstance(budget_ms, bool)
                                          and math.isfinite(budget_ms) and budget_ms > 0):
            raise ConfigError(f"budget for stage {name!r} must be a positive finite number of ms, got {budget_ms!r}")
        self.name = name
        self.budget_ms = None if budget_ms is None else float(budget_ms)
        self._budget_ns = None if budget_ms is None else int(round(budget_ms * 1e6))
        self._grows = window is None
        self._ring = np.zeros(window or 1024, dtype=np.int64)
        self._missed = np.zeros(window or 1024, dtype=np.bool_)
        self.count = 0
        self.misses = 0
        self.total_ns = 0
        self.max_ns = 0

    def add(self, duration_ns: int) -> bool:
        """Record one duration; returns whether it missed the budget."""
        if self._grows and self.count == self._ring.shape[0]:
            self._ring = np.concatenate([self._ring, np.zeros_like(self._ring)])
            self._missed = np.concatenate([self._missed, np.zeros_like(self._missed)])
        i = self.count % self._ring.shape[0]
        self._ring[i] = duration_ns
        missed = self._budget_ns is not None and duration_ns > self._budget_ns
        self._missed[i] = missed
        self.count += 1
        self.total_ns += duration_ns
        if duration_ns > self.max_ns:
            self.max_ns = duration_ns
        if missed:
            self.misses += 1
        return missed

    def recent(self) -> np.ndarray:
        """The retained samples (ns), oldest first."""
        n = min(self.count, self._ring.shape[0])
        if self.count <= self._ring.shape[0]:
            return self._ring[:n].copy()
        i = self.count % self._ring.shape[0]
        return np.concatenate([self._ring[i:], self._ring[:i]])

    def recent_misses(self) -> int:
        """Misses among the retained samples."""
        return int(np.count_nonzero(self._missed[:min(self.count, self._missed.shape[0])]))

    def recent_miss_rate(self) -> float:
        n = min(self.count, self._missed.shape[0])
        return self.recent_misses() / n if n else 0.0

    def summary(self) -> dict:
        """count, misses, budget and p50/p90/p99 (recent window, or the whole run with window=None),
        mean and max (whole run), in ms."""
        out: dict = {"count": self.count, "misses": self.misses, "budget_ms": self.budget_ms}
        if self.count:
            p50, p90, p99 = np.percentile(self.recent(), [50, 90, 99]) / 1e6
            out.update(p50=float(p50), p90=float(p90), p99=float(p99), max=self.max_ns / 1e6,
                       mean=self.total_ns / self.count / 1e6)
        else:
            out.update(p50=None, p90=None, p99=None, max=None, mean=None)
        return out


@dataclass(frozen=True)
class Health:
    """`state` is one of HEALTH_STATES; `reasons` say why it is not "ok"."""

    state: str
    reasons: tuple[str, ...] = ()


class Telemetry:
    """Stage timers and deadline accounting for one runtime.

    `budgets_ms` maps stage names to budgets (ms); stages without one are timed but never miss.
    `degraded_miss_rate` / `failing_miss_rate`: recent miss-rate thresholds for `health()`, which a
    stage reaches only with at least `min_misses` recent misses: a stage that runs a few times a drive
    (the map and text encoders run when their content changes) read 100% from one warm-up hiccup,
    and "degraded" for as long as it took some 20 more runs to dilute it (hours, for text).
    """

    def __init__(self, budgets_ms: Mapping[str, float] | None = None, window: int | None = 4096,
                 degraded_miss_rate: float = 0.05,  # 1 frame in 20 late: visible jitter, still usable
                 failing_miss_rate: float = 0.5,  # most frames late: the output is not real-time
                 min_misses: int = 3) -> None:
        self.budgets_ms = dict(budgets_ms or {})
        self.window = window
        if not 0 <= degraded_miss_rate <= failing_miss_rate <= 1:
            raise ConfigError(f"need 0 <= degraded_miss_rate ({degraded_miss_rate}) <= failing_miss_rate "
                              f"({failing_miss_rate}) <= 1")
        if isinstance(min_misses, bool) or not isinstance(min_misses, int) or min_misses < 1:
            raise ConfigError(f"min_misses must be an integer >= 1, got {min_misses!r}")
        self.degraded_miss_rate = degraded_miss_rate
        self.failing_miss_rate = failing_miss_rate
        self.min_misses = min_misses
        self.stages: dict[str, StageStats] = {name: StageStats(name, budget, window)
                                              for name, budget in self.budgets_ms.items()}

    def record(self, stage: str, duration_ns: int) -> bool:
        """Record one duration of `stage`; returns whether it missed that stage's budget."""
        stats = self.stages.get(stage)
        if stats is None:
            stats = self.stages[stage] = StageStats(stage, self.budgets_ms.get(stage), self.window)
        return stats.add(duration_ns)

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        """`with telemetry.timer("stage"):` records the block's duration."""
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            self.record(stage, time.perf_counter_ns() - start)

    def deadline_misses(self) -> dict[str, int]:
        """Exact miss counts of every budgeted stage."""
        # snapshots (list(...)): another thread may poll while `record` adds a stage
        return {name: s.misses for name, s in list(self.stages.items()) if s.budget_ms is not None}

    def summary(self) -> dict[str, dict]:
        """Per stage: `StageStats.summary()`."""
        return {name: s.summary() for name, s in list(self.stages.items())}

    def health(self) -> Health:
        """"failing" when end_to_end misses its budget in most recent frames, "degraded" when any
        budgeted stage misses more than `degraded_miss_rate` recently (and `min_misses` times at
        least), else "ok"."""
        reasons = []
        state = "ok"
        for name, s in list(self.stages.items()):  # a snapshot: another thread may poll while stages are added
            if s.budget_ms is None or not s.count:
                continue
            rate = s.recent_miss_rate()
            # (a window shorter than min_misses could never hold them: all its samples then count)
            if rate > self.degraded_miss_rate and s.recent_misses() >= min(self.min_misses, s._missed.shape[0]):
                reasons.append(f"{name} missed its {s.budget_ms:g} ms budget in {rate:.0%} of recent samples")
                if name == "end_to_end" and rate > self.failing_miss_rate:
                    state = "failing"
                elif state == "ok":
                    state = "degraded"
        return Health(state, tuple(reasons))
