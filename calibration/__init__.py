"""Host-side INT8 calibration and quantization (installed as `fusion_rt.calibration`).

Calibration data drawn from logs, QDQ quantization through onnxruntime.quantization, per-layer
sensitivity and mixed precision.
"""

__all__: list[str] = []
