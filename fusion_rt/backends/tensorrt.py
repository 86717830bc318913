"""Native TensorRT backend: `EngineFromPath` / `EngineFromPackage` (loaders) and `TrtRunner`.

A serialized engine only runs on the TensorRT version and the GPU it was built for, and it must
have been built from the graph the package ships. Every engine therefore travels with a JSON
metadata file (`engines/<graph>.engine` + `engines/<graph>.json`, written by the build step):

    {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": [8, 7],
     "source_sha256": "<sha256 of the ONNX graph>", "precision": "fp16", "dla_core": null}

`check_engine_metadata` compares it with the running device and the package and refuses a
mismatch with `EngineMismatchError` (a `PackageError`) listing every mismatched field, a DLA
core the device lacks included; it is a pure function, tested without TensorRT. Deserializing a
mismatched engine is never attempted (DESIGN.md section 8: TensorRT engines only with matching
metadata); a DLA engine is deserialized with the runtime set to the DLA core it was built for.

TensorRT (10/11 API: `deserialize_cuda_engine`, named tensors, `execute_async_v3`) and the CUDA
runtime bindings (`cuda-python`) are imported lazily; without them the loaders raise
`MissingExtraError` naming `fusion-rt[tensorrt]`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusion_rt._optional import require
from fusion_rt.backends.base import Runner, RunnerError
from fusion_rt.errors import FusionRTError, ManifestError, MissingExtraError, PackageError

__all__ = [
    "EngineMetadata",
    "DeviceInfo",
    "EngineMismatchError",
    "check_engine_metadata",
    "engine_paths",
    "current_device",
    "EngineFromPath",
    "EngineFromPackage",
    "TrtRunner",
]


class EngineMismatchError(PackageError):
    """A TensorRT engine was built for another TensorRT version, GPU or source graph."""


@dataclass(frozen=True)
class EngineMetadata:
    """What an engine was built with and from (the JSON file next to it)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    source_sha256: str
    precision: str = "fp32"
    dla_core: int | None = None  # the DLA core it was built for (None: GPU)

    @classmethod
    def from_dict(cls, d: Any, where: str = "engine metadata") -> EngineMetadata:
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(d).__name__}")
        for key, kind in (("tensorrt_version", str), ("gpu_name", str), ("source_sha256", str),
                          ("compute_capability", list)):
            if not isinstance(d.get(key), kind):
                raise ManifestError(f"{where}: field {key!r} must be a {kind.__name__}, got {d.get(key)!r}")
        cc = d["compute_capability"]
        if len(cc) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in cc):
            raise ManifestError(f"{where}: compute_capability must be [major, minor], got {cc!r}")
        dla = d.get("dla_core")
        if dla is not None and (not isinstance(dla, int) or isinstance(dla, bool) or dla < 0):
            raise ManifestError(f"{where}: dla_core must be null or a non-negative integer, got {dla!r}")
        return cls(d["tensorrt_version"], d["gpu_name"], (cc[0], cc[1]), d["source_sha256"],
                   str(d.get("precision", "fp32")), dla)

    def to_dict(self) -> dict:
        return {"tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
                "compute_capability": list(self.compute_capability), "source_sha256": self.source_sha256,
                "precision": self.precision, "dla_core": self.dla_core}


