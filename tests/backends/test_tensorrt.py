"""Native TensorRT backend: the engine metadata check (pure, always tested) and, where TensorRT and
a GPU are present, a real engine built from the tiny package's graph."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from fusion_rt.backends import create_runner
from fusion_rt.backends.tensorrt import (
    DeviceInfo,
    EngineFromPackage,
    EngineMetadata,
    EngineMismatchError,
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
    check_engine_metadata(META, DEVICE, SHA)  # a build number does not change the engine format
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
def test_engine_built_here_runs_and_matches_onnxruntime(package, tmp_path):
    import tensorrt as trt

    from fusion_rt.backends.tensorrt import current_device

    try:
        device = current_device()
    except Exception as exc:  # no GPU or no cuda-python: nothing to run on
        pytest.skip(f"no usable GPU: {exc}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(package.graph_path("camera").read_bytes())
    config = builder.create_builder_config()
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
