"""ONNX Runtime backend: `SessionFromOnnx` (loader) and `OrtRunner` (runner).

CPU by default; the CUDA and TensorRT execution providers are used when `onnxruntime-gpu` is
installed and asked for (`providers=("cuda",)`), with the CPU provider as the fallback for
unsupported nodes.

Two things make a runner cheap on the hot path (shared/BASELINE.md):

- I/O binding with preallocated outputs: the first call with a given set of input shapes binds
  the inputs' memory (zero-copy on CPU) and allocates the outputs once; later calls rebind only the
  inputs whose array object changed, so a caller that refills the same input buffers pays no
  binding at all, and outputs are written in place (returned arrays are reused: copy to keep).
- Threading (`OrtThreading`): ONNX Runtime's per-session pools spin 10-50 ms after each run and
  sessions in one process fight over the cores. `no_spin` (the default) keeps per-session pools
  but turns spinning off; `global` gives all sessions one process-wide pool; `spin` is ONNX
  Runtime's own default. Measured by bench/test_bench_runtime.py::test_threading_modes (2 shared
  cores, ORT 1.32, 2 threads, a radar and a camera frame per step through three sessions, median
  of 3 alternated processes): no_spin 10.7 ms, global 24.6 ms (2.3x), spin 44.7 ms (4.2x).
  The global pool also spins (Python cannot turn that off) and, once created, makes ONNX Runtime
  refuse every later session in the process that does not opt into it (plain `InferenceSession`
  included), so it is opt-in only.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from fusion_rt.backends.base import Runner, RunnerError
from fusion_rt.errors import ConfigError, MissingExtraError

__all__ = ["OrtThreading", "OrtConfig", "SessionFromOnnx", "OrtRunner", "PROVIDERS", "WEIGHT_ONLY_SESSION_CONFIG",
           "is_weight_only_quantized", "apply_weight_only_config"]

#: Short provider names -> ONNX Runtime execution provider names.
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64), "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32), "tensor(int8)": np.dtype(np.int8), "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


class OrtThreading(str, enum.Enum):
    """How sessions get their worker threads (see the module docstring)."""

    NO_SPIN = "no_spin"  # per-session pools, workers sleep when idle
    GLOBAL = "global"  # one process-wide pool shared by every session (ORT global thread pool)
    SPIN = "spin"  # per-session pools that spin after each run (ONNX Runtime's default)


@dataclass(frozen=True)
class OrtConfig:
    """Session options fusion-rt sets; everything else stays at ONNX Runtime's defaults."""

    # Short names from PROVIDERS, in priority order; "cpu" is always appended as the fallback.
    providers: tuple[str, ...] = ("cpu",)
    # Intra-op threads per session (or of the global pool); None lets ONNX Runtime pick (= cores).
    threads: int | None = None
    # no_spin: 2.3x faster than the global pool and 4.2x faster than spinning pools here (module docstring).
    threading: OrtThreading = OrtThreading.NO_SPIN
    # Bind inputs/outputs and reuse preallocated outputs (BASELINE: 41 us vs 166 us per call).
    io_binding: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.providers, (str, list, tuple)):
            raise ConfigError(f"providers must be a name or a list of names from {sorted(PROVIDERS)}, "
                              f"got {self.providers!r}")
        providers = (self.providers,) if isinstance(self.providers, str) else tuple(self.providers)
        unknown = [p for p in providers if p not in PROVIDERS]
        if unknown or not providers:
            raise ConfigError(f"unknown ONNX Runtime providers {unknown or list(providers)}; "
                              f"choose from {sorted(PROVIDERS)}")
        object.__setattr__(self, "providers", providers)
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, Integral)
                                         or not 1 <= self.threads <= 1024):
            raise ConfigError(f"threads must be None or an integer in [1, 1024], got {self.threads!r}")
        if self.threads is not None:
            object.__setattr__(self, "threads", int(self.threads))
        try:
            object.__setattr__(self, "threading", OrtThreading(self.threading))
        except ValueError as exc:
            raise ConfigError(f"threading must be one of {[t.value for t in OrtThreading]}, "
                              f"got {self.threading!r}") from exc
        if not isinstance(self.io_binding, bool):  # bool("no") would turn it on
            raise ConfigError(f"io_binding must be True or False, got {self.io_binding!r}")


_global_pool_lock = threading.Lock()
_global_pool_threads: int | None | bool | str = False  # False: not set yet in this process; "host": not by us


