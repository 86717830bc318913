"""Lazy imports of optional heavy dependencies (torch, tensorrt, onnxruntime-gpu).

The runtime never imports them at module level; code that needs one calls `require`, which
fails with `MissingExtraError` naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from types import ModuleType

from fusion_rt.errors import MissingExtraError

__all__ = ["require", "require_available", "require_version", "EXTRA_FOR"]

#: Which `pip install "fusion-rt[extra]"` brings each optional module.
EXTRA_FOR: dict[str, str] = {
    "torch": "train",
    "safetensors": "train",
    "onnxscript": "train",  # the dynamo ONNX exporter
    "tensorrt": "tensorrt",
    "rosbags": "bags",
    "sympy": "quantize",
}


def require_available(module: str, purpose: str = "") -> None:
    """Raise MissingExtraError unless `module` is installed, without importing it (the caller may
    have to set up the environment first: torch reads OMP_WAIT_POLICY once, when it loads)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses it (an import hook, a broken parent package)
        found = False
    if not found:
        raise MissingExtraError(module, EXTRA_FOR.get(module.split(".")[0], "dev"), purpose)


def require(module: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingExtraError telling which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, EXTRA_FOR.get(module.split(".")[0], "dev"), purpose) from exc


def _version(text: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: "1.23.2" -> (1, 23, 2); "1.32.0.dev1" -> (1, 32, 0)."""
    parts = []
    for piece in str(text).split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


def require_version(module: str, minimum: str, extra: str, purpose: str = "", note: str = "") -> ModuleType:
    """Import `module` (as `require`) and raise MissingExtraError, naming the version found and the
    one needed, when its `__version__` is older than `minimum`."""
    mod = require(module, purpose)
    found = str(getattr(mod, "__version__", "0"))
    if _version(found) < _version(minimum):
        raise MissingExtraError(module, extra, purpose, found=found, minimum=minimum, note=note)
    return mod
