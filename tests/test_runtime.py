"""FusionRuntime on the tiny package with real simulated drives: outputs, degraded modes, corrupted
inputs, stamps, drops, deadlines and the counters that must add up."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import cv2
import numpy as np
import pytest

from fusion_rt.backends import Runner, RunnerError, create_runner
from fusion_rt.errors import ConfigError, FusionRTError, GraphMismatchError
from fusion_rt.logs import LogReader
from fusion_rt.messages import CameraFrame, MapRaster, RadarTensor, TextContext
from fusion_rt.package import load_package
from fusion_rt.runtime import OUTCOMES, FusionOutput, FusionRuntime
from fusion_rt.sim import DriveConfig, simulate_drive
from fusion_rt.telemetry import Health

from .tiny_package import make_tiny_package

MS = 1_000_000
S = 1_000_000_000


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return load_package(make_tiny_package(tmp_path_factory.mktemp("runtime") / "pkg"))


@pytest.fixture(scope="module")
def drive():
    """6 s of simulated messages in stamp order (120 camera frames)."""
    return list(simulate_drive(DriveConfig(seconds=6.0, seed=11)))


def _run(rt: FusionRuntime, messages) -> list[FusionOutput]:
    outputs: list[FusionOutput] = []
    for message in messages:
        outputs += rt.push(message)
    return outputs


def _assert_counts_add_up(stats: dict) -> None:
    for modality, c in stats["messages"].items():
        assert c["received"] == sum(c[o] for o in OUTCOMES), (modality, c)
        for outcome, reasons in c["reasons"].items():
            if outcome != "degraded":  # a degraded output can have several reasons
                assert sum(reasons.values()) == c[outcome], (modality, outcome, c)
    camera = stats["messages"]["camera"]
    assert stats["outputs"]["total"] == camera["ok"] + camera["degraded"]


def _assert_finite(output: FusionOutput) -> None:
    assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in output.scene.values())
    assert np.isfinite(output.bev).all() and output.bev.dtype == np.float32
    assert ((output.bev >= 0) & (output.bev <= 1)).all()
    assert all(np.isfinite(v) for v in output.modality_share.values())


def test_every_camera_frame_of_a_recorded_log_gives_an_output(package, short_drive):
    with LogReader(short_drive) as reader:
        messages = [m.message for m in reader.messages()]
    cameras = [m for m in messages if isinstance(m, CameraFrame)]
    with FusionRuntime(package) as rt:
        outputs = _run(rt, messages)
        stats = rt.stats()
    assert [o.stamp_ns for o in outputs] == [c.stamp_ns for c in cameras]
    for out in outputs:
        _assert_finite(out)
        assert set(out.scene) == set(package.scene_labels)
        assert out.bev.shape == (len(package.bev_classes), *package.rig.bev.shape)
        assert out.modality_share_matrix.shape == (len(package.scene_labels) + 1, len(package.modalities))
        assert out.status == ("degraded" if any(f.startswith("degraded:") for f in out.flags) else "ok")
        for modality, source in out.sources.items():
            assert source.stamp_ns <= out.stamp_ns and source.age_ns == out.stamp_ns - source.stamp_ns
            assert source.age_ns <= rt.max_age_ns.get(modality, 0)
        for modality in package.modalities:  # a masked modality is flagged, a used one is not
            assert (modality in out.sources) != (f"degraded:{modality}_missing" in out.flags)
        assert set(out.timings_ms) == {"camera_preprocess", "camera_encoder", "head", "end_to_end", "overhead"}
        assert out.timings_ms["end_to_end"] >= out.timings_ms["camera_encoder"] + out.timings_ms["head"]
    # after the first second every modality has arrived: most outputs are complete
    assert sum(o.status == "ok" for o in outputs) > len(outputs) // 2
    _assert_counts_add_up(stats)
    assert stats["ignored"]["GroundTruth"] == len(cameras)
    assert stats["encoder_runs"]["camera"] == len(cameras)
    for stage in ("camera_preprocess", "camera_encoder", "head", "end_to_end", "radar_encoder"):
        lat = stats["latency_ms"][stage]
        assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def _map(stamp: int, value: int) -> MapRaster:
    grid = np.full((64, 64), 50, dtype=np.int8)
    grid[:, :8] = value
    return MapRaster(stamp_ns=stamp, grid=grid, cell_m=1.0, x_max_m=60.0, y_max_m=32.0)


def test_map_and_text_encoded_only_when_content_changes(package):
    t0 = 1_000 * 1_000_000_000
    with FusionRuntime(package) as rt:
        values = [0, 0, 0, 25, 25, 0, 0]  # 3 distinct runs of content
        texts = ["school zone", "school zone", "School  zone!", "rain", "rain", "rain", "school zone"]
        for k, (value, text) in enumerate(zip(values, texts, strict=True)):
            stamp = t0 + k * 200 * MS
            rt.push(_map(stamp, value))
            rt.push(TextContext(stamp_ns=stamp + MS, text=text))
            (out,) = rt.push(CameraFrame(stamp_ns=stamp + 2 * MS, data=_jpeg()))
            assert out.sources["map"].stamp_ns == stamp  # re-stamped features count as fresh
            assert out.sources["text"].stamp_ns == stamp + MS
        stats = rt.stats()
    assert stats["encoder_runs"]["map"] == 3 and stats["encoder_reused"]["map"] == 4
    assert stats["encoder_runs"]["text"] == 3 and stats["encoder_reused"]["text"] == 4  # same words -> same ids
    assert stats["messages"]["map"]["ok"] == 7 and stats["messages"]["text"]["ok"] == 7


_JPEG_CACHE: dict[tuple[int, int, int], bytes] = {}


def _jpeg(width: int = 640, height: int = 360, seed: int = 0) -> bytes:
    key = (width, height, seed)
    if key not in _JPEG_CACHE:
        image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (9, 9), 3)
        _JPEG_CACHE[key] = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    return _JPEG_CACHE[key]


def _radar(stamp: int, rng: np.random.Generator, bad_fraction: float = 0.0, bad=np.nan, shape=(128, 64)):
    data = rng.normal(10, 5, (2, *shape)).astype(np.float32)
    n_bad = int(round(bad_fraction * data.size))
    if n_bad:
        data.reshape(-1)[rng.choice(data.size, n_bad, replace=False)] = bad
    return RadarTensor(stamp_ns=stamp, data=data, channels=("power_db", "radial_velocity_mps"), range_min_m=0.5,
                       range_max_m=100.0, azimuth_min_rad=-math.pi / 3, azimuth_max_rad=math.pi / 3)  # the rig's


def test_bad_stamps_are_rejected_and_a_clock_jump_resets_the_cache(package):
    t0 = 3_000 * 1_000_000_000
    rng = np.random.default_rng(0)
    with FusionRuntime(package) as rt:
        rt.push(_radar(t0, rng))
        (out,) = rt.push(CameraFrame(stamp_ns=t0 + 10 * MS, data=_jpeg()))
        assert "radar" in out.sources
        assert rt.push(CameraFrame(stamp_ns=t0 + 10 * MS, data=_jpeg())) == []  # duplicate
        assert rt.push(CameraFrame(stamp_ns=t0 + 5 * MS, data=_jpeg())) == []  # backwards
        assert rt.push(CameraFrame(stamp_ns=t0 + 900 * MS, data=_jpeg())) == []  # future vs the newest stamp
        assert rt.push(CameraFrame(stamp_ns=-5, data=_jpeg())) == []  # not a valid stamp
        assert rt.push(CameraFrame(stamp_ns=1.5e18, data=_jpeg())) == []  # not an int
        # one radar stamp 100 s in the past: refused alone (it could be a corrupted stamp), nothing is forgotten
        rt.push(_radar(t0 - 100_000 * MS, rng))
        assert rt.stats()["clock_resets"] == 0
        # the camera confirms it (a log looping): the cache is emptied and the camera frame fed after the reset
        (out,) = rt.push(CameraFrame(stamp_ns=t0 - 100_000 * MS + 10 * MS, data=_jpeg()))
        assert "radar" not in out.sources and out.status == "degraded"
        rt.push(_radar(t0 - 100_000 * MS + 20 * MS, rng))
        (out,) = rt.push(CameraFrame(stamp_ns=t0 - 100_000 * MS + 30 * MS, data=_jpeg()))
        stats = rt.stats()
    reasons = stats["messages"]["camera"]["reasons"]["rejected"]
    assert reasons == {"stamp_duplicate": 1, "stamp_backwards": 1, "stamp_future": 1, "bad_stamp": 2}
    assert stats["messages"]["radar"]["reasons"]["rejected"] == {"stamp_backwards": 1}
    assert stats["clock_resets"] == 1
    # radar on the new clock is fresh again
    assert "radar" in out.sources and out.sources["radar"].age_ns == 10 * MS
    _assert_counts_add_up(stats)


def test_stale_triggers_are_dropped_and_counted(package):
    t0 = 4_000 * 1_000_000_000
    with FusionRuntime(package) as rt:
        assert rt.push(CameraFrame(stamp_ns=t0, data=_jpeg()), deadline_ns=time.monotonic_ns() - 1) == []
        assert len(rt.push(CameraFrame(stamp_ns=t0 + 50 * MS, data=_jpeg()),
                           deadline_ns=time.monotonic_ns() + 10_000 * MS)) == 1
        rt.note_dropped(CameraFrame(stamp_ns=t0 + 100 * MS, data=b""))  # the caller's mailbox replaced it
        rt.note_dropped(CameraFrame(stamp_ns=t0 + 150 * MS, data=b""), reason="queue_full")
        stats = rt.stats()
    camera = stats["messages"]["camera"]
    assert camera["dropped"] == 3 and stats["dropped"] == 3
    assert camera["reasons"]["dropped"] == {"deadline_passed": 1, "superseded": 1, "queue_full": 1}
    assert camera["received"] == 4 and stats["outputs"]["total"] == 1
    _assert_counts_add_up(stats)


def test_dropped_messages_keep_the_stamp_clock(package):
    """A latest-wins caller that falls behind drops many messages: their stamps still advance the
    stream checks' clock, so the next message it does push is not refused as "future" (the runtime's
    future margin is 500 ms); a dropped message whose stamp the checks refuse counts as rejected."""
    t0 = 4_000 * 1_000_000_000
    rng = np.random.default_rng(0)
    with FusionRuntime(package) as rt:
        assert len(rt.push(CameraFrame(stamp_ns=t0, data=_jpeg()))) == 1
        for k in range(1, 20):  # 950 ms of frames the caller superseded
            assert rt.note_dropped(CameraFrame(stamp_ns=t0 + 50 * k * MS, data=b"")) == "dropped"
        assert rt.note_dropped(CameraFrame(stamp_ns=t0 + 900 * MS, data=b"")) == "rejected"  # backwards
        assert rt.push(_radar(t0 + 960 * MS, rng)) == []
        assert len(rt.push(CameraFrame(stamp_ns=t0 + 1000 * MS, data=_jpeg()))) == 1
        stats = rt.stats()
    camera, radar = stats["messages"]["camera"], stats["messages"]["radar"]
    assert radar["rejected"] == 0 and radar["ok"] == 1, radar
    assert camera["reasons"]["dropped"] == {"superseded": 19}
    assert camera["reasons"]["rejected"] == {"stamp_backwards": 1}
    _assert_counts_add_up(stats)


class SlowRunner(Runner):
    """A backend that wraps another and sleeps on chosen calls (deadline tests)."""

    def __init__(self, inner: Runner, sleep_s: float, every: int) -> None:
        super().__init__(inner.name)
        self.inner, self.sleep_s, self.every = inner, sleep_s, every
        self.calls = 0
        self.slow_calls = 0

    input_names = property(lambda self: self.inner.input_names)
    output_names = property(lambda self: self.inner.output_names)

    def activate_impl(self) -> None:
        self.inner.activate()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()

    def infer_impl(self, feed):
        self.calls += 1
        if self.calls % self.every == 0:
            self.slow_calls += 1
            time.sleep(self.sleep_s)
        return self.inner.infer(feed)


class NanRunner(SlowRunner):
    """Returns non-finite outputs on chosen calls."""

    def infer_impl(self, feed):
        self.calls += 1
        outputs = self.inner.infer(feed)
        if self.calls % self.every == 0:
            outputs = {k: np.full_like(v, np.nan) for k, v in outputs.items()}
        return outputs


def test_non_finite_encoder_or_head_outputs_never_leave_the_runtime(package):
    def factory(pkg, graph):
        runner = create_runner(pkg, graph)
        return NanRunner(runner, 0.0, every=2) if graph in ("head", "radar") else runner

    t0 = 6_000 * 1_000_000_000
    rng = np.random.default_rng(1)
    outputs = []
    with FusionRuntime(package, backend=factory) as rt:
        for k in range(8):
            rt.push(_radar(t0 + k * 50 * MS, rng))
            outputs += rt.push(CameraFrame(stamp_ns=t0 + k * 50 * MS + 5 * MS, data=_jpeg()))
        stats = rt.stats()
    assert len(outputs) == 4
    for out in outputs:
        _assert_finite(out)
    assert stats["messages"]["camera"]["reasons"]["rejected"] == {"nonfinite_output": 4}
    assert stats["messages"]["radar"]["reasons"]["rejected"] == {"nonfinite_tokens": 4}
    _assert_counts_add_up(stats)


def test_max_age_override_and_health(package, drive):
    with FusionRuntime(package, max_age_ns={"radar": 1}) as rt:  # radar is never fresh within 1 ns
        outputs = _run(rt, drive[:200])
        assert rt.health().state == "degraded" and "degraded:radar_missing" in rt.health().reasons
    assert outputs and all("degraded:radar_missing" in o.flags for o in outputs)


def test_stale_means_a_message_before_the_frame_that_aged_out(package):
    """stale:<m> when the latest message at or before the frame is too old, even if a message stamped
    after the frame is already cached; missing alone when there was none."""
    t0 = 9_000 * 1_000_000_000
    rng = np.random.default_rng(2)
    with FusionRuntime(package) as rt:  # radar max age 100 ms
        (first,) = rt.push(CameraFrame(stamp_ns=t0, data=_jpeg()))
        rt.push(_radar(t0 + 10 * MS, rng))
        (fresh,) = rt.push(CameraFrame(stamp_ns=t0 + 50 * MS, data=_jpeg()))
        rt.push(_radar(t0 + 480 * MS, rng))  # arrives early: stamped after the next frame
        (aged,) = rt.push(CameraFrame(stamp_ns=t0 + 450 * MS, data=_jpeg()))
    assert "degraded:radar_missing" in first.flags and "stale:radar" not in first.flags
    assert "radar" in fresh.sources
    assert "degraded:radar_missing" in aged.flags and "stale:radar" in aged.flags


def test_a_camera_delivered_late_still_finds_fresh_radar(package):
    """Camera frames stamped at exposure arrive 200 ms late (within the 500 ms future margin) while
    radar arrives on time: the default history keeps the radar a frame needs, and nothing a later
    frame could choose is evicted (history 4 lost it for every frame)."""
    t0, late = 9_000 * 1_000_000_000, 200 * MS
    rng = np.random.default_rng(5)
    events = []
    for k in range(30):
        events.append((t0 + k * 50 * MS + MS, _radar(t0 + k * 50 * MS, rng)))
        events.append((t0 + k * 50 * MS + 25 * MS + late, CameraFrame(stamp_ns=t0 + k * 50 * MS + 25 * MS,
                                                                      data=_jpeg())))
    events.sort(key=lambda e: e[0])
    for history, expect_radar in ((16, True), (4, False)):
        with FusionRuntime(package, max_age_ns={"radar": 100 * MS}, history=history) as rt:
            outputs = _run(rt, [m for _, m in events])
            evicted = rt.stats()["history_evicted"]["radar"]
        steady = outputs[5:25]
        assert len(steady) == 20 and all(("radar" in o.sources) == expect_radar for o in steady)
        assert (evicted == 0) == expect_radar, evicted


def test_health_reads_each_sensor_on_its_own_clock(package, drive):
    """A radar clock 700 ms ahead of the camera's, or one text message an hour ahead, is no camera
    silence: health stays free of camera_missing while every frame gives an output."""
    rng = np.random.default_rng(6)
    t0 = 9_200 * 1_000_000_000
    with FusionRuntime(package, trigger_timeout_ns=500 * MS) as rt:
        rt.push(TextContext(stamp_ns=t0 + 3600 * S, text="rain ahead"))
        outputs = []
        for k in range(40):
            rt.push(_radar(t0 + 700 * MS + k * 50 * MS, rng))
            outputs += rt.push(CameraFrame(stamp_ns=t0 + k * 50 * MS + 10 * MS, data=_jpeg()))
        assert len(outputs) >= 38
        assert not any("camera_missing" in r for r in rt.health().reasons), rt.health()
        for k in range(40, 60):  # the camera really stops: radar runs on for a second
            rt.push(_radar(t0 + 700 * MS + k * 50 * MS, rng))
        assert rt.health().reasons[0].startswith("degraded:camera_missing")


def test_backend_failures_keep_the_counts_and_push_checks_its_arguments(package):
    """A RunnerError from an encoder or the head propagates, and the message is counted as rejected
    (runner_error); a bad deadline_ns / now_ns is the caller's error, raised before anything is
    counted; numpy stamps leave the runtime as int."""
    class FailOnce(SlowRunner):
        def infer_impl(self, feed):
            self.calls += 1
            if self.calls == self.every:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return self.inner.infer(feed)

    def factory(p, g):
        runner = create_runner(p, g)
        return FailOnce(runner, 0.0, every=2) if g in ("head", "radar") else runner

    rng = np.random.default_rng(7)
    t0 = 9_300 * 1_000_000_000
    with FusionRuntime(package, backend=factory) as rt:
        failures = 0
        for k in range(3):
            frame = CameraFrame(stamp_ns=t0 + k * 50 * MS + 5 * MS, data=_jpeg())
            for message in (_radar(t0 + k * 50 * MS, rng), frame):
                try:
                    rt.push(message)
                except RunnerError:
                    failures += 1
        for bad in ({"deadline_ns": "1s"}, {"deadline_ns": 1.5e30}, {"now_ns": float(t0)}, {"now_ns": True}):
            with pytest.raises(ConfigError, match=next(iter(bad))):
                rt.push(CameraFrame(stamp_ns=t0 + 500 * MS, data=_jpeg()), **bad)
        (out,) = rt.push(CameraFrame(stamp_ns=np.uint64(t0 + 600 * MS), data=_jpeg()))
        stats = rt.stats()
    assert failures == 2
    for m in ("camera", "radar"):
        assert stats["messages"][m]["reasons"]["rejected"] == {"runner_error": 1}
    assert stats["messages"]["camera"]["received"] == 4  # the refused pushes were not counted
    assert type(out.stamp_ns) is int and type(out.sources["camera"].stamp_ns) is int
    _assert_counts_add_up(stats)


def test_history_evictions_are_counted(package):
    """Radar features beyond `history` slots push the oldest out, and stats() says how many."""
    t0 = 9_500 * 1_000_000_000
    rng = np.random.default_rng(3)
    with FusionRuntime(package, history=4) as rt:
        for k in range(6):
            rt.push(_radar(t0 + k * 20 * MS, rng))
        evicted = rt.stats()["history_evicted"]
    assert evicted == {"radar": 2, "map": 0, "text": 0}


def test_health_says_when_the_trigger_falls_silent(package, drive):
    """No camera frame means no output to carry a flag: health() itself must say the camera is gone."""
    cam = [i for i, m in enumerate(drive) if isinstance(m, CameraFrame)]
    with FusionRuntime(package, trigger_timeout_ns=500 * MS) as rt:
        _run(rt, drive[: cam[40] + 1])
        assert rt.health().state == "ok", rt.health()
        others = [m for m in drive[cam[40] + 1:] if not isinstance(m, CameraFrame)]
        _run(rt, [m for m in others if m.stamp_ns - drive[cam[40]].stamp_ns <= 400 * MS])
        assert rt.health().state == "ok"  # 0.4 s without a frame: within the timeout
        _run(rt, [m for m in others if 400 * MS < m.stamp_ns - drive[cam[40]].stamp_ns <= 1500 * MS])
        health = rt.health()
        assert health.state == "degraded" and health.reasons[0].startswith("degraded:camera_missing")
        (out,) = _run(rt, [next(m for m in drive[cam[40]:] if isinstance(m, CameraFrame)
                                and m.stamp_ns - drive[cam[40]].stamp_ns > 1500 * MS)])
        assert not any("camera_missing" in r for r in rt.health().reasons)  # the camera is back
        # a camera that only sends frames the runtime rejects is no better than a silent one
        t = out.stamp_ns
        for k in range(1, 30):
            _run(rt, [m for m in others if t < m.stamp_ns <= t + k * 50 * MS and m.stamp_ns > t + (k - 1) * 50 * MS])
            rt.push(CameraFrame(stamp_ns=t + k * 50 * MS, data=b"\xff\xd8 not a jpeg"))
        assert rt.health().reasons[0].startswith("degraded:camera_missing")
    with pytest.raises(ConfigError, match="trigger_timeout_ns"):
        FusionRuntime(package, trigger_timeout_ns=0)


def test_health_with_now_says_when_every_sensor_falls_silent(package, drive):
    """Stamps alone cannot tell a quiet drive from a dead feed: given the supervisor's now on the
    sensors' clock, health() fails once no message of any sensor was accepted for trigger_timeout_ns,
    and is ok again with the next message; before any message and after reset() nothing is judged."""
    with FusionRuntime(package, trigger_timeout_ns=500 * MS) as rt:
        assert rt.health(now_ns=drive[0].stamp_ns + 10 * S).state == "ok"  # nothing pushed yet
        _run(rt, drive[:200])
        last = max(m.stamp_ns for m in drive[:200])
        assert rt.health(now_ns=last + 400 * MS).state == "ok"
        assert rt.health().state == "ok"  # without now there is nothing to judge silence by
        health = rt.health(now_ns=last + 900 * MS)
        assert health.state == "failing", health
        assert health.reasons[0] == ("silent: no sensor message accepted for 900 ms before now_ns "
                                     "(limit 500 ms)"), health
        assert rt.health(now_ns=last - 5 * S).state == "ok"  # a now behind the stamps is no silence
        frame = next(m for m in drive[200:] if isinstance(m, CameraFrame))
        (out,) = _run(rt, [frame])
        assert rt.health(now_ns=frame.stamp_ns + 400 * MS).state == "ok"
        # a rejected frame's stamp still counts as the sensor speaking (its rejection is another matter)
        rt.push(CameraFrame(stamp_ns=frame.stamp_ns + 300 * MS, data=b"\xff\xd8 not a jpeg"))
        assert rt.health(now_ns=frame.stamp_ns + 700 * MS).state == "ok"
        assert rt.health(now_ns=frame.stamp_ns + 900 * MS).state == "failing"
        rt.reset()
        assert rt.health(now_ns=frame.stamp_ns + 60 * S).state == "ok"
        for bad in (float(last), True, "now"):
            with pytest.raises(ConfigError, match="now_ns"):
                rt.health(now_ns=bad)


def test_context_manager_closes_sessions(package):
    with FusionRuntime(package) as rt:
        runners = rt.runners
        assert set(runners) == {"camera", "radar", "map", "text", "head"}
        assert all(r.is_active for r in runners.values())
    assert not any(r.is_active for r in runners.values())
    with pytest.raises(RunnerError, match="closed"):
        rt.push(CameraFrame(stamp_ns=1, data=_jpeg()))
    rt.close()  # idempotent


class GateRunner(SlowRunner):
    """Blocks its first call until released, and records how many calls ran at once."""

    def __init__(self, inner: Runner) -> None:
        super().__init__(inner, 0.0, every=1)
        self.entered, self.release = threading.Event(), threading.Event()
        self.running = self.most_at_once = 0

    def infer_impl(self, feed):
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if not self.entered.is_set():
                self.entered.set()
                assert self.release.wait(10), "never released"
            return self.inner.infer(feed)
        finally:
            self.running -= 1


def _gated_runtime(package, graph: str = "camera"):
    gates = {}

    def factory(p, g):
        runner = create_runner(p, g)
        if g == graph:
            gates[g] = runner = GateRunner(runner)
        return runner

    return FusionRuntime(package, backend=factory), gates[graph]


def _in_thread(fn, *args):
    """Start fn(*args) in a thread; returns (thread, results) where results gets its return or error."""
    results: list = []

    def target():
        try:
            results.append(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, results


def test_stats_from_another_thread_waits_for_the_push_in_progress(package):
    """A supervisor polling stats() while a push is inside the camera encoder gets whole counts
    (received = ok + degraded + rejected + dropped), not the message counted as received without
    its outcome; health() does not wait."""
    rt, gate = _gated_runtime(package)
    with rt:
        pusher, pushed = _in_thread(rt.push, CameraFrame(stamp_ns=7 * 10**9, data=_jpeg()))
        assert gate.entered.wait(10)
        poller, polled = _in_thread(rt.stats)
        poller.join(0.2)
        assert poller.is_alive() and not polled, polled
        health = rt.health()  # answers meanwhile, and sees the encoder held past stall_after_ns
        assert health.state == "failing" and health.reasons[0].startswith("stalled: camera_encoder"), health
        gate.release.set()
        pusher.join(10)
        poller.join(10)
        (outputs,), (stats,) = pushed, polled
        assert len(outputs) == 1
        assert stats["messages"]["camera"]["received"] == 1 and stats["outputs"]["total"] == 1
        _assert_counts_add_up(stats)


def test_close_waits_for_a_push_in_progress_and_pushes_from_threads_run_one_at_a_time(package):
    """close() from another thread (a ROS node's shutdown) lets the push in progress finish instead
    of failing it as a backend error; a second thread's push waits for the first; after close every
    call but health()/stats() is refused and health() says the runtime is closed."""
    rt, gate = _gated_runtime(package)
    t0 = 8 * 10**9
    first, first_out = _in_thread(rt.push, CameraFrame(stamp_ns=t0, data=_jpeg()))
    assert gate.entered.wait(10)
    second, second_out = _in_thread(rt.push, CameraFrame(stamp_ns=t0 + 50 * MS, data=_jpeg()))
    second.join(0.1)
    assert second.is_alive() and gate.running == 1
    closer, closed = _in_thread(rt.close)
    closer.join(0.1)
    assert closer.is_alive(), "close() released the sessions under a running push"
    gate.release.set()
    for thread in (first, second, closer):
        thread.join(10)
    assert len(first_out[0]) == 1 and gate.most_at_once == 1
    # the waiting push was refused by name: closed, not a backend failure
    assert isinstance(second_out[0], RunnerError) and "closed" in str(second_out[0])
    stats = rt.stats()
    assert stats["messages"]["camera"]["reasons"]["rejected"] == {}
    _assert_counts_add_up(stats)
    assert rt.health() == Health("failing", ("closed: the runtime's sessions are released",))
    for call in (lambda: rt.note_dropped(_radar(t0, np.random.default_rng(0))), rt.reset):
        with pytest.raises(RunnerError, match="closed"):
            call()
    assert rt.stats()["messages"]["radar"]["received"] == 0


def test_construction_errors_name_the_value(package, tmp_path):
    with pytest.raises(ConfigError, match="'lidar'"):
        FusionRuntime(package, trigger="lidar")
    with pytest.raises(ConfigError, match="'gpu-magic'"):
        FusionRuntime(package, backend="gpu-magic")
    with pytest.raises(ConfigError, match="max_age_ns"):
        FusionRuntime(package, max_age_ns={"radar": -1})
    with pytest.raises(ConfigError, match="threads"):
        FusionRuntime(package, threads=0)
    bad_pre = dict(package.manifest["preprocess"], camera_height=72)  # the graph takes 36x64
    bad = dataclasses.replace(package, manifest={**package.manifest, "preprocess": bad_pre})
    with pytest.raises(GraphMismatchError, match=r"graph 'camera'.inputs\['image'\]"):
        FusionRuntime(bad)
    assert issubclass(GraphMismatchError, FusionRTError)


def test_head_present_must_have_a_column_per_modality(tmp_path):
    import onnx

    from fusion_rt.package import replace_graph

    root = make_tiny_package(tmp_path / "pkg", modalities=("camera", "radar"))
    head = onnx.load(str(root / "head.onnx"))
    present = next(i for i in head.graph.input if i.name == "present")
    present.type.tensor_type.shape.dim[1].dim_value = 3  # a head built for three modalities
    onnx.save(head, str(root / "head.onnx"))
    with pytest.raises(GraphMismatchError, match=r"'present'.*\['camera', 'radar'\]"):
        FusionRuntime(replace_graph(root, "head"))


def test_radar_trigger_and_ignored_messages(package, drive):
    """Any modality can trigger; messages the package does not consume are counted as ignored."""
    with FusionRuntime(package, trigger="radar", max_age_ns={"camera": 100 * MS}) as rt:
        outputs = _run(rt, drive[:150])
        stats = rt.stats()
    assert len(outputs) == stats["messages"]["radar"]["received"] > 0
    assert all(set(o.timings_ms) >= {"radar_preprocess", "radar_encoder", "head"} for o in outputs)
    assert stats["ignored"]["CameraInfo"] > 0 and stats["ignored"]["RadarDetections"] > 0


def _half_tokens(root, head: bool = True) -> None:
    """Make the tiny package's encoders output float16 tokens and, with `head`, its head take them."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from fusion_rt.package import describe_graph, write_manifest

    for m in ("camera", "radar", "map", "text"):
        model = onnx.load(str(root / f"{m}_encoder.onnx"))
        for node in model.graph.node:
            node.output[:] = ["tokens32" if o == "tokens" else o for o in node.output]
        model.graph.node.append(helper.make_node("Cast", ["tokens32"], ["tokens"], to=TensorProto.FLOAT16))
        model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
        onnx.save(model, str(root / f"{m}_encoder.onnx"))
    if head:
        model = onnx.load(str(root / "head.onnx"))
        for value in model.graph.input:
            if value.name.endswith("_tokens"):
                value.type.tensor_type.elem_type = TensorProto.FLOAT16
                for node in model.graph.node:
                    node.input[:] = [f"{i}_32" if i == value.name else i for i in node.input]
                model.graph.node.insert(0, helper.make_node("Cast", [value.name], [f"{value.name}_32"],
                                                            to=TensorProto.FLOAT))
        onnx.save(model, str(root / "head.onnx"))
    manifest = json.loads((root / "manifest.json").read_text())
    for name, g in manifest["graphs"].items():
        manifest["graphs"][name] = describe_graph(root, g["file"], name, g["role"], g.get("modality")).to_dict()
    manifest.pop("format_version")
    write_manifest(root, manifest)


def test_float16_tokens_run_and_a_dtype_mismatch_is_refused_at_construction(tmp_path, drive):
    """Tokens are fed in the encoder's dtype (the feature cache used to hold float32 only, and a
    float16 head failed at its first frame); a head taking another dtype than its encoder's tokens
    is refused when the runtime is built, not at the first camera frame."""
    root = make_tiny_package(tmp_path / "half")
    _half_tokens(root)
    with FusionRuntime(load_package(root)) as rt:
        outputs = _run(rt, drive[:80])
    assert outputs and all(o.status in ("ok", "degraded") for o in outputs)
    assert any(len(o.sources) > 1 for o in outputs)  # cached float16 tokens of other modalities were used
    for out in outputs:
        _assert_finite(out)

    mixed = make_tiny_package(tmp_path / "mixed")
    _half_tokens(mixed, head=False)  # float16 tokens, the head takes float32
    with pytest.raises(GraphMismatchError, match=r"graph 'head'.inputs\['camera_tokens'\].dtype is float32, "
                                                 r"encoder 'camera' outputs 'tokens' as float16"):
        FusionRuntime(load_package(mixed))


def test_head_inputs_nothing_feeds_are_refused_at_construction(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from fusion_rt.package import replace_graph

    root = make_tiny_package(tmp_path / "pkg")
    head = onnx.load(str(root / "head.onnx"))
    head.graph.input.append(helper.make_tensor_value_info("ego_speed", TensorProto.FLOAT, ["batch", 1]))
    onnx.save(head, str(root / "head.onnx"))
    with pytest.raises(GraphMismatchError, match=r"graph 'head': inputs \['ego_speed'\] are fed by nothing"):
        FusionRuntime(replace_graph(root, "head"))


@pytest.mark.parametrize("dims", [("batch", 6, 3), ("batch", 6, "m"), ("batch", "rows", 4), ("batch", 24)])
def test_modality_share_layout_is_checked_at_construction(package, dims):
    """A package object that skipped load_package's checks (or a dynamic axis) is refused when the
    runtime is built: a share with the wrong column count crashed the first frame (zip strict)."""
    head = package.head
    outputs = tuple(dataclasses.replace(t, shape=dims) if t.name == "modality_share" else t for t in head.outputs)
    bad = dataclasses.replace(package, graphs={**package.graphs, "head": dataclasses.replace(head, outputs=outputs)})
    with pytest.raises(GraphMismatchError, match=r"'modality_share'\] shape .* is not \[batch, 6, 4\]"):
        FusionRuntime(bad)


def test_a_misspelt_budget_override_is_refused(package):
    # budgets_ms={'end-to-end': ...} was timed as a stage of its own and never checked: 0 misses, "ok".
    with pytest.raises(ConfigError, match=r"budgets_ms\['end-to-end'\]: not a stage"):
        FusionRuntime(package, budgets_ms={"end-to-end": 0.001})
    with pytest.raises(ConfigError, match="positive number"):
        FusionRuntime(package, budgets_ms={"end_to_end": float("nan")})
    with FusionRuntime(package, budgets_ms={"end_to_end": np.float32(5)}, threads=np.int64(1),
                       max_age_ns={"radar": np.int64(100_000_000)}) as rt:  # numpy numbers from a config
        assert rt.telemetry.budgets_ms["end_to_end"] == 5.0 and rt.max_age_ns["radar"] == 100_000_000


def test_what_is_not_a_fusion_rt_message_is_refused(package):
    # None, a dict or a ROS message straight from a subscriber were counted as "ignored": no output,
    # health "ok", nothing said. fusion-rt message kinds the package does not consume stay ignored.
    from fusion_rt.messages import CameraInfo

    with FusionRuntime(package) as rt:
        for wrong in (None, {"stamp_ns": 1, "data": b""}, b"\xff\xd8"):
            with pytest.raises(ConfigError, match="push takes fusion_rt.messages objects"):
                rt.push(wrong)
        assert rt.push(CameraInfo(stamp_ns=1, width=4, height=2, k=np.eye(3))) == []
        assert rt.stats()["ignored"] == {"CameraInfo": 1}
    with pytest.raises(ConfigError, match="stream_checker"):
        FusionRuntime(package, stream_checker="x")
    with pytest.raises(ConfigError, match="check_camera_size"):
        FusionRuntime(package, check_camera_size="no")


def test_reset_starts_a_new_drive(package, drive):
    # A runtime reused for a second drive refused its first message as stamp_backwards (the first
    # drive's last stamps were later), so a map published once at its start was lost for the whole drive.
    second = [m for m in drive if not isinstance(m, MapRaster)]
    first_map = next(m for m in drive if isinstance(m, MapRaster))
    shift = min(m.stamp_ns for m in drive)
    second = [dataclasses.replace(first_map, stamp_ns=first_map.stamp_ns - shift)] + [
        dataclasses.replace(m, stamp_ns=m.stamp_ns - shift) for m in second]  # an earlier clock, map latched
    second.sort(key=lambda m: m.stamp_ns)

    def masked_map(outputs):
        return sum("map_missing" in " ".join(o.flags) for o in outputs)

    with FusionRuntime(package) as fresh:
        expected = masked_map(_run(fresh, second))
    with FusionRuntime(package) as rt:
        _run(rt, drive)
        rt.reset()
        got = _run(rt, second)
        assert masked_map(got) == expected and len(got) == len([m for m in second if isinstance(m, CameraFrame)])
        assert all(c["rejected"] == 0 for c in rt.stats()["messages"].values())
