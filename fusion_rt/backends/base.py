"""The Runner contract every backend implements (Polygraphy's shape: loader -> runner -> infer).

A *loader* is a small callable named `XFromY` (`SessionFromOnnx`, `EngineFromPackage`) that builds
the backend's heavy object on demand; a *runner* wraps it as a context manager with one method,
`infer(feed) -> outputs`, both dicts of numpy arrays keyed by tensor name. The runtime talks only
to this contract, so a backend (or a test double such as a runner that sleeps) is swapped without
touching the runtime.

Buffer ownership: a runner may return views of buffers it owns and reuses (ONNX Runtime I/O
binding, TensorRT host buffers). They are valid until the next `infer` call on that runner; a
caller that keeps an output longer copies it. Inputs are only read during `infer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType

import numpy as np

from fusion_rt.errors import FusionRTError

__all__ = ["Runner", "RunnerError"]


class RunnerError(FusionRTError):
    """A runner was used outside its context, was fed wrong inputs, or its backend failed."""


class Runner(ABC):
    """One graph behind `infer(feed) -> outputs`; a context manager that owns the backend session.

    Subclasses implement `activate_impl`, `deactivate_impl` and `infer_impl`; `input_names` and
    `output_names` list the graph's tensors in graph order.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False
        self.inference_count = 0  # how many infer() calls completed: tests count encoder runs with it

    # -- the contract ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def input_names(self) -> tuple[str, ...]: ...

    @property
    @abstractmethod
    def output_names(self) -> tuple[str, ...]: ...

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on `feed` (every input by name) and return every output by name."""
        if not self.is_active:
            raise RunnerError(f"runner {self.name!r} is not active: use it as a context manager "
                              f"(`with runner:`) or call activate() first")
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise RunnerError(f"runner {self.name!r}: feed lacks inputs {missing}; it has {sorted(feed)}")
        try:
            outputs = self.infer_impl(feed)
        except FusionRTError:
            raise
        except Exception as exc:  # the backend's own errors (ONNX Runtime's, TensorRT's) become ours
            raise RunnerError(f"runner {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        self.inference_count += 1
        return outputs

    def activate(self) -> Runner:
        """Create the backend session (idempotent)."""
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the backend session (idempotent)."""
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.deactivate()

    # -- what a backend implements --------------------------------------------------------------
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"{type(self).__name__}({self.name!r}, {state})"
