"""TensorRT engine building: the version/precision plan, profiles and timing cache (pure), the build
driven by a fake `tensorrt` module (no GPU), and a clear error without TensorRT."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest

from fusion_rt.backends import tensorrt as trt_backend
from fusion_rt.backends.tensorrt import DeviceInfo
from fusion_rt.errors import ConfigError, FusionRTError
from fusion_rt.export.tensorrt_build import (
    BuildOptions,
    attach_timing_cache,
    build_engines,
    check_dla_core,
    default_timing_cache,
    plan_network,
    profile_shapes,
    save_timing_cache,
)
from fusion_rt.package import load_package

from ..conftest import run_cli
from ..tiny_package import make_tiny_package

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_tensorrt10_fp16_uses_builder_flag_on_fp32_graphs():
    plan = plan_network("10.3.0", "fp16", "fp32")
    assert plan == plan.__class__(strongly_typed=False, builder_flags=("FP16",))
    assert plan_network("10.3.0", "fp16", "fp16") == plan.__class__(strongly_typed=True, builder_flags=())


def test_tensorrt10_int8_is_explicit_qdq():
    plan = plan_network("10.3.0.26", "int8-qdq", "tensorrt-int8")
    assert not plan.strongly_typed and plan.builder_flags == ("INT8", "FP16")
    with pytest.raises(ConfigError, match="recipe tensorrt-int8"):
        plan_network("10.3.0", "int8-qdq", "fp32")
    with pytest.raises(ConfigError, match="uint8 activations"):
        plan_network("10.3.0", "int8-qdq", "ort-cpu-int8")


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_qdq_package_builds_only_as_int8_qdq(version, precision):
    # fp16 (the CLI default) on a Q/DQ package: TensorRT 10 built it weakly typed without the INT8 flag,
    # TensorRT 11 told the user to re-quantize an INT8 package to FP16.
    with pytest.raises(ConfigError, match=rf"^--precision {precision}: .*Q/DQ.*--precision int8-qdq$"):
        plan_network(version, precision, "tensorrt-int8")


def test_fp32_clears_tf32_and_other_precisions_keep_it():
    assert plan_network("10.3.0", "fp32", "fp32").cleared_flags == ("TF32",)
    assert plan_network("11.0.0", "fp32", "fp32").cleared_flags == ("TF32",)  # strongly typed: TF32 still applies
    assert plan_network("10.3.0", "fp16", "fp32").cleared_flags == ()
    assert plan_network("10.3.0", "int8-qdq", "tensorrt-int8").cleared_flags == ()


def test_tensorrt11_is_strongly_typed_and_needs_fp16_graphs():
    assert plan_network("11.0.0", "int8-qdq", "tensorrt-int8").strongly_typed
    assert plan_network("11.0.0", "fp16", "fp16") == plan_network("11.1.0", "fp16", "fp16")
    with pytest.raises(ConfigError, match="strongly typed.*--recipe fp16"):
        plan_network("11.0.0", "fp16", "fp32")


def test_old_tensorrt_and_dla_rules():
    with pytest.raises(ConfigError, match="too old"):
        plan_network("8.6.1", "fp16", "fp32")
    assert "GPU_FALLBACK" in plan_network("10.3.0", "fp16", "fp32", dla=True).builder_flags
    with pytest.raises(ConfigError, match="DLA runs FP16 or INT8"):
        BuildOptions(precision="fp32", dla_core=0)
    with pytest.raises(ConfigError, match="opt"):
        BuildOptions(opt_batch=4, max_batch=2)


def test_dla_core_is_checked_against_the_device():
    check_dla_core(0, 2)
    check_dla_core(1, 2)
    with pytest.raises(ConfigError, match=r"^--dla 2: .* 2 DLA core\(s\); pass --dla 0\.\.1$"):
        check_dla_core(2, 2)
    with pytest.raises(ConfigError, match=r"^--dla 0: .* 0 DLA core\(s\); build without --dla$"):
        check_dla_core(0, 0)  # Orin Nano, x86 GPUs, TensorRT 11.0-11.3


def test_profiles_span_the_dynamic_batch(tmp_path):
    package = load_package(make_tiny_package(tmp_path / "pkg"))
    shapes = profile_shapes(package.graphs["camera"], opt_batch=2, max_batch=8)
    lo, opt, hi = shapes["image"]
    assert lo[0] == 1 and opt[0] == 2 and hi[0] == 8 and lo[1:] == opt[1:] == hi[1:]
    head = profile_shapes(package.head, opt_batch=1, max_batch=4)
    assert set(head) == {t.name for t in package.head.inputs}


def test_dla_profiles_are_static(tmp_path):
    # DLA has no dynamic shapes: a 1..8 profile sent every layer to the GPU (GPU_FALLBACK, silently).
    assert BuildOptions(opt_batch=2, max_batch=8).batches == (1, 2, 8)
    assert BuildOptions(opt_batch=1, max_batch=8, dla_core=0).batches == (1, 1, 1)
    # a DLA engine's batch is its build batch, and the runtime feeds one frame: any other was useless
    with pytest.raises(ConfigError, match="--opt-batch 2 would give engines that refuse every frame"):
        BuildOptions(opt_batch=2, max_batch=8, dla_core=0)
    package = load_package(make_tiny_package(tmp_path / "pkg"))
    lo, opt, hi = profile_shapes(package.graphs["camera"], 2, 2, min_batch=2)["image"]
    assert lo == opt == hi and lo[0] == 2


def test_default_timing_cache_is_keyed_by_tensorrt_and_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("FUSION_RT_TRT_TIMING_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    orin = default_timing_cache("10.3.0.26", "Orin", (8, 7))
    assert orin == tmp_path / "fusion-rt" / "tensorrt" / "timing-10.3.0.26-sm87-orin.cache"
    others = {default_timing_cache("10.4.0", "Orin", (8, 7)), default_timing_cache("10.3.0.26", "NVIDIA H200", (9, 0)),
              default_timing_cache("10.3.0.26", "Orin", (8, 6))}
    assert orin not in others and len(others) == 3
    assert default_timing_cache("10.3.0", "NVIDIA H200", (9, 0)).name == "timing-10.3.0-sm90-nvidia-h200.cache"
    monkeypatch.setenv("FUSION_RT_TRT_TIMING_CACHE", str(tmp_path / "mine.cache"))
    assert default_timing_cache("10.3.0", "Orin", (8, 7)) == tmp_path / "mine.cache"


# ------------------------------------------------------------------ a fake `tensorrt` module
MAGIC = b"TC-10.3.0.26-sm87|"  # what this fake TensorRT accepts as its own timing cache


class FakeCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return MAGIC + b"tactics"


class FakeConfig:
    def __init__(self, fake) -> None:
        self.fake = fake
        self.flags = {"TF32"}  # TensorRT enables TF32 by default
        self.profiles = []
        self.cache = None
        self.DLA_core = -1
        self.default_device_type = "GPU"

    def set_memory_pool_limit(self, pool, size):
        pass

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        if bytes(data) == b"raise":
            raise RuntimeError("bad blob")
        return FakeCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.data and not cache.data.startswith(MAGIC):
            return False  # another TensorRT version or GPU: TensorRT refuses it
        self.cache = cache
        return True

    def get_timing_cache(self):
        return None if self.fake.no_cache_back else self.cache


class FakeProfile(dict):
    def set_shape(self, name, lo, opt, hi):
        self[name] = (lo, opt, hi)


class FakeBuilder:
    def __init__(self, fake) -> None:
        self.fake = fake
        self.num_DLA_cores = fake.dla_cores

    def create_network(self, flags):
        return SimpleNamespace(flags=flags)

    def create_builder_config(self):
        config = FakeConfig(self.fake)
        self.fake.configs.append(config)
        return config

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        return b"engine"


def fake_tensorrt(dla_cores: int = 0, no_cache_back: bool = False):
    fake = SimpleNamespace(__version__="10.3.0.26", dla_cores=dla_cores, no_cache_back=no_cache_back, configs=[])
    fake.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    fake.Builder = lambda logger: FakeBuilder(fake)
    fake.OnnxParser = lambda network, logger: SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)
    fake.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32", GPU_FALLBACK="GPU_FALLBACK")
    fake.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    fake.MemoryPoolType = SimpleNamespace(WORKSPACE=0)
    fake.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
    return fake


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a fake `tensorrt` (and a fake device) for build_engines; returns a factory."""
    def install(**kwargs):
        fake = fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(trt_backend, "current_device", lambda: DeviceInfo("10.3.0.26", "Orin", (8, 7)))
        return fake
    return install


