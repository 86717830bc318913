"""The demo end to end on a tiny package: every step runs and writes what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion_rt.demo import DemoConfig, print_demo, run_demo
from fusion_rt.package import load_package

from .tiny_package import make_tiny_package


def test_demo_runs_end_to_end(tmp_path, capsys):
    pkg = make_tiny_package(tmp_path / "fp32")
    summary = run_demo(DemoConfig(out=tmp_path / "demo", package=pkg, seconds=2.0, seed=3, calib_seconds_each=0.25,
                                  calib_samples=16))
    out = tmp_path / "demo"
    assert load_package(out / "package-int8").precision == "int8"
    assert (out / "results_int8.mcap").stat().st_size > 0
    assert (out / "results_fp32.mcap").stat().st_size > 0  # both timed alike: each writes its results
    assert "<html" in (out / "report_int8.html").read_text()[:500].lower()
    assert json.loads((out / "demo.json").read_text())["packages"]["int8"].endswith("package-int8")
    for side in ("fp32", "int8"):
        assert summary[side]["outputs"] >= 38
        assert summary[side]["latency_ms"]["end_to_end"]["p50"] > 0
    assert 0.0 <= summary["agreement"]["scene_decisions"] <= 1.0
    assert 0.0 < summary["quantization"]["size_ratio"] < 1.0  # read from the quantization report
    # calibrated on every condition and scene type, scored on the drive calibration never saw
    calib = summary["calibration"]
    assert len(calib["logs"]) == 16 and all(Path(p).parent == out / "calibration" for p in calib["logs"])
    assert len(calib["per_stratum"]) == 16 and calib["frames"] == 16
    report = json.loads((out / "package-int8" / "quantization_report.json").read_text())
    assert report["evaluation"]["logs"] == [str(out / "drive.mcap")]
    quant = summary["quantization"]
    assert set(quant["int8_graphs"]) <= set(quant["graphs"]) == set(load_package(pkg).graphs)
    print_demo(summary)
    printed = capsys.readouterr().out
    assert f"INT8 package: {quant['size_ratio']:.2f}x the size; INT8 compute in" in printed


def _printed_summary(int8_graphs: list[str], dot_product: str | None) -> dict:
    side = {"latency_ms": {}, "realtime_factor": 5.0, "scene_auc": 0.9, "hazard_auc": 0.8, "scene_f1": 0.5,
            "bev_iou": 0.1, "degraded": 0, "rejected": 0}
    return {"drive": {"seconds": 30}, "fp32": side, "int8": side,
            "agreement": {"scene_decisions": 1.0, "bev_decisions": 1.0, "scene_cosine": 1.0},
            "quantization": {"size_ratio": 0.27, "int8_graphs": int8_graphs, "graphs": ["camera", "head", "radar"],
                             "int8_dot_product": dot_product, "cpu_model": "AMD EPYC"},
            "outputs": {"results_log": "r.mcap", "results_log_fp32": "f.mcap", "report": "r.html"},
            "seconds": {"total": 50.0}}


def test_the_demo_says_which_graphs_run_int8_and_why_none_do_on_a_cpu_without_int8_dot_products(capsys):
    """On an AVX2-only CPU the speed gate keeps every graph FP32, and the demo's INT8 column ran as
    fast as FP32 with nothing said: the table now names the INT8 graphs, and the CPU when there are none."""
    print_demo(_printed_summary(["camera", "radar"], "AVX-512 VNNI"))
    out = " ".join(capsys.readouterr().out.split())
    assert "INT8 compute in camera, radar, FP32 compute in head (INT8 no faster there on this CPU)" in out
    assert "dot-product" not in out
    print_demo(_printed_summary([], None))
    out = " ".join(capsys.readouterr().out.split())
    assert "INT8 compute in no graph, FP32 compute in camera, head, radar" in out
    assert "this CPU (AMD EPYC) has no int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, ARM dot product)" in out


def test_a_failed_demo_keeps_the_previous_int8_package(tmp_path, monkeypatch):
    """The demo deleted OUT/package-int8 before quantizing: an interrupted or failed run lost the
    previous package (and demo.json and the report still described it). It is swapped in only when
    the new one is complete."""

    import fusion_rt.calibration
    import fusion_rt.sim.record

    def recorded(config, path, **kwargs):
        path.write_bytes(b"a drive")

    def interrupted(package, out, *args, **kwargs):
        (out / "manifest.json").write_text("{half")
        raise KeyboardInterrupt

    monkeypatch.setattr(fusion_rt.sim.record, "record_drive", recorded)
    monkeypatch.setattr(fusion_rt.calibration, "quantize_package", interrupted)
    previous = tmp_path / "demo" / "package-int8"
    previous.mkdir(parents=True)
    (previous / "manifest.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoConfig(out=tmp_path / "demo", package=make_tiny_package(tmp_path / "fp32"), seconds=1.0))
    assert (previous / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in previous.parent.iterdir()) == ["calibration", "drive.mcap",
                                                                 "package-int8"]
