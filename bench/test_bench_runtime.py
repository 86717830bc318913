"""Runtime benchmark: ONNX Runtime threading modes with several graphs alternating on 2 cores.

Run: `.venv/bin/pytest bench/test_bench_runtime.py --benchmark-only -s` (outside the default run).
The runtime's overhead vs raw `session.run`, its critical path and the peers are measured by
`fusion_rt.bench` (bench/test_bench_budgets.py and `fusion-rt bench`).

Package: $FUSION_RT_BENCH_PACKAGE if set (a real exported package), else tests/tiny_package.py's
package with `heavy=True` (convolutional camera/radar encoders, so the camera encoder dominates a
frame as in a real model; the plain tiny graphs take microseconds and would only measure Python).

Per mode (`no_spin`, `spin`, `global`), the median step with a radar frame and a camera frame each
step (three sessions alternating: where spinning pools fight), each mode in its own subprocess
(the global pool is process-wide), processes alternated over rounds; compare ratios of medians.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2  # the bench machine's cores

_THREADING_SCRIPT = """
import json, sys, time
import numpy as np
from fusion_rt.messages import CameraFrame, RadarTensor
from fusion_rt.runtime import FusionRuntime
from fusion_rt.sim import DriveConfig, simulate_drive
path, mode, threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
drive = list(simulate_drive(DriveConfig(seconds=2.0, seed=2)))
MS = 1_000_000
with FusionRuntime(path, threads=threads, threading=mode) as rt:
    for m in drive:
        rt.push(m)
    cam = next(m for m in reversed(drive) if isinstance(m, CameraFrame))
    radar = next(m for m in reversed(drive) if isinstance(m, RadarTensor))
    stamp = drive[-1].stamp_ns
    samples = []
    for k in range(steps + 20):
        stamp += 25 * MS
        r = RadarTensor(stamp, radar.data, radar.channels, radar.range_min_m, radar.range_max_m,
                        radar.azimuth_min_rad, radar.azimuth_max_rad)
        t = time.perf_counter_ns()
        rt.push(r)
        stamp += 25 * MS
        rt.push(CameraFrame(stamp_ns=stamp, data=cam.data))
        samples.append(time.perf_counter_ns() - t)
        time.sleep(0.002)  # a little idle time between frames, as with a real 20 Hz sensor
    lat = rt.stats()["latency_ms"]
s = samples[20:]
print(json.dumps({"step_ms": float(np.median(s)) / 1e6, "p90_ms": float(np.percentile(s, 90)) / 1e6,
                  "e2e_p50_ms": lat["end_to_end"]["p50"]}))
"""


def test_threading_modes(benchmark, package_path):
    modes = ("no_spin", "spin", "global")
    results: dict[str, list[dict]] = {m: [] for m in modes}

    def run_round():
        for mode in modes:
            args = [sys.executable, "-c", _THREADING_SCRIPT, str(package_path), mode, str(THREADS), "150"]
            out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
            assert out.returncode == 0, out.stderr
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run_round, rounds=3, iterations=1)
    info = {f"{m}_step_ms": float(np.median([r["step_ms"] for r in results[m]])) for m in modes}
    info.update({f"{m}_p90_ms": float(np.median([r["p90_ms"] for r in results[m]])) for m in modes})
    info["spin_over_no_spin"] = info["spin_step_ms"] / info["no_spin_step_ms"]
    info["global_over_no_spin"] = info["global_step_ms"] / info["no_spin_step_ms"]
    info["ort_version"] = ort.__version__
    benchmark.extra_info.update(info)
    print(json.dumps(info, indent=1))
