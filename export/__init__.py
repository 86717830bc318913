"""Host-side export tooling (installed as `fusion_rt.export`; needs the [train] extra).

PyTorch encoders and fusion heads, training, ONNX export, FP16 and TensorRT builds. Importing this
package does not import torch; the modules that need it import it lazily: `metrics` is numpy
only, and the model names below load `fusion_rt.export.models` (and torch) on first use, failing
with the extra to install when torch is missing.
"""

from __future__ import annotations

import importlib

__all__ = ["create_model", "list_models", "FusionModel", "FusionModelConfig", "HeadOutput", "SCENE_LABELS"]

_LAZY = {name: "fusion_rt.export.models" for name in __all__}


def __getattr__(name: str):
    if name in _LAZY:
        from fusion_rt._optional import require

        require("torch", purpose=f"fusion_rt.export.{name}")
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusion_rt.export' has no attribute {name!r}")
