"""Recipes and the quantization config: lookup and validation."""

from __future__ import annotations

import pytest

from fusion_rt.calibration.recipes import RECIPES, CalibrationMethod, QuantizeConfig, get_recipe
from fusion_rt.errors import ConfigError


def test_recipes_fix_the_documented_types():
    cpu, trt = get_recipe("ort-cpu-int8"), get_recipe("tensorrt-int8")
    assert (cpu.activation_type, cpu.weight_type, cpu.per_channel, cpu.activation_symmetric) == ("uint8", "int8", True,
                                                                                                False)
    assert (trt.activation_type, trt.weight_type, trt.activation_symmetric, trt.weight_symmetric) == ("int8", "int8",
                                                                                                     True, True)
    assert get_recipe("fp16").precision == "fp16"
    assert set(RECIPES) == {"fp16", "ort-cpu-int8", "tensorrt-int8"}


def test_unknown_recipe_and_method_name_the_choices():
    with pytest.raises(ConfigError, match="ort-cpu-int8"):
        get_recipe("int4")
    with pytest.raises(ConfigError, match="percentile"):
        CalibrationMethod.parse("kl")


def test_entropy_options_are_explicit():
    # ORT's entropy defaults (128/128 bins) leave one threshold, i.e. MinMax: ours must not.
    options = CalibrationMethod.ENTROPY.calibrator_options(symmetric=False)
    assert options["num_bins"] > options["num_quantized_bins"]


@pytest.mark.parametrize("kw", [{"samples": 0}, {"tolerance": -0.1}, {"tolerance": 1.5}, {"method": "kl"},
                                {"recipe": "int4"}])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ConfigError):
        QuantizeConfig(**{"recipe": "fp16", **kw})
