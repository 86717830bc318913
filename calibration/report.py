"""What a precision recipe costs: task metric, output divergence, graph sizes, latency, profile.

Everything is measured against the FP32 package in the same process. Latency alternates FP32 and
the new precision frame by frame (the machine is shared and noisy: the ratio is the number to
read, not the milliseconds). The report is JSON (`quantization_report.json` in the package) and
a summary of it goes into the manifest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion_rt.calibration.predict import Frames, PackageRunner, occupied, sigmoid
from fusion_rt.package import ModelPackage

__all__ = ["REPORT_NAME", "REPORT_KEYS", "PRIMARY_METRIC", "TaskMetrics", "divergence", "output_divergence",
           "worst_cosine", "task_metrics", "graph_sizes", "benchmark_latency", "benchmark_graph", "profile_ops",
           "relative_drop"]

REPORT_NAME = "quantization_report.json"
#: The task metric whose relative drop the tolerance bounds (DESIGN.md: scene AUC is primary).
PRIMARY_METRIC = "mean_scene_auc"
#: Top-level keys of every quantization report (tests and readers rely on them).
REPORT_KEYS: tuple[str, ...] = ("format", "recipe", "method", "calibration", "evaluation", "metrics", "divergence",
                                "sizes", "latency", "host", "profile", "mixed_precision", "acceptance", "notes")


def divergence(reference: np.ndarray, actual: np.ndarray) -> dict:
    """Max abs, mean abs and cosine similarity of two arrays (flattened, in float64 slice by slice:
    `parity_stats`, so 2000 frames of outputs make no whole float64 copy)."""
    from fusion_rt.export.onnx_export import parity_stats  # one implementation for export and quantization

    with np.errstate(invalid="ignore"):  # a non-finite output: cosine NaN, reported (acceptance outputs_finite)
        stats = parity_stats(reference, actual)  # float64 slice by slice: no whole float64 copy
    return {"max_abs": stats["max_abs"], "mean_abs": stats["mean_abs"], "cosine": stats["cosine"]}


def output_divergence(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> dict:
    """`divergence` per output name."""
    return {name: divergence(reference[name], actual[name]) for name in reference}


def worst_cosine(divergences: Mapping[str, dict]) -> float:
    """The lowest cosine of `output_divergence`-style entries; NaN when any is NaN (a non-finite
    output), which Python's min would skip unless it came first."""
    return float(np.min([d["cosine"] for d in divergences.values()]))


@dataclass
class TaskMetrics:
    """The task metric of one precision on the evaluation frames (export.evaluate's summary)."""

    summary: dict  # {"overall": {...}, "per_condition": {...}}

    @property
    def overall(self) -> dict:
        return self.summary["overall"]

    def headline(self) -> dict:
        o = self.overall
        return {k: o[k] for k in ("mean_scene_auc", "hazard_auc", "mean_scene_f1", "mean_bev_iou")}


def task_metrics(split, outputs: Mapping[str, np.ndarray], package: ModelPackage) -> TaskMetrics:
    """Scene AUC/F1, hazard AUC and BEV IoU of head `outputs` against the split's ground truth."""
    from fusion_rt.export.evaluate import Predictions, summarize

    # BEV occupancy decided in float32, as the runtime does (Predictions.bev)
    pred = Predictions(scene=sigmoid(outputs["scene_logits"]), bev=occupied(outputs["bev_logits"]),
                       share=outputs.get("modality_share"))  # optional, as in the runtime
    return TaskMetrics(summarize(split, pred, package.bev_classes, package.modalities, package.scene_labels))


def relative_drop(reference: float | None, value: float | None) -> float | None:
    """(reference - value) / |reference|: positive when the new precision is worse.

    A reference of 0 has no relative change: the absolute drop (reference - value) stands in, so a
    new value >= 0 is no drop and passes, and a lower one fails by what it lost. None only when a
    metric is unmeasured (None).
    """
    if reference is None or value is None:
        return None
    if reference == 0:
        return reference - value
    return (reference - value) / abs(reference)


def graph_bytes(path: Path) -> int:
    """Bytes of an ONNX graph with its external data files (locations relative to the graph's folder,
    as ONNX Runtime reads them): a graph that keeps its weights outside is a few hundred bytes alone."""
    import onnx

    from fusion_rt.package import external_locations

    files = external_locations(onnx.load(str(path), load_external_data=False))
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in sorted(files))


def graph_sizes(fp32: ModelPackage, new_root: Path) -> dict:
    """Bytes per graph (with its external data), FP32 vs new, and the ratios."""
    per_graph = {}
    total_a = total_b = 0
    for name, spec in fp32.graphs.items():
        a = graph_bytes(fp32.graph_path(name))
        b = graph_bytes(Path(new_root) / spec.file)
        per_graph[name] = {"fp32_bytes": a, "bytes": b, "ratio": round(b / a, 4)}
        total_a, total_b = total_a + a, total_b + b
    return {"graphs": per_graph, "fp32_bytes": total_a, "bytes": total_b, "ratio": round(total_b / total_a, 4)}


