"""Precision recipes (DESIGN.md section 5): one typed recipe per target, not one switch.

A `Recipe` says how a package's graphs are converted: INT8 QDQ with given activation/weight
types and symmetry, or FP16 with ops kept in FP32. `QuantizeConfig` holds one quantization job's
settings (recipe, calibration method, sample count, tolerance...). `CalibrationMethod` maps our
method names onto onnxruntime's calibrators *and* the calibrator options we pass explicitly:
`quantize_static` forwards no bin settings to the entropy calibrator, whose defaults (128 bins,
128 quantized bins) leave one candidate threshold and so reproduce MinMax (shared/BASELINE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from fusion_rt.errors import ConfigError

__all__ = ["CalibrationMethod", "Recipe", "RECIPES", "get_recipe", "QuantizeConfig", "FP16_SENSITIVE_OPS"]


class CalibrationMethod(str, Enum):
    """How activation ranges are chosen from the calibration data."""

    MINMAX = "minmax"  # observed min/max: no clipping, sensitive to outliers
    ENTROPY = "entropy"  # KL-divergence threshold over a histogram (TensorRT's classic method)
    PERCENTILE = "percentile"  # clip at a percentile of |x|: ignores rare outliers

    @classmethod
    def parse(cls, name: str) -> CalibrationMethod:
        try:
            return cls(name)
        except ValueError:
            raise ConfigError(f"unknown calibration method {name!r}; choose from "
                              f"{', '.join(m.value for m in cls)}") from None

    def ort(self):
        """The matching `onnxruntime.quantization.CalibrationMethod`."""
        from onnxruntime.quantization import CalibrationMethod as OrtMethod

        return {CalibrationMethod.MINMAX: OrtMethod.MinMax, CalibrationMethod.ENTROPY: OrtMethod.Entropy,
                CalibrationMethod.PERCENTILE: OrtMethod.Percentile}[self]

    def calibrator_options(self, symmetric: bool) -> dict:
        """Options for `onnxruntime.quantization.create_calibrator`, every one given explicitly."""
        if self is CalibrationMethod.MINMAX:
            return {"symmetric": symmetric, "moving_average": False}
        if self is CalibrationMethod.ENTROPY:
            # 1024 histogram bins searched down to 128 quantized bins: ~450 candidate thresholds
            # (the ORT defaults 128/128 give exactly one, i.e. MinMax). TensorRT uses 2048/128;
            # 1024 halves the O(bins^2) search with no visible change on our graphs.
            return {"symmetric": symmetric, "num_bins": 1024, "num_quantized_bins": 128}
        # 99.99th percentile of |x| (BASELINE.md: slightly better than MinMax on the prototype).
        return {"symmetric": symmetric, "num_bins": 2048, "percentile": 99.99}


#: Op types that may lose accuracy or overflow in FP16: normalization statistics, softmax and
#: attention accumulation, exponentials and powers. The fp16 recipe keeps them in FP32 when the
#: parity check on real frames asks for it.
FP16_SENSITIVE_OPS: tuple[str, ...] = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Exp", "Pow",
                                       "Sqrt", "Reciprocal", "Div", "Erf")


@dataclass(frozen=True)
class Recipe:
    """How to convert a package's graphs for one target."""

    name: str
    precision: str  # manifest "precision" of the result: "int8" or "fp16"
    target: str  # who consumes it, for the manifest and report
    activation_type: str | None = None  # "uint8" | "int8" (INT8 recipes)
    weight_type: str | None = None  # "int8"
    per_channel: bool = True  # per-output-channel weight scales: needed for accuracy of small CNNs
    activation_symmetric: bool = False  # zero point 0 for activations (TensorRT needs it)
    weight_symmetric: bool = True
    quantize_bias: bool = True  # int32 bias DQ (ORT); TensorRT fuses float bias itself
    # Op types given Q/DQ. Weighted ops and what chains them (residual Add, Relu, pooling): on
    # this model quantizing everything (LayerNorm, Softmax, Where, Transpose...) cost 14% scene AUC
    # and made the attention head 1.5x slower; weighted ops + Add/Relu were the fastest encoders.
    op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Relu", "MaxPool", "AveragePool",
                                 "GlobalAveragePool")
    # Keep a graph at FP32 compute when its INT8 version is measurably slower at batch 1 on this host (DESIGN.md 5:
    # a layer that costs time stays in higher precision). Only meaningful when the host runs the target.
    speed_gate: bool = False
    # Convolutions that read a graph input with at most this many channels (the image stem, the
    # radar and map grids' first layer) stay FP32 (0: none). With 2-5 input channels the u8 GEMM has
    # K = 18-45 and runs slower than FP32 (ONNX Runtime, AVX-512 VNNI here: the camera stem 3x
    # slower), and quantizing the raw input costs a full pass plus an NHWC transpose; measured per
    # graph: camera 2.41x -> 2.65x, radar 1.46x -> 1.68x, map 1.11x -> 1.29x over FP32.
    fp32_input_conv_channels: int = 0
    # Adds that feed a Softmax (attention scores + the additive key-mask bias) stay FP32. A masked
    # key scores -1e4 against real scores of ~10: one int8 scale cannot hold both, and with the
    # masked rows of the calibration set MinMax and percentile ranges reach 1e4, so every real score
    # rounds to zero (tensorrt-int8 on the shipped head: scene AUC -46% with MinMax until mixed
    # precision found these two Adds). TensorRT keeps attention softmax inputs in higher precision too.
    fp32_softmax_inputs: bool = True
    # Q/DQ on the outputs of the quantized op types too. TensorRT's explicit quantization wants Q/DQ
    # on the inputs of the layers it runs in int8 and none on their outputs (NVIDIA's Model
    # Optimizer excludes output quantization for every op type): a Q/DQ after a Conv and another
    # after its Relu rounded each value twice, and a graph's own outputs (scene/BEV logits, tokens)
    # were clipped to int8 ranges with nothing to gain (each graph is an engine of its own).
    quantize_outputs: bool = True
    # Graphs kept at FP32 compute (speed gate, --fp32-graphs, uncalibrated) store the constant
    # weights of these ops as int8 behind a DequantizeLinear, which ONNX Runtime folds back to FP32
    # at load: the package stays ~0.3x the size whichever graphs keep INT8 compute. On a CPU whose
    # INT8 kernels are no faster (AVX2 without VNNI: the camera encoder 0.96x) the gate keeps every
    # graph FP32, and with MatMul/Gemm weights only the package was 0.90x the size (convolutions
    # hold most of the weights). Empty: FP32 compute graphs keep FP32 weights.
    weight_only_ops: tuple[str, ...] = ("MatMul", "Gemm", "Conv")

    @property
    def is_int8(self) -> bool:
        return self.precision == "int8"

    def quantize_static_kwargs(self) -> dict:
        """Arguments of `onnxruntime.quantization.quantize_static` this recipe fixes."""
        from onnxruntime.quantization import QuantFormat, QuantType

        assert self.is_int8, self.name
        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        return {
            "quant_format": QuantFormat.QDQ,
            "op_types_to_quantize": list(self.op_types),
            "per_channel": self.per_channel,
            "reduce_range": False,  # VNNI-class CPUs (Zen 4 here) and GPUs accumulate without saturation
            "activation_type": types[self.activation_type],
            "weight_type": types[self.weight_type],
            "extra_options": {
                "ActivationSymmetric": self.activation_symmetric,
                "WeightSymmetric": self.weight_symmetric,
                "QuantizeBias": self.quantize_bias,
                **({} if self.quantize_outputs else {"OpTypesToExcludeOutputQuantization": list(self.op_types)}),
            },
        }

    def to_dict(self) -> dict:
        return {"name": self.name, "precision": self.precision, "target": self.target,
                "activation_type": self.activation_type, "weight_type": self.weight_type,
                "per_channel": self.per_channel, "activation_symmetric": self.activation_symmetric,
                "weight_symmetric": self.weight_symmetric, "quantize_bias": self.quantize_bias,
                "op_types": list(self.op_types) if self.is_int8 else None, "speed_gate": self.speed_gate,
                "fp32_input_conv_channels": self.fp32_input_conv_channels,
                "fp32_softmax_inputs": self.fp32_softmax_inputs, "quantize_outputs": self.quantize_outputs,
                "weight_only_ops": list(self.weight_only_ops) if self.is_int8 else None}


