"""R12 deadlines and watchdog (issue #8): frames made late by a slow backend (injected through the
runner-factory contract) are counted exactly; a stalled stage is seen by a supervising thread within
two periods, health goes to "failing" naming the stage, and comes back when the stage returns."""

from __future__ import annotations

import threading
import time

from fusion_rt.backends import create_runner
from fusion_rt.messages import CameraFrame
from fusion_rt.runtime import FusionRuntime

from ..test_runtime import SlowRunner, _assert_counts_add_up, _jpeg
from ._stream import MS, PERIOD_NS, sensor_stream


def test_r12_deadline_misses_with_a_slow_backend_are_counted_exactly(tiny_package, figures):
    slow: dict[str, SlowRunner] = {}

    def factory(pkg, graph):
        runner = create_runner(pkg, graph)
        if graph == "head":
            runner = slow[graph] = SlowRunner(runner, sleep_s=0.06, every=3)
        return runner

    t0 = 5_000 * 1_000_000_000
    # budgets far from both the fast path (~1-5 ms here) and the sleep (60 ms): the count is exact
    with FusionRuntime(tiny_package, backend=factory, budgets_ms={"head": 30.0, "end_to_end": 30.0}) as rt:
        outputs = [rt.push(CameraFrame(stamp_ns=t0 + k * 50 * MS, data=_jpeg()))[0] for k in range(12)]
        stats = rt.stats()
    assert slow["head"].slow_calls == 4
    assert stats["deadline_misses"]["head"] == 4 and stats["deadline_misses"]["end_to_end"] == 4
    assert [("deadline_miss:head" in o.flags) for o in outputs] == [k % 3 == 2 for k in range(12)]
    assert stats["latency_ms"]["head"]["misses"] == 4 and stats["latency_ms"]["head"]["max"] >= 60
    assert stats["health"] == "degraded"  # end_to_end late in 4 of 12 recent frames: above 5%, below 50%
    _assert_counts_add_up(stats)
    figures.update(late_frames_injected=4, deadline_misses_counted=stats["deadline_misses"])


class _StallingRunner(SlowRunner):
    """SlowRunner that notes when each of its stalls starts."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.stalled_at: list[int] = []

    def infer_impl(self, feed):
        if (self.calls + 1) % self.every == 0:
            self.stalled_at.append(time.perf_counter_ns())
        return super().infer_impl(feed)


def test_r12_a_stalled_stage_is_detected_within_two_periods_and_health_recovers(tiny_package, figures):
    stall_s, stall_on = 0.4, 15  # the camera encoder hangs for 8 periods on the 15th frame
    runners: dict[str, _StallingRunner] = {}

    def factory(pkg, graph):
        runner = create_runner(pkg, graph)
        if graph == "camera":
            runner = runners[graph] = _StallingRunner(runner, sleep_s=stall_s, every=stall_on)
        return runner

    samples: list[tuple[int, str, tuple[str, ...]]] = []
    stop = threading.Event()
    with FusionRuntime(tiny_package, backend=factory) as rt:  # stall limit: the 50 ms end_to_end budget
        assert rt.stall_after_ns == PERIOD_NS

        def supervise() -> None:  # a supervisor polls health several times a period
            while not stop.is_set():
                health = rt.health()
                samples.append((time.perf_counter_ns(), health.state, health.reasons))
                time.sleep(0.005)

        supervisor = threading.Thread(target=supervise, daemon=True)
        supervisor.start()
        start = time.perf_counter_ns()
        try:
            for message in sensor_stream(28, seed=12):  # one stall (frame 15)
                if isinstance(message, CameraFrame):  # camera frames paced at 20 Hz, as on the vehicle
                    k = rt.stats()["messages"]["camera"]["received"]
                    time.sleep(max(0.0, (start + k * PERIOD_NS - time.perf_counter_ns()) / 1e9))
                rt.push(message)
        finally:
            stop.set()
            supervisor.join()
        final = rt.health()
        stats = rt.stats()
    (stalled_at,) = runners["camera"].stalled_at
    failing = [(t, reasons) for t, state, reasons in samples if state == "failing"]
    assert failing, "the stall was never reported"
    detected_ns = failing[0][0] - stalled_at
    assert 0 < detected_ns <= 2 * PERIOD_NS, detected_ns / 1e6
    assert "stalled: camera_encoder" in failing[0][1][0]
    resumed_at = stalled_at + int(stall_s * 1e9)
    assert all(stalled_at < t < resumed_at + PERIOD_NS for t, _ in failing)  # only while stalled
    assert any(t > resumed_at + PERIOD_NS and state != "failing" for t, state, _ in samples)
    assert stats["deadline_misses"]["end_to_end"] >= 1 and stats["outputs"]["total"] == 28
    assert final.state == "ok", final  # the late frame is 1 in 28 recent: below the degraded rate
    _assert_counts_add_up(stats)
    figures.update(period_ms=PERIOD_NS / 1e6, stall_ms=stall_s * 1e3, detected_after_ms=round(detected_ns / 1e6, 1),
                   detected_within_periods=round(detected_ns / PERIOD_NS, 2),
                   failing_until_ms_after_resume=round((failing[-1][0] - resumed_at) / 1e6, 1),
                   final_health=final.state)
