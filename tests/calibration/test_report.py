"""The quantization report's measurements: task metrics, worst cosine, latency ratios, relative drop."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from fusion_rt.calibration import report
from fusion_rt.calibration.quantize import _within
from fusion_rt.calibration.report import output_divergence, relative_drop, task_metrics, worst_cosine
from fusion_rt.export.data import SCENE_LABELS
from fusion_rt.export.metrics import roc_auc_per_class

from ..export._fixtures import BEV_LOGITS, tiny_split


def test_task_metrics_threshold_bev_in_float32():
    """A BEV sigmoid in (0.49988, 0.5) is free, as the runtime and replay decide it (a float16 copy
    of the probabilities rounded it up to 0.5: occupied)."""
    n = 2
    outputs = {"scene_logits": np.zeros((n, 5), np.float32), "bev_logits": np.repeat(BEV_LOGITS, n, axis=0),
               "modality_share": np.ones((n, 6, 1), np.float32)}
    package = SimpleNamespace(bev_classes=("car",), modalities=("camera",), scene_labels=SCENE_LABELS)
    metrics = task_metrics(tiny_split(n), outputs, package)
    assert metrics.overall["bev_iou"]["car"] == 1.0 and metrics.headline()["mean_bev_iou"] == 1.0


@pytest.mark.parametrize("labels", [("pedestrian", "cyclist", "hazard", "car", "truck"), ("car", "bus", "hazard")])
def test_task_metrics_score_each_scene_output_by_its_label_name(labels):
    # quantize scored column i against SCENE_LABELS[i] whatever the manifest's scene_labels said
    # (replay scores by name): a reordered package got the canonical labelling's metric, and a
    # package of three labels stopped with "labels (60, 5) and scores (60, 3) must have the same shape".
    rng = np.random.default_rng(1)
    n = 40
    split = tiny_split(n)
    split.labels[:] = rng.integers(0, 2, split.labels.shape)
    logits = rng.normal(size=(n, len(labels))).astype(np.float32)
    outputs = {"scene_logits": logits, "bev_logits": np.repeat(BEV_LOGITS, n, axis=0),
               "modality_share": np.ones((n, len(labels) + 1, 1), np.float32)}
    package = SimpleNamespace(bev_classes=("car",), modalities=("camera",), scene_labels=labels)
    got = task_metrics(split, outputs, package).overall["scene_auc"]
    known = [name for name in labels if name in SCENE_LABELS]
    assert list(got) == known  # "bus" has no truth: left out, as replay leaves it
    for name in known:
        expected = roc_auc_per_class(split.labels[:, [SCENE_LABELS.index(name)]], logits[:, [labels.index(name)]])[0]
        assert got[name] == pytest.approx(expected, abs=1e-5)  # the summary rounds to 5 places


def test_worst_cosine_is_nan_when_an_output_is_not_finite():
    """Python's min skipped a NaN cosine that was not first: a healthy worst cosine for an output
    holding inf."""
    rng = np.random.default_rng(0)
    ref = {"scene_logits": rng.normal(size=(4, 5)), "bev_logits": rng.normal(size=(4, 1, 8, 8)),
           "modality_share": rng.random((4, 6, 4))}
    new = {k: v + 1e-4 for k, v in ref.items()}
    assert worst_cosine(output_divergence(ref, new)) > 0.999
    new["bev_logits"][0, 0, 0, 0] = np.inf
    assert math.isnan(worst_cosine(output_divergence(ref, new)))


class _Clock:
    """perf_counter_ns for benchmark_latency: each runner's call advances it by the runner's cost."""

    def __init__(self) -> None:
        self.now = 0

    def perf_counter_ns(self) -> int:
        return self.now


class _Runner:
    threads = 1

    def __init__(self, clock: _Clock, ns: int) -> None:
        self.clock, self.ns = clock, ns

    def encode(self, inputs):
        return None

    def head(self, tokens, present):
        self.clock.now += self.ns


def test_latency_speedups_come_from_unrounded_medians(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(report, "time", clock)
    frame = type("Frame", (), {"inputs": None, "present": None, "__len__": lambda self: 1})()
    # medians 0.0206 and 0.0104 ms: 1.981x, where the medians rounded to 0.001 ms gave 0.021 / 0.01 = 2.1x
    out = report.benchmark_latency(_Runner(clock, 20_600), _Runner(clock, 10_400), frame, iterations=5, warmup=1)
    assert out["fp32"]["median_ms"] == 0.021 and out["new"]["median_ms"] == 0.01  # reported rounded
    assert out["speedup_median"] == out["speedup_p99"] == round(20_600 / 10_400, 3) == 1.981
    # a median under 0.0005 ms rounded to 0: the speedup divided by zero
    out = report.benchmark_latency(_Runner(clock, 2000), _Runner(clock, 400), frame, iterations=5, warmup=1)
    assert out["new"]["median_ms"] == 0.0 and out["speedup_median"] == 5.0
    # a clock that does not move measures nothing: no speedup rather than a division by zero
    out = report.benchmark_latency(_Runner(clock, 2000), _Runner(clock, 0), frame, iterations=5, warmup=1)
    assert out["speedup_median"] is None and out["speedup_p99"] is None


@pytest.mark.parametrize(("fp32", "new", "drop", "within"), [
    (0.0, 0.0, 0.0, True),  # no drop: relative_drop was None and the verdict "undefined after quantization"
    (0.0, 0.2, -0.2, True),  # better than FP32: the absolute change stands in for the relative one
    (0.0, -0.02, 0.02, False),  # lower than a reference of 0: fails by what it lost
    (0.8, 0.8, 0.0, True),
    (0.8, 0.4, 0.5, False),
    (0.8, None, None, False),  # a metric the new precision lost: a failure
])
def test_relative_drop_from_a_reference_of_zero(fp32, new, drop, within):
    if drop is None:
        assert relative_drop(fp32, new) is None
    else:
        assert relative_drop(fp32, new) == pytest.approx(drop)
    scored = {"measurable": fp32 is not None, "relative_drop": relative_drop(fp32, new), "non_finite": []}
    assert _within(scored, 0.01) is within
    assert relative_drop(None, 0.5) is None


def test_non_finite_outputs_fail_the_verdict_even_unmeasured():
    assert _within({"measurable": False, "relative_drop": None, "non_finite": ["bev_logits"]}, 0.01) is False
    assert _within({"measurable": True, "relative_drop": 0.0, "non_finite": ["bev_logits"]}, 0.01) is False
    assert _within({"measurable": False, "relative_drop": None, "non_finite": []}, 0.01) is None


def test_graph_sizes_count_external_data(calib_package, tmp_path):
    # An FP32 graph that keeps its weights in an external data file is a few hundred bytes alone:
    # the report said the INT8 radar graph was 2918x its size (and the package 0.42x, not ~0.26x).
    import json
    import shutil

    import onnx

    from fusion_rt.package import describe_graph, load_package, write_manifest

    root = tmp_path / "ext"
    shutil.copytree(calib_package, root)
    spec = json.loads((root / "manifest.json").read_text())["graphs"]["radar"]
    path = root / spec["file"]
    inline = path.stat().st_size
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="radar.data", size_threshold=0)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["graphs"]["radar"] = describe_graph(root, spec["file"], "radar", spec["role"], spec["modality"]).to_dict()
    manifest.pop("format_version")
    write_manifest(root, manifest)
    package = load_package(root)
    assert path.stat().st_size < inline / 2  # the weights went out
    sizes = report.graph_sizes(package, calib_package)  # the same graphs, inline: ratio 1
    assert sizes["graphs"]["radar"]["ratio"] == pytest.approx(1.0, rel=0.05)


def _whole_array_parity(reference, actual) -> dict:
    """parity_stats as it was before slicing: whole float64 copies of both arrays."""
    ref = np.asarray(reference).astype(np.float64).ravel()
    act = np.asarray(actual).astype(np.float64).ravel()
    diff = np.abs(ref - act)
    scale = max(float(np.abs(ref).max()), 1e-12)
    denom = float(np.linalg.norm(ref) * np.linalg.norm(act))
    cosine = float(ref @ act / denom) if denom > 0 else float(np.array_equal(ref, act))
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "max_rel": float(diff.max() / scale),
            "cosine": cosine}


def test_output_divergence_makes_no_whole_float64_copy():
    """quantize peaked at 3.7 GB at --eval-frames 2000: divergence copied every frame's outputs to
    float64 (twice) and built |ref - act| over all of them at once, 1.5 GB for 2000 frames of BEV
    logits. Slice by slice, its memory no longer grows with the frames."""
    import tracemalloc

    rng = np.random.default_rng(0)
    ref = {"scene_logits": rng.standard_normal((256, 5), np.float32),
           "bev_logits": rng.standard_normal((256, 4, 64, 64), np.float32)}  # 16 MB; 32 MB in float64
    new = {k: v + np.float32(0.01) for k, v in ref.items()}
    tracemalloc.start()
    try:
        got = output_divergence(ref, new)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < ref["bev_logits"].size * 8 / 2, f"{peak / 2**20:.0f} MB"  # less than half one float64 copy
    assert got["bev_logits"]["max_abs"] == pytest.approx(0.01, rel=1e-3)
    assert got["bev_logits"]["cosine"] == pytest.approx(_whole_array_parity(ref["bev_logits"],
                                                                            new["bev_logits"])["cosine"], rel=1e-12)


@pytest.mark.parametrize("size", [1000, 1 << 18, 3 * (1 << 18) + 7])
@pytest.mark.parametrize("case", ["close", "inf", "-inf", "nan", "zeros", "zero_ref", "float16", "int", "strided"])
def test_sliced_divergence_equals_the_whole_array_result(size, case):
    """parity_stats (export parity and quantize divergence) over slices gives the whole-array result:
    exactly for arrays of one slice (export parity at its default 16 samples); for more, the same
    maxima and max_rel, mean_abs and cosine to float64 rounding. Non-finite and zero cases as before."""
    from fusion_rt.export.onnx_export import PARITY_SLICE_ELEMENTS, parity_stats

    rng = np.random.default_rng(size)
    ref = rng.standard_normal(size).astype(np.float32)
    act = ref + (rng.standard_normal(size) * 1e-3).astype(np.float32)
    if case in ("inf", "-inf", "nan"):
        act[size // 2] = float(case)
    elif case == "zeros":
        ref = act = np.zeros(size, np.float32)
    elif case == "zero_ref":
        ref = np.zeros(size, np.float32)
    elif case == "float16":
        ref, act = ref.astype(np.float16), act.astype(np.float16)
    elif case == "int":
        ref = rng.integers(-5, 5, size)
        act = ref + 1
    elif case == "strided":
        ref, act = np.stack([ref, act, ref])[:, ::3], np.stack([act, ref, act])[:, ::3]
    with np.errstate(invalid="ignore"):  # inf: cosine inf/inf, NaN (as before)
        want = _whole_array_parity(ref, act)
        got = parity_stats(ref, act)
    assert set(got) == set(want)
    if np.asarray(ref).size <= PARITY_SLICE_ELEMENTS:
        assert got == pytest.approx(want, rel=0, abs=0, nan_ok=True)  # bit for bit
    else:
        assert {k: got[k] for k in ("max_abs", "max_rel")} == pytest.approx(
            {k: want[k] for k in ("max_abs", "max_rel")}, rel=0, abs=0, nan_ok=True)
        assert got == pytest.approx(want, rel=1e-12, abs=0, nan_ok=True)
    assert report.divergence(ref, act) == {k: pytest.approx(want[k], rel=1e-12, nan_ok=True)
                                           for k in ("max_abs", "mean_abs", "cosine")}


def test_occupancy_and_finite_checks_by_slice_equal_the_whole_array():
    """task_metrics' BEV occupancy and _score's finite check go slice of frames by slice: the same
    decisions as sigmoid(logits) >= 0.5 over every frame at once, float16 rounding near 0 included."""
    from fusion_rt.calibration.predict import all_finite, occupied, sigmoid

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float16):
        logits = (rng.standard_normal((150, 2, 8, 8)) * 1e-3).astype(dtype)  # many near the 0.5 boundary
        logits[7, 0, 0, :3] = [-1e-8, 0.0, 1e-8]
        np.testing.assert_array_equal(occupied(logits), sigmoid(logits) >= 0.5)
        assert all_finite(logits)
        logits[149, 1, 7, 7] = np.inf
        assert not all_finite(logits)
    assert all_finite(np.zeros((0, 3), np.float32)) and occupied(np.zeros((0, 2), np.float32)).shape == (0, 2)
