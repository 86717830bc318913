"""The demo end to end on a tiny package: every step runs and writes what it promises."""

from __future__ import annotations

import json

import pytest

from fusion_rt.demo import DemoConfig, run_demo
from fusion_rt.package import load_package

from .tiny_package import make_tiny_package


def test_demo_runs_end_to_end(tmp_path):
    pkg = make_tiny_package(tmp_path / "fp32")
    summary = run_demo(DemoConfig(out=tmp_path / "demo", package=pkg, seconds=2.0, seed=3, calib_seconds=2.0,
                                  calib_samples=16))
    out = tmp_path / "demo"
    assert load_package(out / "package-int8").precision == "int8"
    assert (out / "results_int8.mcap").stat().st_size > 0
    assert "<html" in (out / "report_int8.html").read_text()[:500].lower()
    assert json.loads((out / "demo.json").read_text())["packages"]["int8"].endswith("package-int8")
    for side in ("fp32", "int8"):
        assert summary[side]["outputs"] >= 38
        assert summary[side]["latency_ms"]["end_to_end"]["p50"] > 0
    assert 0.0 <= summary["agreement"]["scene_decisions"] <= 1.0
    assert 0.0 < summary["quantization"]["size_ratio"] < 1.0  # read from the quantization report


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
    assert sorted(p.name for p in previous.parent.iterdir()) == ["calibration_drive.mcap", "drive.mcap",
                                                                 "package-int8"]
