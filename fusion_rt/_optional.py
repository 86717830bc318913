"""Lazy imports of optional heavy dependencies (torch, tensorrt, onnxruntime-gpu).

The runtime never imports them at module level; code that needs one calls `require`, which
fails with `MissingExtraError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fusion_rt.errors import MissingExtraError

__all__ = ["require", "EXTRA_FOR"]

#: Which `pip install "fusion-rt[extra]"` brings each optional module.
EXTRA_FOR: dict[str, str] = {
    "torch": "train",
    "safetensors": "train",
    "onnxscript": "train",  # the dynamo ONNX exporter
    "tensorrt": "tensorrt",
    "rosbags": "bags",
    "sympy": "quantize",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingExtraError telling which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, EXTRA_FOR.get(module.split(".")[0], "dev"), purpose) from exc
