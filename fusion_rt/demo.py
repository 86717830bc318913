"""The demo: the main job end to end, without torch and without a GPU.

1. simulate a drive with changing conditions (the log a user would have recorded);
2. simulate a calibration set: one short drive per condition and scene type (other seeds:
   calibration never sees the test drive, and sees every condition it holds);
3. quantize the shipped FP32 package with the `ort-cpu-int8` recipe on the calibration set, its
   task metric measured on the drive (data calibration did not see);
4. replay the drive through FP32 and INT8 (burst mode), each writing its results log, and the INT8 report;
5. compare the two deployments frame by frame and print one table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusion_rt.errors import PackageError
from fusion_rt.outputs import console as _console
from fusion_rt.outputs import json_text, staged_dir, write_text

__all__ = ["DemoConfig", "run_demo", "shipped_package", "SHIPPED_PACKAGE_NAME"]

SHIPPED_PACKAGE_NAME = "fusion-attention"


def shipped_package() -> Path:
    """The FP32 package that ships inside fusion_rt (see fusion_rt/packages/README.md)."""
    path = Path(__file__).resolve().parent / "packages" / SHIPPED_PACKAGE_NAME
    if not (path / "manifest.json").is_file():
        raise PackageError(f"the shipped package is missing from {str(path)!r}; reinstall fusion-rt or pass "
                           "--package PKG_DIR")
    return path


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    package: Path | None = None  # None: the shipped package
    seconds: float = 30.0  # the replayed drive
    seed: int = 7
    calib_seconds_each: float = 0.75  # each calibration drive (16: one per condition and scene type)
    calib_samples: int = 64  # calibration frames for the int8 recipe
    threads: int | None = None  # ONNX Runtime threads per graph (None: ORT's default)


def run_demo(config: DemoConfig, say: Callable[[str], None] | None = None) -> dict:
    """Run every step and return the demo's summary (also written to OUT/demo.json)."""
    from fusion_rt.calibration import QuantizeConfig, check_quantize_requirements, quantize_package
    from fusion_rt.replay import ReplayConfig, compare, replay
    from fusion_rt.report import write_report
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_calibration_set, record_drive

    check_quantize_requirements()  # before ~30 s of simulating: the INT8 step needs onnxruntime >= 1.31
    say = say or (lambda _msg: None)
    drive_config = DriveConfig(seconds=config.seconds, seed=config.seed, conditions="mixed")  # checked first
    DriveConfig(seconds=config.calib_seconds_each, seed=config.seed + 1000)  # likewise (a calibration drive)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = Path(config.package) if config.package else shipped_package()
    steps: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, message: str):
        say(message)
        steps[name] = time.perf_counter()

    def done(name: str) -> None:
        steps[name] = round(time.perf_counter() - steps[name], 2)

    drive = out / "drive.mcap"
    step("simulate", f"simulating a {config.seconds:.0f} s drive (seed {config.seed}, mixed conditions) and a "
                     "calibration set (a short drive per condition and scene type)")
    drive_summary = record_drive(drive_config, drive)
    calib = record_calibration_set(out / "calibration", config.calib_seconds_each, seed=config.seed + 1000)
    done("simulate")

    int8 = out / "package-int8"
    step("quantize", f"quantizing the FP32 package with ort-cpu-int8 on the calibration set ({len(calib)} drives)")
    # built beside it and swapped in when complete: a failed or interrupted demo keeps the previous package
    with staged_dir(int8, overwrite=True) as staging:
        quant = quantize_package(fp32, staging, QuantizeConfig(recipe="ort-cpu-int8", samples=config.calib_samples,
                                                                latency_iterations=20, max_rounds=2),
                                 calib_logs=calib, eval_logs=[drive])
    done("quantize")

    step("replay", "replaying the drive through FP32 and INT8")
    # both write their results log, so the table times them alike (when only INT8 wrote, the same FP32
    # radar graph read 0.63 ms in its replay vs 0.44 in FP32's)
    r32 = replay(drive, fp32, ReplayConfig(mode="burst", threads=config.threads, keep_frames=False,
                                           out=out / "results_fp32.mcap"))
    r8 = replay(drive, int8, ReplayConfig(mode="burst", threads=config.threads, out=out / "results_int8.mcap"))
    write_report(r8, out / "report_int8.html")
    done("replay")

    step("compare", "comparing FP32 and INT8 frame by frame")
    cmp = compare(drive, fp32, int8, threads=config.threads).summary
    done("compare")

    summary = {
        "drive": {"log": str(drive), "seconds": config.seconds, "seed": config.seed,
                  "conditions": drive_summary.to_dict()["conditions"]},
        "packages": {"fp32": str(fp32), "int8": str(int8)},
        "fp32": _side(r32.summary),
        "int8": _side(r8.summary),
        "agreement": {"scene_decisions": cmp["divergence"]["scene"].get("agreement"),
                      "scene_cosine": cmp["divergence"]["scene"]["cosine"],
                      "bev_decisions": cmp["divergence"]["bev"].get("agreement"),
                      "status": cmp["status_agreement"]},
        "quantization": {"within_tolerance": quant.within_tolerance,
                         "excluded_nodes": {g: len(n) for g, n in quant.excluded_nodes.items()},
                         "size_ratio": quant.report["acceptance"]["size_ratio"],
                         # graphs run in INT8 (the rest keep FP32 compute, weights stored as int8)
                         "int8_graphs": quant.report["mixed_precision"]["int8_graphs"],
                         "graphs": sorted(quant.package.graphs),
                         "int8_dot_product": quant.report["host"]["int8_dot_product"],
                         "cpu_model": quant.report["host"]["cpu_model"]},
        "calibration": {"logs": [str(p) for p in calib], "frames": quant.report["calibration"]["frames"],
                        "per_stratum": quant.report["calibration"]["per_stratum"]},
        "outputs": {"results_log": str(out / "results_int8.mcap"), "results_log_fp32": str(out / "results_fp32.mcap"),
                    "report": str(out / "report_int8.html"),
                    "int8_package": str(int8)},
        "seconds": {**steps, "total": round(time.perf_counter() - t_all, 2)},
    }
    write_text(out / "demo.json", json_text(summary, indent=2, default=str) + "\n")
    return summary