RECIPES: dict[str, Recipe] = {
    "ort-cpu-int8": Recipe(
        name="ort-cpu-int8", precision="int8", target="ONNX Runtime CPU (x86 VNNI / ARM dot-product)",
        activation_type="uint8", weight_type="int8", activation_symmetric=False, weight_symmetric=True,
        speed_gate=True, fp32_input_conv_channels=8),
    "tensorrt-int8": Recipe(
        name="tensorrt-int8", precision="int8", target="TensorRT 10/11 explicit quantization (Q/DQ)",
        activation_type="int8", weight_type="int8", activation_symmetric=True, weight_symmetric=True,
        # TensorRT's Q/DQ placement: on the inputs of the weighted layers (and pooling), none on
        # outputs; TensorRT fuses bias, activation and residual add into the int8 kernels itself.
        # No Add: as an op type it quantized every Add's inputs, MatMul biases and the GELU's +1
        # constant included (18 of the head's 26), where Model Optimizer quantizes residual inputs only.
        # TensorRT takes int8 weights behind a DequantizeLinear only for layers whose input is
        # quantized too: its weight-only quantization is INT4 ("TensorRT quantizes activations and
        # weights for INT8 ... Weight-only quantization is supported for INT4", Working with
        # Quantized Types, 10.11), so a graph kept at FP32 compute keeps FP32 weights.
        quantize_bias=False, quantize_outputs=False, weight_only_ops=(),
        op_types=("Conv", "ConvTranspose", "MatMul", "Gemm", "MaxPool", "AveragePool", "GlobalAveragePool")),
    "fp16": Recipe(name="fp16", precision="fp16", target="GPU FP16 (TensorRT, CUDA EP); slower than FP32 on CPU"),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; ConfigError listing the choices otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown precision recipe {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


@dataclass(frozen=True)
class QuantizeConfig:
    """One quantization job (what `fusion-rt quantize` is asked to do)."""

    recipe: str
    method: CalibrationMethod = CalibrationMethod.PERCENTILE  # BASELINE: percentile beat minmax
    samples: int = 128  # calibration frames; ranges settle well before this on our small graphs
    tolerance: float = 0.005  # allowed relative drop of the primary metric (mean scene AUC)
    max_rounds: int = 4  # mixed-precision rounds before giving up (each excludes more nodes)
    masked_fraction: float = 0.25  # share of head calibration frames with some modalities masked
    parity_cosine: float = 0.999  # fp16 acceptance bar on every output
    latency_iterations: int = 60  # timed batch-1 runs per precision (after warm-up)
    threads: int = 2  # ORT intra-op threads for evaluation and latency
    seed: int = 0
    sensitivity_frames: int = 32  # frames used to rank nodes for mixed precision
    # Evaluation frames at most, evenly spaced over the evaluation logs (every frame of a short log;
    # a 10-minute 20 Hz drive would otherwise hold ~12000 preprocessed frames, ~4 GB, in memory).
    eval_frames: int = 2000
    speed_gate: bool | None = None  # None: the recipe's default (keep graphs that INT8 slows down in FP32)
    # int8 recipes: graphs kept at FP32 compute (int8-stored weights) by choice, not by the speed
    # gate's timing; with the gate off or on, the same command then gives the same graphs on any load.
    fp32_graphs: tuple[str, ...] = ()
    extra_fp16_block: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        get_recipe(self.recipe)
        if not isinstance(self.method, CalibrationMethod):
            object.__setattr__(self, "method", CalibrationMethod.parse(self.method))
        for name, lo in (("samples", 1), ("max_rounds", 0), ("latency_iterations", 1), ("threads", 1),
                         ("sensitivity_frames", 1), ("eval_frames", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not (0.0 <= self.tolerance < 1.0):
            raise ConfigError(f"tolerance is a relative drop in [0, 1), got {self.tolerance!r} (0.005 = 0.5%)")
        if not (0.0 <= self.masked_fraction < 1.0):
            raise ConfigError(f"masked_fraction must be in [0, 1), got {self.masked_fraction!r}")
        if not (0.0 < self.parity_cosine <= 1.0):
            raise ConfigError(f"parity_cosine must be in (0, 1], got {self.parity_cosine!r}")
        graphs = self.fp32_graphs
        if isinstance(graphs, str) or not all(isinstance(g, str) and g for g in graphs):
            raise ConfigError(f"fp32_graphs must be graph names, got {graphs!r}")
        object.__setattr__(self, "fp32_graphs", tuple(dict.fromkeys(graphs)))
        if self.fp32_graphs and not get_recipe(self.recipe).is_int8:
            raise ConfigError(f"fp32_graphs applies to the int8 recipes; {self.recipe} keeps FP32 only what overflows "
                              "or breaks parity")
