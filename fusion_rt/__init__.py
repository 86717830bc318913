"""fusion-rt: deploy multimodal sensor-fusion models (camera, radar, map, text) on edge hardware.

The runtime package: numpy, OpenCV and ONNX Runtime only. It never imports torch; TensorRT and
onnxruntime-gpu are optional and imported lazily where used.
"""

from fusion_rt.errors import (
    ConfigError,
    CorruptRecordError,
    DecodeError,
    FusionRTError,
    LogError,
    MissingExtraError,
    NotALogError,
    PackageError,
    TruncatedLogError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "FusionRTError",
    "ConfigError",
    "MissingExtraError",
    "LogError",
    "NotALogError",
    "TruncatedLogError",
    "CorruptRecordError",
    "DecodeError",
    "PackageError",
]