def _side(s: dict) -> dict:
    lat = s["latency_ms"]
    metrics = s.get("metrics") or {}
    overall = metrics.get("overall", {})
    return {
        "outputs": s["outputs"], "degraded": s["degraded"], "rejected": s["rejected"], "dropped": s["dropped"],
        "deadline_misses": s["deadline_misses"], "realtime_factor": s.get("realtime_factor"),
        "latency_ms": {k: {"p50": v["p50"], "p99": v["p99"]} for k, v in sorted(lat.items())
                       if k in ("camera_preprocess", "camera_encoder", "head", "end_to_end", "radar_encoder")},
        "scene_auc": overall.get("mean_scene_auc"), "hazard_auc": (overall.get("scene_auc") or {}).get("hazard"),
        "scene_f1": overall.get("mean_scene_f1"), "bev_iou": overall.get("mean_bev_iou"),
    }


def print_demo(summary: dict) -> None:
    """The demo's table on stdout."""
    from rich.table import Table

    console = _console()
    a, b = summary["fp32"], summary["int8"]

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    table = Table(title=f"FP32 vs INT8 on a {summary['drive']['seconds']:.0f} s drive", show_edge=False)
    table.add_column("")
    table.add_column("FP32", justify="right")
    table.add_column("INT8", justify="right")
    for stage in ("camera_preprocess", "camera_encoder", "head", "end_to_end", "radar_encoder"):
        if stage in a["latency_ms"] and stage in b["latency_ms"]:
            table.add_row(f"{stage} p50 / p99 ms",
                          f"{a['latency_ms'][stage]['p50']:.2f} / {a['latency_ms'][stage]['p99']:.2f}",
                          f"{b['latency_ms'][stage]['p50']:.2f} / {b['latency_ms'][stage]['p99']:.2f}")
    table.add_row("x real time (burst, writing results)", f(a["realtime_factor"], "{:.1f}"),
                  f(b["realtime_factor"], "{:.1f}"))
    table.add_row("scene AUC (mean)", f(a["scene_auc"]), f(b["scene_auc"]))
    table.add_row("hazard AUC", f(a["hazard_auc"]), f(b["hazard_auc"]))
    table.add_row("scene F1 (mean)", f(a["scene_f1"]), f(b["scene_f1"]))
    table.add_row("BEV IoU (mean)", f(a["bev_iou"]), f(b["bev_iou"]))
    table.add_row("degraded / rejected frames", f"{a['degraded']} / {a['rejected']}",
                  f"{b['degraded']} / {b['rejected']}")
    console.print(table)
    agree = summary["agreement"]
    console.print(f"FP32 vs INT8: scene decisions agree on {f(agree['scene_decisions'], '{:.1%}')}, "
                  f"BEV cells on {f(agree['bev_decisions'], '{:.1%}')}, "
                  f"scene cosine {f(agree['scene_cosine'], '{:.4f}')}")
    q = summary["quantization"]
    fp32_compute = [g for g in q["graphs"] if g not in q["int8_graphs"]]
    rest = f", FP32 compute in {', '.join(fp32_compute)} (INT8 no faster there on this CPU)" if fp32_compute else ""
    console.print(f"INT8 package: {q['size_ratio']:.2f}x the size; INT8 compute in "
                  f"{', '.join(q['int8_graphs']) or 'no graph'}{rest}")
    if not q["int8_graphs"] and q["int8_dot_product"] is None:
        from fusion_rt.calibration.quantize import no_int8_dot_product_note

        console.print(no_int8_dot_product_note(q["cpu_model"]))
    outputs = summary["outputs"]
    console.print(f"results logs: {outputs['results_log']}, {outputs['results_log_fp32']}\n"
                  f"report:       {outputs['report']}")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items() if k != "total")
    console.print(f"took {summary['seconds']['total']:.0f} s ({parts})")

