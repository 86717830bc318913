"""Lazy imports of optional heavy dependencies (torch, tensorrt, onnxruntime-gpu).

The runtime never imports them at module level; code that needs one calls `require`, which
fails with `MissingExtraError` naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from fusion_rt.errors import MissingExtraError

__all__ = ["require", "require_available", "EXTRA_FOR"]

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