@dataclass(frozen=True)
class DeviceInfo:
    """The running TensorRT version and GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    dla_cores: int | None = None  # DLA cores TensorRT sees here (None: not asked, not checked)


def _same_version(a: str, b: str) -> bool:
    """TensorRT refuses an engine from another build too ("expecting library version 9.2.0.5 got
    9.2.0.4"), so the build number counts where both versions carry one (else major.minor.patch)."""
    x, y = a.strip().split("."), b.strip().split(".")
    n = max(3, min(len(x), len(y)))
    return x[:n] == y[:n]


def check_engine_metadata(meta: EngineMetadata, device: DeviceInfo, source_sha256: str | None,
                          where: str = "engine", require_same_gpu_name: bool = True) -> None:
    """Raise EngineMismatchError unless `meta` matches the running `device` and the source graph.

    TensorRT version (with the build number where both have it) and compute capability must be equal; the GPU name too
    unless `require_same_gpu_name` is off (same architecture, other SKU: runs, but tactics were
    timed on another chip). `source_sha256` is the package graph's hash (None skips that check).
    An engine built for DLA core N needs more than N DLA cores here (checked when `device.dla_cores` is known).
    """
    problems = []
    if not _same_version(meta.tensorrt_version, device.tensorrt_version):
        problems.append(f"built with TensorRT {meta.tensorrt_version}, running TensorRT {device.tensorrt_version}")
    if tuple(meta.compute_capability) != tuple(device.compute_capability):
        problems.append(f"built for compute capability {meta.compute_capability[0]}.{meta.compute_capability[1]}, "
                        f"this GPU is {device.compute_capability[0]}.{device.compute_capability[1]}")
    if require_same_gpu_name and meta.gpu_name.strip() != device.gpu_name.strip():
        problems.append(f"built on GPU {meta.gpu_name!r}, running on {device.gpu_name!r}")
    if meta.dla_core is not None and device.dla_cores is not None and meta.dla_core >= device.dla_cores:
        problems.append(f"built for DLA core {meta.dla_core}, this device has {device.dla_cores} DLA core(s)")
    if source_sha256 is not None and meta.source_sha256 != source_sha256:
        problems.append(f"built from a graph with sha256 {meta.source_sha256[:16]}…, the package's graph is "
                        f"{source_sha256[:16]}…")
    if problems:
        raise EngineMismatchError(f"{where}: refused, " + "; ".join(problems)
                                  + " (rebuild the engine on this device from this package)")


def engine_paths(root: str | os.PathLike, graph: str) -> tuple[Path, Path]:
    """(engine, metadata) paths of a graph's engine inside a package: engines/<graph>.engine/.json."""
    base = Path(root) / "engines"
    return base / f"{graph}.engine", base / f"{graph}.json"


def _trt():
    return require("tensorrt", "the native TensorRT backend")


def _cudart():
    """The CUDA runtime bindings of cuda-python (new and old module layouts)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return __import__(name, fromlist=["_"])
        except ImportError:
            continue
    raise MissingExtraError("cuda-python", "tensorrt", "CUDA memory management in the TensorRT backend")


def _check_cuda(result):
    err, *rest = result
    if int(err) != 0:
        raise RunnerError(f"CUDA call failed with error {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def current_device(device: int = 0) -> DeviceInfo:
    """The running TensorRT version and the GPU `device` (name, compute capability)."""
    trt = _trt()
    try:
        cudart = _cudart()
        props = _check_cuda(cudart.cudaGetDeviceProperties(device))
    except FusionRTError:
        raise
    except Exception as exc:  # cuda-python raises RuntimeError("Failed to dlopen libcuda.so") without a driver
        raise RunnerError(f"no usable CUDA GPU for TensorRT: {type(exc).__name__}: {exc}") from exc
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(trt.__version__, name.rstrip("\x00"), (int(props.major), int(props.minor)))


class EngineFromPath:
    """Loader: check an engine's metadata against this device, then deserialize it."""

    def __init__(self, path: str | os.PathLike, metadata_path: str | os.PathLike | None = None,
                 source_sha256: str | None = None, require_same_gpu_name: bool = True) -> None:
        self.path = Path(path)
        self.metadata_path = Path(metadata_path) if metadata_path else self.path.with_suffix(".json")
        self.source_sha256 = source_sha256
        self.require_same_gpu_name = require_same_gpu_name

    def metadata(self) -> EngineMetadata:
        if not self.metadata_path.is_file():
            raise EngineMismatchError(f"engine {str(self.path)!r} has no metadata file {str(self.metadata_path)!r}; "
                                      "engines without build metadata are refused")
        try:
            data = json.loads(self.metadata_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSON: too deep, huge ints
            raise ManifestError(f"engine metadata {str(self.metadata_path)!r} is not readable JSON: {exc}") from exc
        return EngineMetadata.from_dict(data, str(self.metadata_path))

    def __call__(self):
        trt = _trt()
        if not self.path.is_file():
            raise PackageError(f"TensorRT engine {str(self.path)!r} does not exist")
        meta = self.metadata()
        device = current_device()
        logger = trt.Logger(trt.Logger.WARNING)
        try:
            runtime = trt.Runtime(logger)
        except (RuntimeError, TypeError) as exc:  # "factory function returned nullptr" when CUDA cannot start
            raise RunnerError(f"TensorRT could not start a runtime (CUDA initialisation failed?): {exc}") from exc
        if meta.dla_core is not None:
            device = replace(device, dla_cores=int(runtime.num_DLA_cores))
        check_engine_metadata(meta, device, self.source_sha256, f"engine {str(self.path)!r}",
                              self.require_same_gpu_name)
        if meta.dla_core is not None:
            runtime.DLA_core = meta.dla_core  # a DLA engine is bound to its core before deserializing
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineMismatchError(f"TensorRT could not deserialize {str(self.path)!r} (see its log above)")
        # The runtime must outlive the engine; TensorRT's pybind classes take no new attributes, so
        # the loader keeps it (a TrtRunner holds its loader as long as the engine).
        self._runtime = runtime
        return engine


class EngineFromPackage(EngineFromPath):
    """Loader: a package graph's engine (engines/<graph>.engine), checked against that graph's sha256."""

    def __init__(self, package, graph: str, require_same_gpu_name: bool = True) -> None:
        if graph not in package.graphs:
            raise PackageError(f"package {package.name!r} has no graph {graph!r}; it has {sorted(package.graphs)}")
        engine, meta = engine_paths(package.root, graph)
        super().__init__(engine, meta, package.graphs[graph].sha256, require_same_gpu_name)


class TrtRunner(Runner):
    """Runs a TensorRT engine behind the Runner contract (batch of the first call, then fixed).

    Device and host buffers are allocated for the input shapes of the first call (dynamic dims
    taken from the feed) and reused; a call with other shapes reallocates. Outputs are host
    arrays owned by the runner (valid until the next call).
    """

    def __init__(self, engine, name: str | None = None) -> None:
        path = getattr(engine, "path", None)
        super().__init__(name or (Path(path).stem if path else "engine"))
        self._loader = engine
        self._engine = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs

    def activate_impl(self) -> None:
        trt = _trt()
        self._cudart = _cudart()
        self._engine = self._loader() if callable(self._loader) else self._loader
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RunnerError(f"runner {self.name!r}: TensorRT could not create an execution context "
                              "(out of device memory?)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = tuple(n for n in names if is_input[n])
        self._outputs = tuple(n for n in names if not is_input[n])
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._stream = _check_cuda(self._cudart.cudaStreamCreate())
        self._device: dict[str, tuple[int, int]] = {}  # name -> (pointer, nbytes)
        self._host: dict[str, np.ndarray] = {}
        self._signature: tuple | None = None

    def _free(self) -> None:
        for ptr, _ in self._device.values():
            self._cudart.cudaFree(ptr)
        self._device.clear()
        self._host.clear()

    def deactivate_impl(self) -> None:
        self._free()
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = None
        self._engine = None

    def _allocate(self, feed: Mapping[str, np.ndarray]) -> None:
        self._free()
        self._signature = None  # a refused shape must not leave the freed buffers looking allocated
        for name in self._inputs:
            if not self._context.set_input_shape(name, tuple(feed[name].shape)):
                raise RunnerError(f"runner {self.name!r}: engine refuses input {name!r} of shape {feed[name].shape}")
        for name in self._inputs + self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RunnerError(f"runner {self.name!r}: shape of {name!r} unresolved ({shape})")
            host = np.empty(shape, dtype=self._dtypes[name])
            nbytes = max(host.nbytes, 1)
            ptr = _check_cuda(self._cudart.cudaMalloc(nbytes))
            self._device[name] = (int(ptr), host.nbytes)
            self._host[name] = host
            self._context.set_tensor_address(name, int(ptr))
        self._signature = tuple(feed[n].shape for n in self._inputs)

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        if tuple(feed[n].shape for n in self._inputs) != self._signature:
            self._allocate(feed)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._inputs:
            array = feed[name]
            if array.dtype != self._dtypes[name]:
                raise RunnerError(f"runner {self.name!r}: input {name!r} has dtype {array.dtype}, "
                                  f"the engine takes {self._dtypes[name]}")
            array = np.ascontiguousarray(array)
            ptr, nbytes = self._device[name]
            _check_cuda((cudart.cudaMemcpyAsync(ptr, array.ctypes.data, nbytes, h2d, self._stream)[0], None))
        if not self._context.execute_async_v3(self._stream):
            raise RunnerError(f"runner {self.name!r}: TensorRT execute_async_v3 failed")
        for name in self._outputs:
            ptr, nbytes = self._device[name]
            _check_cuda((cudart.cudaMemcpyAsync(self._host[name].ctypes.data, ptr, nbytes, d2h, self._stream)[0],
                         None))
        _check_cuda((cudart.cudaStreamSynchronize(self._stream)[0], None))
        return {name: self._host[name] for name in self._outputs}
