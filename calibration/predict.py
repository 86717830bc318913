"""Run a package's graphs with ONNX Runtime on preprocessed arrays: encoders -> head, batch-wise.

numpy + onnxruntime only (no torch), so calibration, evaluation and benchmarks of a package work
on a machine without the train extra. `PackageRunner` is the one place that knows how the
graphs are wired (encoder input names and dtypes, the head's `<m>_tokens` + `present` inputs), as
the manifest describes them; graph files may be swapped (`graph_files`) to run a quantized
graph inside an otherwise FP32 package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion_rt.backends.base import RunnerError
from fusion_rt.backends.onnxruntime import apply_weight_only_config, ort_errors
from fusion_rt.errors import ConfigError
from fusion_rt.messages import MODALITIES
from fusion_rt.package import GraphSpec, ModelPackage
from fusion_rt.runtime import NP_DTYPES

__all__ = ["Frames", "PackageRunner", "session_options", "sigmoid", "occupied", "all_finite"]


@dataclass
class Frames:
    """Preprocessed model inputs of N frames (what the encoders eat) plus the presence mask."""

    inputs: dict[str, np.ndarray]  # modality -> [N, ...] (float32 or float16: cast per batch; text: int64 ids)
    present: np.ndarray  # [N, 4] bool, MODALITIES order: modality available for the frame

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def take(self, index: np.ndarray) -> Frames:
        return Frames({m: v[index] for m, v in self.inputs.items()}, self.present[index])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


#: Frames per slice where every frame's outputs are reduced (BEV logits are 64 KB a frame).
ROWS_PER_SLICE = 64


def occupied(bev_logits: np.ndarray, rows: int = ROWS_PER_SLICE) -> np.ndarray:
    """`sigmoid(bev_logits) >= 0.5` (decided in the logits' precision, as the runtime does), slice of
    frames by slice: the float temporaries of sigmoid are a slice, not every frame's."""
    bev_logits = np.asarray(bev_logits)
    out = np.empty(bev_logits.shape, dtype=bool)
    for start in range(0, len(bev_logits), rows):
        out[start:start + rows] = sigmoid(bev_logits[start:start + rows]) >= 0.5
    return out


def all_finite(value: np.ndarray, rows: int = ROWS_PER_SLICE) -> bool:
    """np.isfinite(value).all(), slice of frames by slice (no mask of every element)."""
    value = np.atleast_1d(np.asarray(value))
    return all(bool(np.isfinite(value[start:start + rows]).all()) for start in range(0, len(value), rows))


def session_options(threads: int = 2, profile_prefix: str | None = None, path: str | os.PathLike | None = None):
    """ORT session options for host-side measurement: fixed threads and no spinning.

    Worker threads spin for 10-50 ms after a run (BASELINE.md); with several sessions alternating
    in one process (FP32 vs INT8, encoder vs head) spinning threads steal the other's cores, so
    spinning is off for every session alike.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if path is not None:
        apply_weight_only_config(opts, path)  # as the runtime's backend does
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


class PackageRunner:
    """ONNX Runtime sessions for every graph of a package, wired as the manifest says.

    `graph_files` maps graph names to replacement ONNX files (same I/O contract), e.g. a
    quantized encoder in an FP32 package. Sessions are created lazily, one per graph.
    """

    def __init__(self, package: ModelPackage, graph_files: Mapping[str, str | os.PathLike] | None = None,
                 threads: int = 2, profile_prefix: str | None = None) -> None:
        self.package = package
        self.files = {name: Path(graph_files[name]) if graph_files and name in graph_files
                      else package.graph_path(name) for name in package.graphs}
        self.threads = threads
        self.profile_prefix = profile_prefix
        self._sessions: dict = {}
        head = package.head
        self.present_spec = next((t for t in head.inputs if t.name == "present"), None)
        if self.present_spec is None:
            raise ConfigError(f"head graph of {str(package.root)!r} has no 'present' input")
        # Each encoder's token output as the runtime finds it: 'tokens', else the graph's only output.
        self.token_names: dict[str, str] = {}
        for m in package.modalities:
            self.token_names[m] = package.graphs[m].tokens_output
            if self.token_names[m] is None:
                raise ConfigError(f"graph {m!r} of {str(package.root)!r}: expected a 'tokens' output, "
                                  f"got {[t.name for t in package.graphs[m].outputs]}")
        # Graphs exported without a dynamic batch axis take that batch only (1, typically): run in those.
        static = [t.shape[0] for spec in package.graphs.values() for t in spec.inputs
                  if t.shape and isinstance(t.shape[0], int)]
        self.max_batch: int | None = min(static) if static else None

    # ------------------------------------------------------------------ sessions

    def session(self, name: str):
        if name not in self._sessions:
            import onnxruntime as ort

            prefix = f"{self.profile_prefix}_{name}" if self.profile_prefix else None
            try:
                self._sessions[name] = ort.InferenceSession(str(self.files[name]),
                                                            session_options(self.threads, prefix, self.files[name]),
                                                            providers=["CPUExecutionProvider"])
            except (*ort_errors(ort), RuntimeError) as exc:  # an op it lacks, types it cannot run...
                raise RunnerError(f"graph {name!r}: ONNX Runtime cannot load {str(self.files[name])!r}: {exc}") from exc
        return self._sessions[name]

    def open(self) -> PackageRunner:
        """Create every graph's session now: a graph ONNX Runtime refuses fails here, before any log is read."""
        for name in self.files:
            self.session(name)
        return self

    def end_profiling(self) -> list[str]:
        """Stop profiling on every open session; returns the trace files written."""
        return [s.end_profiling() for s in self._sessions.values()]

    # ------------------------------------------------------------------ running

    @staticmethod
    def _cast(spec: GraphSpec, name: str, value: np.ndarray) -> np.ndarray:
        dtype = next(NP_DTYPES[t.dtype] for t in spec.inputs if t.name == name)
        return np.ascontiguousarray(value, dtype=dtype)

    def encoder_feed(self, modality: str, value: np.ndarray) -> dict[str, np.ndarray]:
        spec = self.package.graphs[modality]
        name = spec.inputs[0].name
        return {name: self._cast(spec, name, value)}

    def encode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{modality: tokens [B, N, D]} for one batch of encoder inputs."""
        return {m: self.session(m).run([self.token_names[m]], self.encoder_feed(m, inputs[m]))[0]
                for m in self.package.modalities}

    def _batches(self, n: int, batch_size: int) -> list[slice]:
        step = min(batch_size, self.max_batch or batch_size)
        return [slice(start, min(n, start + step)) for start in range(0, n, step)]

    def head_feed(self, tokens: Mapping[str, np.ndarray], present: np.ndarray) -> dict[str, np.ndarray]:
        """The head's feed from tokens and a [B, 4] MODALITIES-order mask (what `Frames` holds), put
        in the package's modality order (the head's `present` columns), or a [B, M] package-order
        mask for a package of fewer modalities. A package may list all four in another order."""
        mods = self.package.modalities
        if present.shape[1] == len(MODALITIES) and tuple(mods) != tuple(MODALITIES):
            present = present[:, [MODALITIES.index(m) for m in mods]]
        head = self.package.head
        feed = {f"{m}_tokens": self._cast(head, f"{m}_tokens", tokens[m]) for m in mods}
        feed["present"] = self._cast(head, "present", present)
        return feed

    def head(self, tokens: Mapping[str, np.ndarray], present: np.ndarray) -> dict[str, np.ndarray]:
        names = [t.name for t in self.package.head.outputs]
        return dict(zip(names, self.session("head").run(names, self.head_feed(tokens, present)), strict=True))

    def head_rows(self, tokens: Mapping[str, np.ndarray], present: np.ndarray,
                  batch_size: int = 32) -> dict[str, np.ndarray]:
        """`head` over any number of rows, batch by batch (a head exported with a fixed batch takes that)."""
        out: dict[str, list[np.ndarray]] = {}
        for sl in self._batches(len(present), batch_size):
            for k, v in self.head({m: t[sl] for m, t in tokens.items()}, present[sl]).items():
                out.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in out.items()}

    def run(self, frames: Frames, batch_size: int = 32, present: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every head output over `frames`, one array each (filled batch by batch); `present` overrides
        the frames' mask."""
        mask = frames.present if present is None else present
        n = len(frames)
        out: dict[str, np.ndarray] = {}  # filled batch by batch: no list of batches to concatenate (2x peak)
        for sl in self._batches(n, batch_size):
            tokens = self.encode({m: v[sl] for m, v in frames.inputs.items()})
            for k, v in self.head(tokens, mask[sl]).items():
                if k not in out:
                    out[k] = np.empty((n, *v.shape[1:]), dtype=v.dtype)
                out[k][sl] = v
        return out

    def tokens(self, frames: Frames, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Every encoder's tokens over `frames`, concatenated (the head's calibration input)."""
        out: dict[str, list[np.ndarray]] = {m: [] for m in self.package.modalities}
        for sl in self._batches(len(frames), batch_size):
            for m, v in self.encode({m: v[sl] for m, v in frames.inputs.items()}).items():
                out[m].append(v)
        return {m: np.concatenate(v) for m, v in out.items()}
