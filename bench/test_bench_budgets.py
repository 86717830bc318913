"""The budgets of bench/budgets.toml through pytest-benchmark: the same measurements as `fusion-rt bench`.

Run: `make bench-quick` (what CI runs: FUSION_RT_BENCH_QUICK=1, well under 3 minutes) or `make bench`.

`fusion_rt.bench.BenchSession` builds every alternative on the same inputs; pytest-benchmark times
its `step()` (one interleaved round of every series, after warm-up), and the per-series
percentiles, the ratios of medians, the budget verdicts and the environment fingerprint go into
`benchmark.extra_info`, so they are saved with the run. Only the RATIO budgets are asserted: this
machine is shared and noisy, and absolute budgets are for fixed hardware (`fusion-rt bench
--device-class ... --check` checks those). A miss fails with the table of what missed and by how much.

Save a baseline, and compare a later run against it (the step's median; 25% is this machine's noise):

    .venv/bin/pytest bench/test_bench_budgets.py --benchmark-only --benchmark-save=baseline
    .venv/bin/pytest bench/test_bench_budgets.py --benchmark-only --benchmark-compare \
        --benchmark-compare-fail=median:25%

Runs are stored under .benchmarks/<machine id>/NNNN_<name>.json (pytest-benchmark JSON).
Package: $FUSION_RT_BENCH_PACKAGE or the shipped FP32 package; the INT8 package is
$FUSION_RT_BENCH_INT8 or one quantized here; PyTorch eager joins as a peer when torch is installed
(the [train] extra), and a burst replay of a simulated drive through the INT8 package gives the
replay budget. Every enforced ratio budget must be measured: one the run could not measure fails.
"""

from __future__ import annotations

import importlib.util
import json

from fusion_rt.bench import (
    BenchConfig,
    BenchSession,
    check_budgets,
    fingerprint,
    int8_ratios_apply,
    load_budgets,
    replay_realtime_factor,
    unmeasured_budgets,
    verdict_table,
)


def test_ratio_budgets(benchmark, real_package_path, int8_package_path, bench_quick):
    budgets = load_budgets()
    peers = importlib.util.find_spec("torch") is not None
    config = BenchConfig(package=real_package_path, int8_package=int8_package_path, peers=peers,
                         steps=60 if bench_quick else 300, warmup=10 if bench_quick else 20, quick=bench_quick)
    packages = {"fp32": real_package_path, "int8": int8_package_path}
    fp = fingerprint(packages)  # before measuring: its load average is the machine's, not the benchmark's
    with BenchSession(config) as session:
        session.warm_up()
        benchmark.pedantic(session.step, rounds=config.steps, iterations=1)
        result = session.result()
    replay = replay_realtime_factor(int8_package_path, seconds=5.0 if bench_quick else 10.0, threads=config.threads)
    result.ratios["replay_realtime_factor"] = replay["realtime_factor"]
    dot = int8_ratios_apply(fp)
    verdicts = check_budgets(budgets, result.stages, result.ratios, None, ratios_only=True, int8_dot_product=dot)
    fp["load_average_after"] = fingerprint(packages)["load_average"]
    benchmark.extra_info.update({
        "fingerprint": fp, "ratios": result.ratios, "skipped": result.skipped,
        "stages": {k: {s: round(v, 4) for s, v in st.items()} for k, st in result.stages.items()},
        "verdicts": [v.to_dict() for v in verdicts], "info": result.info,
    })
    print("\n" + json.dumps({"ratios": result.ratios, "skipped": result.skipped}, indent=1))
    if not dot:
        print(f"this CPU ({fp['cpu_model']}) has no int8 dot-product instructions: the INT8 ratios are held to "
              "[ratios_without_int8_dot_product] (no slower than FP32)")
    targets = verdict_table(verdicts, targets=True)
    if targets:
        print(f"targets not yet reached (goals, not failures):\n{targets}")
    missed = verdict_table(verdicts)
    assert not missed, f"ratio budgets missed ({real_package_path}):\n{missed}"
    unmeasured = unmeasured_budgets(verdicts, result.skipped, peers)
    if not peers:  # torch is an optional extra: its ratios are the only ones a run may lack
        unmeasured = {k: v for k, v in unmeasured.items() if "torch" not in k}
    assert not unmeasured, f"enforced budgets not measured: {unmeasured}"