def test_fake_build_fp32_clears_tf32_and_saves_the_cache_atomically(tmp_path, fake_trt):
    fake = fake_trt()
    cache = tmp_path / "cache" / "timing.cache"
    log = []
    out = build_engines(make_tiny_package(tmp_path / "pkg"), tmp_path / "out",
                        BuildOptions(precision="fp32", timing_cache=cache), progress=log.append)
    package = load_package(out)
    assert len(fake.configs) == len(package.graphs) and all("TF32" not in c.flags for c in fake.configs)
    assert cache.read_bytes() == MAGIC + b"tactics" and sorted(p.name for p in cache.parent.iterdir()) == [cache.name]
    meta = json.loads((out / "engines" / "camera.json").read_text())
    assert meta["precision"] == "fp32" and meta["dla_core"] is None
    assert not any("timing cache" in line for line in log), log


def test_fake_build_default_cache_is_keyed_and_none_cache_is_tolerated(tmp_path, fake_trt, monkeypatch):
    monkeypatch.delenv("FUSION_RT_TRT_TIMING_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fake_trt()
    build_engines(make_tiny_package(tmp_path / "pkg"), tmp_path / "out", BuildOptions(precision="fp16"))
    keyed = tmp_path / "xdg" / "fusion-rt" / "tensorrt" / "timing-10.3.0.26-sm87-orin.cache"
    assert keyed.read_bytes() == MAGIC + b"tactics"
    # get_timing_cache() returning None after a successful build: no AttributeError, the engines are kept
    fake_trt(no_cache_back=True)
    out = build_engines(tmp_path / "pkg", tmp_path / "out2", BuildOptions(precision="fp16"))
    assert (out / "engines" / "camera.engine").read_bytes() == b"engine"


@pytest.mark.parametrize("stored", [b"TC-10.2.0-sm86|other tensorrt", b"raise"])
def test_fake_build_with_a_refused_cache_warns_and_starts_fresh(tmp_path, fake_trt, stored):
    fake = fake_trt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(stored)
    log = []
    build_engines(make_tiny_package(tmp_path / "pkg"), tmp_path / "out",
                  BuildOptions(precision="fp16", timing_cache=cache), progress=log.append)
    warnings = [line for line in log if "is not usable here" in line]
    assert len(warnings) == 1 and str(cache) in warnings[0], log  # once, not once per graph
    assert all(c.cache is not None for c in fake.configs)  # every graph built with a (fresh) cache
    assert cache.read_bytes() == MAGIC + b"tactics"


def test_attach_timing_cache_without_any_cache(tmp_path):
    class NoCache(FakeConfig):
        def create_timing_cache(self, data):
            return None

    log = []
    assert attach_timing_cache(NoCache(SimpleNamespace()), MAGIC, tmp_path / "t.cache", log.append) == b""
    assert len(log) == 2 and "building without one" in log[1]
    config = FakeConfig(SimpleNamespace())
    assert attach_timing_cache(config, MAGIC + b"x", tmp_path / "t.cache", log.append) == MAGIC + b"x"
    assert config.cache.data == MAGIC + b"x" and len(log) == 2


def test_unwritable_timing_cache_is_reported_not_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = []
    save_timing_cache(blocker / "timing.cache", b"x", log.append)  # its folder is a file
    assert len(log) == 1 and log[0].startswith("timing cache not saved")


def test_fake_build_dla_is_static_checked_and_recorded(tmp_path, fake_trt):
    fake = fake_trt(dla_cores=2)
    log = []
    out = build_engines(make_tiny_package(tmp_path / "pkg"), tmp_path / "out",
                        BuildOptions(precision="fp16", opt_batch=1, max_batch=8, dla_core=1,
                                     timing_cache=tmp_path / "t.cache"), progress=log.append)
    for config in fake.configs:
        assert config.DLA_core == 1 and config.default_device_type == "DLA" and "GPU_FALLBACK" in config.flags
        (profile,) = config.profiles
        assert all(lo == opt == hi and lo[0] == 1 for lo, opt, hi in profile.values())
    assert any("--max-batch 8 not used" in line for line in log), log
    package = load_package(out)
    assert package.manifest["engines"]["max_batch"] == 1 and package.manifest["engines"]["dla_core"] == 1
    assert json.loads((out / "engines" / "head.json").read_text())["dla_core"] == 1


@pytest.mark.parametrize("cores, core", [(0, 0), (2, 2)])
def test_fake_build_refuses_a_missing_dla_core_before_writing(tmp_path, fake_trt, cores, core):
    fake_trt(dla_cores=cores)
    with pytest.raises(ConfigError, match=rf"^--dla {core}: .* {cores} DLA core") as info:
        build_engines(make_tiny_package(tmp_path / "pkg"), tmp_path / "out",
                      BuildOptions(precision="fp16", dla_core=core, timing_cache=tmp_path / "t.cache"))
    assert isinstance(info.value, FusionRTError) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


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
    pkg = make_tiny_package(tmp_path / "pkg")
    # its own timing cache: never the developer's ~/.cache one
    out = build_engines(pkg, tmp_path / "trt", BuildOptions(precision="fp32", max_batch=2,
                                                            timing_cache=tmp_path / "timing.cache"))
    package = load_package(out)
    assert set(package.manifest["engines"]["graphs"]) == set(package.graphs)
    assert (out / "engines" / "head.engine").stat().st_size > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0