def _ensure_global_pool(ort, threads: int | None) -> None:
    """Size ONNX Runtime's process-wide pool once; a later, different size is refused (it cannot change).
    A pool the host application created already is used as it is (ONNX Runtime cannot resize it)."""
    global _global_pool_threads
    with _global_pool_lock:
        if _global_pool_threads is False:
            if not hasattr(ort, "set_global_thread_pool_sizes"):  # a Python binding from onnxruntime 1.23 on
                raise ConfigError(f"threading='global' needs onnxruntime >= 1.23 (this is {ort.__version__}); "
                                  f"use threading='no_spin' (the default) or upgrade onnxruntime")
            try:
                ort.set_global_thread_pool_sizes(threads or 0, 1)
                _global_pool_threads = threads
            except ort_errors(ort) as exc:
                if "already" not in str(exc):
                    raise ConfigError(f"ONNX Runtime refused a global thread pool of {threads!r} threads: "
                                      f"{exc}") from exc
                _global_pool_threads = "host"
        elif _global_pool_threads != threads and _global_pool_threads != "host":
            raise ConfigError(f"ONNX Runtime's global thread pool was already sized to {_global_pool_threads!r} "
                              f"threads in this process; cannot use {threads!r} (pass the same threads, or "
                              f"threading='no_spin')")


def _provider_list(ort, names: Sequence[str]) -> list[str]:
    available = set(ort.get_available_providers())
    out = []
    for short in names:
        full = PROVIDERS[short]
        if full not in available:
            if short == "cpu":
                raise ConfigError(f"this ONNX Runtime build has no {full}: available {sorted(available)}")
            raise MissingExtraError("onnxruntime-gpu", "gpu", f"the {full} (available here: {sorted(available)})")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def ort_errors(ort) -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception types (they derive from Exception only)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException", "InvalidProtobuf",
             "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


#: Session config for a weight-only quantized graph: lets ONNX Runtime fold each
#: DequantizeLinear of a constant weight into an FP32 initializer when the session is created, so
#: the graph runs at FP32 speed from a file with int8 weights (left as QDQ, ORT dequantizes them on
#: every run: +28% on the shipped head here).
WEIGHT_ONLY_SESSION_CONFIG = {"session.disable_quant_qdq": "1"}


