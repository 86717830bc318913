"""Native TensorRT backend: the engine metadata check (pure, always tested) and, where TensorRT and
a GPU are present, a real engine built from the tiny package's graph."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fusion_rt.backends import create_runner
from fusion_rt.backends import tensorrt as trt_backend
from fusion_rt.backends.base import RunnerError
from fusion_rt.backends.tensorrt import (
    DeviceInfo,
    EngineFromPackage,
    EngineFromPath,
    EngineMetadata,
    EngineMismatchError,
    TrtRunner,
    check_engine_metadata,
    engine_paths,
)
from fusion_rt.errors import ManifestError, MissingExtraError, PackageError
from fusion_rt.package import load_package

from ..tiny_package import make_tiny_package

SHA = "ab" * 32
DEVICE = DeviceInfo("10.3.0", "Orin", (8, 7))
META = EngineMetadata("10.3.0.26", "Orin", (8, 7), SHA, "fp16")

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return load_package(make_tiny_package(tmp_path_factory.mktemp("trt") / "pkg"))


def test_matching_metadata_passes():
    check_engine_metadata(META, DEVICE, SHA)  # a version without a build number: major.minor.patch compared
    check_engine_metadata(META, DEVICE, None)


@pytest.mark.parametrize("device, sha, message", [
    (DeviceInfo("10.4.0", "Orin", (8, 7)), SHA, "TensorRT 10.3.0.26, running TensorRT 10.4.0"),
    (DeviceInfo("10.3.0", "Orin", (8, 6)), SHA, "compute capability 8.7, this GPU is 8.6"),
    (DeviceInfo("10.3.0", "NVIDIA H200", (8, 7)), SHA, "GPU 'Orin', running on 'NVIDIA H200'"),
    (DEVICE, "cd" * 32, "sha256 abababab"),
])
def test_mismatches_are_refused_naming_the_values(device, sha, message):
    with pytest.raises(EngineMismatchError, match=message) as info:
        check_engine_metadata(META, device, sha, where="engine 'camera'")
    assert isinstance(info.value, PackageError)
    assert "engine 'camera'" in str(info.value) and "rebuild" in str(info.value)


def test_every_mismatch_is_listed_and_gpu_name_can_be_relaxed():
    with pytest.raises(EngineMismatchError) as info:
        check_engine_metadata(META, DeviceInfo("11.0.0", "Thor", (11, 0)), "00" * 32)
    assert str(info.value).count(";") == 3
    check_engine_metadata(META, DeviceInfo("10.3.0", "Orin NX", (8, 7)), SHA, require_same_gpu_name=False)


def test_metadata_round_trip_and_validation():
    assert EngineMetadata.from_dict(json.loads(json.dumps(META.to_dict()))) == META
    with pytest.raises(ManifestError, match="compute_capability"):
        EngineMetadata.from_dict({**META.to_dict(), "compute_capability": [8]})
    with pytest.raises(ManifestError, match="'gpu_name'"):
        EngineMetadata.from_dict({**META.to_dict(), "gpu_name": 3})
    dla = EngineMetadata("10.3.0", "Orin", (8, 7), SHA, "int8-qdq", dla_core=1)
    assert EngineMetadata.from_dict(json.loads(json.dumps(dla.to_dict()))) == dla
    old = {k: v for k, v in META.to_dict().items() if k != "dla_core"}  # written before DLA was recorded
    assert EngineMetadata.from_dict(old).dla_core is None
    for bad in (-1, True, "0"):
        with pytest.raises(ManifestError, match=f"dla_core .* got {bad!r}"):
            EngineMetadata.from_dict({**META.to_dict(), "dla_core": bad})


def test_dla_engine_needs_its_core_on_this_device():
    meta = EngineMetadata("10.3.0", "Orin", (8, 7), SHA, "fp16", dla_core=1)
    check_engine_metadata(meta, DeviceInfo("10.3.0", "Orin", (8, 7), dla_cores=2), SHA)
    check_engine_metadata(META, DeviceInfo("10.3.0", "Orin", (8, 7), dla_cores=0), SHA)  # a GPU engine
    for cores in (0, 1):  # Orin Nano has none, Orin NX one: both report "Orin" and 8.7
        with pytest.raises(EngineMismatchError, match=f"built for DLA core 1, this device has {cores} DLA core"):
            check_engine_metadata(meta, DeviceInfo("10.3.0", "Orin", (8, 7), dla_cores=cores), SHA)


class FakeRuntime:
    def __init__(self, logger, cores: int) -> None:
        self.num_DLA_cores = cores
        self.DLA_core = -1  # TensorRT's default
        self.core_at_deserialize = None

    def deserialize_cuda_engine(self, data):
        self.core_at_deserialize = self.DLA_core
        return SimpleNamespace(data=data)


def _fake_runtime(monkeypatch, cores: int) -> list:
    runtimes = []

    def runtime(logger):
        runtimes.append(FakeRuntime(logger, cores))
        return runtimes[-1]

    fake = SimpleNamespace(Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, s: None}), Runtime=runtime)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_backend, "current_device", lambda: DEVICE)
    return runtimes


def _engine_files(tmp_path: Path, meta: EngineMetadata) -> Path:
    engine = tmp_path / "camera.engine"
    engine.write_bytes(b"engine")
    engine.with_suffix(".json").write_text(json.dumps(meta.to_dict()))
    return engine


def test_dla_engine_is_deserialized_on_its_core(tmp_path, monkeypatch):
    runtimes = _fake_runtime(monkeypatch, cores=2)
    meta = EngineMetadata("10.3.0", "Orin", (8, 7), SHA, "fp16", dla_core=1)
    assert EngineFromPath(_engine_files(tmp_path, meta), source_sha256=SHA)().data == b"engine"
    assert runtimes[-1].core_at_deserialize == 1
    EngineFromPath(_engine_files(tmp_path, META), source_sha256=SHA)()
    assert runtimes[-1].core_at_deserialize == -1  # a GPU engine leaves the runtime as it is


def test_dla_engine_on_a_device_without_dla_is_refused_before_deserializing(tmp_path, monkeypatch):
    runtimes = _fake_runtime(monkeypatch, cores=0)
    meta = EngineMetadata("10.3.0", "Orin", (8, 7), SHA, "fp16", dla_core=0)
    loader = EngineFromPath(_engine_files(tmp_path, meta))
    with pytest.raises(EngineMismatchError, match="built for DLA core 0, this device has 0 DLA core"):
        loader()
    assert runtimes[-1].core_at_deserialize is None


def test_failed_execution_context_is_a_runner_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace())
    cudart = SimpleNamespace(cudaStreamCreate=lambda: pytest.fail("no stream before the context exists"))
    monkeypatch.setattr(trt_backend, "_cudart", lambda: cudart)
    engine = SimpleNamespace(create_execution_context=lambda: None)  # TensorRT's answer when out of memory
    runner = TrtRunner(engine, name="camera")
    with pytest.raises(RunnerError, match="'camera'.*could not create an execution context"):
        runner.activate()
    assert not runner.is_active


def test_tensorrt_extra_pins_cuda_python_to_cuda_12():
    # cuda-python's major is the CUDA major it runs on; JetPack 6 ships CUDA 12 (13 needs a CUDA 13 driver).
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["tensorrt"]
    assert "cuda-python>=12,<13" in extra, extra


def test_engine_without_metadata_is_refused(package):
    loader = EngineFromPackage(package, "camera")
    assert (loader.path, loader.metadata_path) == engine_paths(package.root, "camera")
    assert loader.source_sha256 == package.graphs["camera"].sha256
    with pytest.raises(EngineMismatchError, match="no metadata file"):
        loader.metadata()
    with pytest.raises(PackageError, match="'lidar'"):
        EngineFromPackage(package, "lidar")


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_missing_tensorrt_names_the_extra(package):
    runner = create_runner(package, "camera", backend="tensorrt")
    with pytest.raises(MissingExtraError, match=r'pip install "fusion-rt\[tensorrt\]"'):
        runner.activate()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT")
def test_engine_built_here_runs_and_matches_onnxruntime(tmp_path):
    import tensorrt as trt

    from fusion_rt.backends.tensorrt import current_device

    try:
        device = current_device()
    except Exception as exc:  # no GPU or no cuda-python: nothing to run on
        pytest.skip(f"no usable GPU: {exc}")
    package = load_package(make_tiny_package(tmp_path / "pkg"))  # its own copy: engines/ is written into it
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(package.graph_path("camera")))  # resolves external data beside the graph
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "TF32"):  # FP32 compared with FP32: TF32 (on by default) would round inputs
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, 36, 64), (1, 3, 36, 64), (2, 3, 36, 64))
    config.add_optimization_profile(profile)
    engine_path, meta_path = engine_paths(package.root, "camera")
    engine_path.parent.mkdir(exist_ok=True)
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    meta = EngineMetadata(device.tensorrt_version, device.gpu_name, device.compute_capability,
                          package.graphs["camera"].sha256)
    meta_path.write_text(json.dumps(meta.to_dict()))
    image = np.random.default_rng(0).normal(size=(1, 3, 36, 64)).astype(np.float32)
    with create_runner(package, "camera", backend="tensorrt") as trt_runner, create_runner(package, "camera") as ort:
        np.testing.assert_allclose(trt_runner.infer({"image": image})["tokens"], ort.infer({"image": image})["tokens"],
                                   rtol=1e-3, atol=1e-4)
    meta_path.write_text(json.dumps({**meta.to_dict(), "source_sha256": "00" * 32}))
    with pytest.raises(EngineMismatchError, match="sha256"):
        create_runner(package, "camera", backend="tensorrt").activate()


def test_another_build_of_the_same_version_is_refused():
    # TensorRT refuses an engine from another build ("expecting library version 9.2.0.5 got 9.2.0.4");
    # the check compared major.minor.patch only, so the mismatch surfaced as a vague deserialize failure.
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3.0.26, running TensorRT 10.3.0.30"):
        check_engine_metadata(META, DeviceInfo("10.3.0.30", "Orin", (8, 7)), SHA)
    check_engine_metadata(META, DeviceInfo("10.3.0.26", "Orin", (8, 7)), SHA)


def test_cuda_that_cannot_start_is_a_runner_error(tmp_path, monkeypatch):
    # Without a driver cuda-python raises RuntimeError("Failed to dlopen libcuda.so"), and trt.Runtime a
    # TypeError ("factory function returned nullptr"): both were tracebacks from `replay --backend tensorrt`.
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="10.3.0.26"))

    def no_driver():
        raise RuntimeError("Failed to dlopen libcuda.so")

    monkeypatch.setattr(trt_backend, "_cudart", no_driver)
    with pytest.raises(RunnerError, match="no usable CUDA GPU for TensorRT: RuntimeError: Failed to dlopen"):
        trt_backend.current_device()

    def nullptr(_logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    fake = SimpleNamespace(Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, s: None}), Runtime=nullptr)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_backend, "current_device", lambda: DEVICE)
    with pytest.raises(RunnerError, match="could not start a runtime"):
        EngineFromPath(_engine_files(tmp_path, META), source_sha256=SHA)()


def test_a_refused_shape_leaves_the_runner_usable(monkeypatch):
    # _allocate freed the buffers and raised, keeping the old shape signature: every later call with the
    # old, valid shape then found no buffers (KeyError) and the context held freed addresses.
    freed = []
    cudart = SimpleNamespace(cudaFree=freed.append, cudaMalloc=lambda n: (0, 4096 + n))
    monkeypatch.setattr(trt_backend, "_check_cuda", lambda result: result[1])
    context = SimpleNamespace(set_input_shape=lambda name, shape: shape[0] <= 8,
                              get_tensor_shape=lambda name: (1, 4), set_tensor_address=lambda name, ptr: None)
    runner = TrtRunner.__new__(TrtRunner)
    runner.name, runner._cudart, runner._context = "camera", cudart, context
    runner._inputs, runner._outputs, runner._dtypes = ["image"], ["tokens"], {"image": np.float32, "tokens": np.float32}
    runner._device, runner._host, runner._signature = {}, {}, None
    runner._allocate({"image": np.zeros((1, 4), np.float32)})
    assert runner._signature == ((1, 4),)
    with pytest.raises(RunnerError, match="refuses input 'image'"):
        runner._allocate({"image": np.zeros((9, 4), np.float32)})
    assert runner._signature is None and runner._device == {}  # the next call allocates again
