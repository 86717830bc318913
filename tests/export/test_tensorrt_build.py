"""TensorRT engine building: the version/precision plan and profiles (pure), and a clear error without TensorRT."""

from __future__ import annotations

import importlib.util

import pytest

from fusion_rt.errors import ConfigError
from fusion_rt.export.tensorrt_build import BuildOptions, plan_network, profile_shapes
from fusion_rt.package import load_package

from ..conftest import run_cli
from ..tiny_package import make_tiny_package

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_tensorrt10_fp16_uses_builder_flag_on_fp32_graphs():
    plan = plan_network("10.3.0", "fp16", "fp32", has_fp16_flag=True)
    assert plan == plan.__class__(strongly_typed=False, builder_flags=("FP16",))


def test_tensorrt10_int8_is_explicit_qdq():
    plan = plan_network("10.3.0.26", "int8-qdq", "tensorrt-int8", has_fp16_flag=True)
    assert not plan.strongly_typed and plan.builder_flags == ("INT8", "FP16")
    with pytest.raises(ConfigError, match="recipe tensorrt-int8"):
        plan_network("10.3.0", "int8-qdq", "fp32", has_fp16_flag=True)
    with pytest.raises(ConfigError, match="uint8 activations"):
        plan_network("10.3.0", "int8-qdq", "ort-cpu-int8", has_fp16_flag=True)


def test_tensorrt11_is_strongly_typed_and_needs_fp16_graphs():
    assert plan_network("11.0.0", "int8-qdq", "tensorrt-int8", has_fp16_flag=False).strongly_typed
    assert plan_network("11.0.0", "fp16", "fp16", has_fp16_flag=False) == plan_network(
        "11.1.0", "fp16", "fp16", has_fp16_flag=False)
    with pytest.raises(ConfigError, match="strongly typed.*--recipe fp16"):
        plan_network("11.0.0", "fp16", "fp32", has_fp16_flag=False)


def test_old_tensorrt_and_dla_rules():
    with pytest.raises(ConfigError, match="too old"):
        plan_network("8.6.1", "fp16", "fp32", has_fp16_flag=True)
    assert "GPU_FALLBACK" in plan_network("10.3.0", "fp16", "fp32", has_fp16_flag=True, dla=True).builder_flags
    with pytest.raises(ConfigError, match="DLA runs FP16 or INT8"):
        BuildOptions(precision="fp32", dla_core=0)
    with pytest.raises(ConfigError, match="opt"):
        BuildOptions(opt_batch=4, max_batch=2)


def test_profiles_span_the_dynamic_batch(tmp_path):
    package = load_package(make_tiny_package(tmp_path / "pkg"))
    shapes = profile_shapes(package.graphs["camera"], opt_batch=2, max_batch=8)
    lo, opt, hi = shapes["image"]
    assert lo[0] == 1 and opt[0] == 2 and hi[0] == 8 and lo[1:] == opt[1:] == hi[1:]
    head = profile_shapes(package.head, opt_batch=1, max_batch=4)
    assert set(head) == {t.name for t in package.head.inputs}


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the missing-extra message does not apply")
def test_build_engine_without_tensorrt_is_one_clear_line(tmp_path):
    pkg = make_tiny_package(tmp_path / "pkg")
    proc = run_cli("build-engine", str(pkg), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and 'pip install "fusion-rt[tensorrt]"' in lines[0], proc.stderr


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and a GPU")
def test_build_and_load_engines(tmp_path):  # pragma: no cover - runs only where TensorRT exists
    from fusion_rt.export.tensorrt_build import build_engines

    pkg = make_tiny_package(tmp_path / "pkg")
    out = build_engines(pkg, tmp_path / "trt", BuildOptions(precision="fp32", max_batch=2))
    package = load_package(out)
    assert set(package.manifest["engines"]["graphs"]) == set(package.graphs)
    assert (out / "engines" / "head.engine").stat().st_size > 0
