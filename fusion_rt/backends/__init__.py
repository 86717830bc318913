"""Inference backends behind one contract: `Runner.infer(feed) -> outputs` (see `base`).

`create_runner(package, graph, backend)` is the registry the runtime uses: "onnxruntime" (CPU,
or CUDA / TensorRT execution providers with onnxruntime-gpu) and "tensorrt" (native engines
from the package's `engines/` folder). TensorRT is imported only when that backend is used.
"""

from __future__ import annotations

from fusion_rt.backends.base import Runner, RunnerError
from fusion_rt.backends.onnxruntime import OrtConfig, OrtRunner, OrtThreading, SessionFromOnnx
from fusion_rt.errors import ConfigError

__all__ = [
    "Runner",
    "RunnerError",
    "OrtConfig",
    "OrtThreading",
    "OrtRunner",
    "SessionFromOnnx",
    "BACKENDS",
    "create_runner",
]

BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt")


def create_runner(package, graph: str, backend: str = "onnxruntime", ort_config: OrtConfig | None = None) -> Runner:
    """An inactive runner for `graph` of a loaded `ModelPackage` on `backend`."""
    if graph not in package.graphs:
        raise ConfigError(f"package {package.name!r} has no graph {graph!r}; it has {sorted(package.graphs)}")
    if backend == "onnxruntime":
        return OrtRunner(SessionFromOnnx(package.graph_path(graph), ort_config), name=graph)
    if backend == "tensorrt":
        from fusion_rt.backends.tensorrt import EngineFromPackage, TrtRunner

        return TrtRunner(EngineFromPackage(package, graph), name=graph)
    raise ConfigError(f"unknown backend {backend!r}; choose from {list(BACKENDS)} or pass a runner factory")