def _stats(samples_ns: list[int]) -> dict:
    """Median, p99 and mean in ms, unrounded (ratios are taken first; `_rounded` for the report)."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def _rounded(stats: dict) -> dict:
    return {k: round(v, 3) for k, v in stats.items()}


def _speedup(fp32_ms: float, new_ms: float) -> float | None:
    """fp32 / new, rounded; None when the new time is 0 (below the clock's resolution: unmeasured)."""
    return round(fp32_ms / new_ms, 3) if new_ms > 0 else None


def benchmark_latency(fp32: PackageRunner, new: PackageRunner, frame: Frames, iterations: int = 60,
                      warmup: int = 10) -> dict:
    """Encoders + head at batch 1, FP32 and new interleaved (alternating who goes first).

    Both runners must use the same thread settings; spinning is off in both (predict.session_options)
    so that one session's idle workers do not slow the other.
    """
    assert len(frame) == 1
    inputs, present = frame.inputs, frame.present
    runners = {"fp32": fp32, "new": new}
    times: dict[str, list[int]] = {"fp32": [], "new": []}
    for i in range(warmup + iterations):
        order = ("fp32", "new") if i % 2 == 0 else ("new", "fp32")
        for key in order:
            runner = runners[key]
            t0 = time.perf_counter_ns()
            runner.head(runner.encode(inputs), present)
            dt = time.perf_counter_ns() - t0
            if i >= warmup:
                times[key].append(dt)
    a, b = _stats(times["fp32"]), _stats(times["new"])
    return {"batch": 1, "iterations": iterations, "warmup": warmup, "threads": fp32.threads,
            "fp32": _rounded(a), "new": _rounded(b), "speedup_median": _speedup(a["median_ms"], b["median_ms"]),
            "speedup_p99": _speedup(a["p99_ms"], b["p99_ms"])}


def benchmark_graph(fp32_file: Path, new_file: Path, feed: Mapping[str, np.ndarray], threads: int = 2,
                    iterations: int = 60, warmup: int = 10) -> dict:
    """One graph, FP32 vs new, batch 1, interleaved: median ms of each and the speedup.

    `feed` may hold several rows: run i feeds row i mod rows (batch 1), so the verdict covers the
    inputs the graph sees (a head with a modality masked runs different softmax rows than a full
    one) rather than whichever row came first.
    """
    import onnxruntime as ort

    from fusion_rt.calibration.predict import session_options

    sessions = {key: ort.InferenceSession(str(path), session_options(threads, path=path),
                                          providers=["CPUExecutionProvider"])
                for key, path in (("fp32", fp32_file), ("new", new_file))}
    rows = min(len(v) for v in feed.values())
    feeds = [{k: v[r:r + 1] for k, v in feed.items()} for r in range(rows)]
    times: dict[str, list[int]] = {"fp32": [], "new": []}
    for i in range(warmup + iterations):
        for key in (("fp32", "new") if i % 2 == 0 else ("new", "fp32")):
            t0 = time.perf_counter_ns()
            sessions[key].run(None, feeds[i % rows])
            if i >= warmup:
                times[key].append(time.perf_counter_ns() - t0)
    a, b = (float(np.median(times[k])) / 1e6 for k in ("fp32", "new"))
    return {"fp32_median_ms": round(a, 4), "median_ms": round(b, 4), "speedup": round(a / b, 3), "rows": rows}


def profile_ops(package: ModelPackage, graph_files: Mapping[str, Path] | None, frame: Frames, workdir: Path,
                iterations: int = 20, threads: int = 2, top: int = 10) -> dict:
    """Where the time goes: ONNX Runtime's profiler, node time summed per graph and op type."""
    prefix = str(Path(workdir) / f"profile_{time.monotonic_ns()}")
    runner = PackageRunner(package, graph_files, threads=threads, profile_prefix=prefix)
    for _ in range(3 + iterations):
        runner.head(runner.encode(frame.inputs), frame.present)
    traces = dict(zip(runner._sessions, runner.end_profiling(), strict=True))
    per_graph: dict[str, float] = {}
    per_op: dict[str, float] = {}
    for graph, trace in traces.items():
        events = json.loads(Path(trace).read_text())
        for e in events:
            if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
                continue
            us = float(e.get("dur", 0))
            op = e.get("args", {}).get("op_name", "?")
            per_graph[graph] = per_graph.get(graph, 0.0) + us
            per_op[op] = per_op.get(op, 0.0) + us
        Path(trace).unlink(missing_ok=True)
    total = sum(per_graph.values()) or 1.0
    runs = 3 + iterations
    return {
        "iterations": runs,
        "per_frame_ms": round(total / runs / 1e3, 3),
        "per_graph_ms": {g: round(v / runs / 1e3, 3) for g, v in sorted(per_graph.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"op": op, "ms": round(v / runs / 1e3, 3), "share": round(v / total, 3)}
                    for op, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]],
    }