def is_weight_only_quantized(path: str | os.PathLike) -> bool:
    """True for a graph with DequantizeLinear nodes and no QuantizeLinear: int8 weights, FP32 compute."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others: any failure is an unreadable graph
        raise RunnerError(f"{str(path)!r} is not a readable ONNX model: {type(exc).__name__}: {exc}") from exc
    ops = {n.op_type for n in model.graph.node}
    return "DequantizeLinear" in ops and "QuantizeLinear" not in ops


def apply_weight_only_config(options, path: str | os.PathLike) -> None:
    """Add `WEIGHT_ONLY_SESSION_CONFIG` to ORT `options` when the graph at `path` is weight-only quantized."""
    if is_weight_only_quantized(path):
        for key, value in WEIGHT_ONLY_SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)


class SessionFromOnnx:
    """Loader: an `onnxruntime.InferenceSession` for an ONNX file, built when called."""

    def __init__(self, path: str | os.PathLike, config: OrtConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or OrtConfig()

    def __call__(self):
        import onnxruntime as ort

        cfg = self.config
        if not self.path.is_file():
            raise ConfigError(f"ONNX model {str(self.path)!r} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if cfg.threading is OrtThreading.GLOBAL:  # (no per-session pool sizes: ORT warns they are ignored)
            _ensure_global_pool(ort, cfg.threads)
            options.use_per_session_threads = False
        elif _global_pool_threads is not False:  # ORT refuses per-session pools once the global one exists
            raise ConfigError(f"ONNX Runtime's global thread pool is in use in this process: every session must "
                              f"use threading='global' (this one asks for {cfg.threading.value!r})")
        else:
            options.intra_op_num_threads = cfg.threads or 0
            options.inter_op_num_threads = 1  # graphs run sequentially; inter-op threads would only spin
            if cfg.threading is OrtThreading.NO_SPIN:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        apply_weight_only_config(options, self.path)
        providers = _provider_list(ort, cfg.providers)
        # On the CPU provider alone, ONNX Runtime's warnings are optimizer notes ("can't constant fold
        # Add node": no CPU float16 kernel), several per session of an fp16 package, printed on the
        # host's stderr past any --quiet. With a GPU provider they say what fell back to the CPU: kept.
        if providers == ["CPUExecutionProvider"]:
            options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.path), options, providers=providers)
        except (*ort_errors(ort), RuntimeError) as exc:  # a graph it refuses (shape constants in external data...)
            if "global thread pool" in str(exc):  # the host application made ONNX Runtime's process-wide pool
                raise ConfigError("this process already has an ONNX Runtime global thread pool (made by the host "
                                  "application): pass threading='global' to use it") from exc
            raise RunnerError(f"ONNX Runtime cannot load {str(self.path)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SessionFromOnnx({str(self.path)!r}, {self.config!r})"


class _Binding:
    """An I/O binding for one set of input shapes: bound input arrays and preallocated outputs."""

    def __init__(self, io, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        self.io = io
        self.inputs = inputs  # name -> the array object currently bound (kept alive: its memory is bound)
        self.outputs = outputs


class OrtRunner(Runner):
    """Runs one ONNX graph with ONNX Runtime behind the Runner contract.

    `session` is a loader (e.g. `SessionFromOnnx`) or a ready `InferenceSession`. With
    `io_binding`, outputs are preallocated per input-shape signature and returned in place
    (valid until the next call); graphs whose output shapes cannot be derived from the input
    shapes fall back to `session.run`.
    """

    def __init__(self, session, name: str | None = None, io_binding: bool | None = None) -> None:
        loader_name = getattr(session, "path", None)
        super().__init__(name or (Path(loader_name).stem if loader_name else "onnx"))
        self._loader = session
        if io_binding is None:
            io_binding = getattr(getattr(session, "config", None), "io_binding", True)
        self.io_binding = bool(io_binding)
        self.session = None
        self._binding: _Binding | None = None
        self._signature: tuple | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def activate_impl(self) -> None:
        self.session = self._loader() if callable(self._loader) else self._loader
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._input_names = tuple(self._inputs)
        outputs = self.session.get_outputs()
        self._output_names = tuple(o.name for o in outputs)
        self._output_meta = [(o.name, _ORT_DTYPES.get(o.type), tuple(o.shape)) for o in outputs]
        self._input_dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in self.session.get_inputs()}
        self._binding = None
        self._signature = None

    def deactivate_impl(self) -> None:
        self._binding = None
        self.session = None

    def _resolve_output_shapes(self, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]] | None:
        """Output shapes from the input shapes (named dims such as 'batch'); None when undecidable."""
        sizes: dict[str, int] = {}
        for name, meta in self._inputs.items():
            for dim, actual in zip(meta.shape, feed[name].shape, strict=False):
                if isinstance(dim, str):
                    sizes[dim] = actual
        shapes = {}
        for name, dtype, shape in self._output_meta:
            if dtype is None:
                return None
            dims = []
            for dim in shape:
                if isinstance(dim, int) and dim > 0:
                    dims.append(dim)
                elif isinstance(dim, str) and dim in sizes:
                    dims.append(sizes[dim])
                else:
                    return None
            shapes[name] = tuple(dims)
        return shapes

    def _check_input(self, name: str, array: np.ndarray) -> np.ndarray:
        expected = self._input_dtypes[name]
        if not isinstance(array, np.ndarray):
            raise RunnerError(f"runner {self.name!r}: input {name!r} must be a numpy array, got {type(array).__name__}")
        if expected is not None and array.dtype != expected:
            raise RunnerError(f"runner {self.name!r}: input {name!r} has dtype {array.dtype}, "
                              f"the graph takes {expected}")
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)

    def _bind_input(self, io, name: str, array: np.ndarray) -> None:
        io.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            arrays = {n: self._check_input(n, feed[n]) for n in self._input_names}
            return dict(zip(self._output_names, self.session.run(None, arrays), strict=True))
        signature = tuple(feed[n].shape for n in self._input_names)
        binding = self._binding
        if binding is None or signature != self._signature:
            binding = self._new_binding(feed, signature)
            if binding is None:  # output shapes unknown: plain run
                arrays = {n: self._check_input(n, feed[n]) for n in self._input_names}
                return dict(zip(self._output_names, self.session.run(None, arrays), strict=True))
        else:
            bound = binding.inputs
            for name in self._input_names:
                array = feed[name]
                if array is not bound[name]:  # a new array object: bind its memory instead
                    checked = self._check_input(name, array)
                    self._bind_input(binding.io, name, checked)
                    bound[name] = checked
        self.session.run_with_iobinding(binding.io)
        return binding.outputs

    def _new_binding(self, feed: Mapping[str, np.ndarray], signature: tuple) -> _Binding | None:
        shapes = self._resolve_output_shapes(feed)
        if shapes is None:
            self._binding, self._signature = None, None
            return None
        io = self.session.io_binding()
        inputs = {}
        for name in self._input_names:
            checked = self._check_input(name, feed[name])
            self._bind_input(io, name, checked)
            inputs[name] = checked
        outputs = {}
        for name, dtype, _ in self._output_meta:
            out = np.empty(shapes[name], dtype=dtype)
            io.bind_output(name, "cpu", 0, dtype, list(out.shape), out.ctypes.data)
            outputs[name] = out
        self._binding = _Binding(io, inputs, outputs)
        self._signature = signature
        return self._binding
