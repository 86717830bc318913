"""Host-side export tooling (installed as `fusion_rt.export`; needs the [train] extra).

PyTorch encoders and fusion heads, training, ONNX export, FP16 and TensorRT builds. Importing this
package does not import torch; the modules that need it import it lazily.
"""

__all__: list[str] = []
