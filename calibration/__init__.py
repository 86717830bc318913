"""Host-side precision recipes (installed as `fusion_rt.calibration`): DESIGN.md section 5.

Calibration data drawn from logs (stratified over conditions and scene types), QDQ INT8 through
onnxruntime.quantization with explicit calibrator options, FP16 with a parity check, per-node
sensitivity and automatic mixed precision, and a report of what each recipe costs (task metric,
divergence, size, latency). `fusion-rt quantize` is the command line over `quantize_package`.
"""

from fusion_rt.calibration.predict import Frames, PackageRunner
from fusion_rt.calibration.quantize import (
    QuantizationError,
    QuantizeResult,
    check_quantize_requirements,
    quantize_package,
    rank_node_sensitivity,
)
from fusion_rt.calibration.reader import (
    ArrayCalibrationReader,
    CalibrationSet,
    load_calibration_set,
    stratified_indices,
)
from fusion_rt.calibration.recipes import RECIPES, CalibrationMethod, QuantizeConfig, Recipe, get_recipe
from fusion_rt.calibration.report import REPORT_KEYS, REPORT_NAME

__all__ = [
    "RECIPES",
    "Recipe",
    "get_recipe",
    "CalibrationMethod",
    "QuantizeConfig",
    "quantize_package",
    "check_quantize_requirements",
    "QuantizeResult",
    "QuantizationError",
    "rank_node_sensitivity",
    "ArrayCalibrationReader",
    "CalibrationSet",
    "load_calibration_set",
    "stratified_indices",
    "Frames",
    "PackageRunner",
    "REPORT_NAME",
    "REPORT_KEYS",
]
