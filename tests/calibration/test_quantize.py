"""Every recipe writes a complete, valid package with the right Q/DQ types and a report."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from fusion_rt.calibration import REPORT_KEYS, REPORT_NAME, QuantizeConfig, quantize_package
from fusion_rt.calibration.quantize import _calibrate, _prepare, _quantize_int8
from fusion_rt.calibration.recipes import CalibrationMethod, get_recipe
from fusion_rt.errors import ConfigError
from fusion_rt.package import load_package
from fusion_rt.preprocess import PreprocessConfig

from ..conftest import copy_log

FAST = {"samples": 8, "latency_iterations": 3, "tolerance": 0.99, "speed_gate": False}


@pytest.fixture(scope="module")
def quantized(calib_package, calib_log, tmp_path_factory):
    """recipe name -> QuantizeResult, each recipe run once for the module."""
    out = tmp_path_factory.mktemp("quantized")
    return {r: quantize_package(calib_package, out / r, QuantizeConfig(recipe=r, **FAST), [calib_log])
            for r in ("ort-cpu-int8", "tensorrt-int8", "fp16")}


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _qdq(model: onnx.ModelProto) -> tuple[list, list]:
    inits = _initializers(model)
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    return [inits[n.input[2]] for n in q], [(n.input[0] in inits, inits[n.input[2]]) for n in dq if len(n.input) > 2]


@pytest.mark.parametrize("recipe", ["ort-cpu-int8", "tensorrt-int8", "fp16"])
def test_every_recipe_writes_a_valid_package(quantized, calib_package, recipe):
    result = quantized[recipe]
    package = load_package(result.package.root)  # the runtime's own validation
    assert package.precision == get_recipe(recipe).precision
    src = load_package(calib_package)
    for name, spec in package.graphs.items():
        assert spec.inputs == src.graphs[name].inputs and spec.outputs == src.graphs[name].outputs
    assert (package.root / "vocab.json").read_bytes() == (src.root / "vocab.json").read_bytes()
    pr = package.manifest["precision_recipe"]
    assert pr["name"] == recipe and pr["samples"] == 8 and pr["tolerance"] == 0.99
    assert pr["speed_gate"] is False  # what ran (FAST turns it off), not the recipe's default
    assert len(pr["calibration_logs"][0]["sha256"]) == 64 and "excluded_nodes" in pr
    for name in package.graphs:  # no opset import of a domain no node uses (ORT's pre-processing adds eight)
        model = onnx.load(str(package.graph_path(name)), load_external_data=False)
        used = {"" if n.domain == "ai.onnx" else n.domain for n in model.graph.node} | {""}
        assert {o.domain for o in model.opset_import} <= used, (name, list(model.opset_import))


def test_ort_cpu_int8_has_uint8_activations_and_symmetric_int8_weights(quantized):
    root = quantized["ort-cpu-int8"].package.root
    model = onnx.load(str(root / "camera_encoder.onnx"))
    activation_zps, dq = _qdq(model)
    assert activation_zps and all(z.dtype == np.uint8 for z in activation_zps)
    weights = [zp for is_init, zp in dq if is_init and zp.dtype == np.int8]
    assert weights and all(np.all(zp == 0) for zp in weights)


def test_tensorrt_int8_is_symmetric_int8_everywhere(quantized):
    root = quantized["tensorrt-int8"].package.root
    for path in root.glob("*.onnx"):
        activation_zps, dq = _qdq(onnx.load(str(path)))
        for zp in activation_zps + [zp for _, zp in dq]:
            assert zp.dtype == np.int8 and np.all(zp == 0), path.name
    assert _qdq(onnx.load(str(root / "head.onnx")))[0]


def test_tensorrt_int8_quantizes_inputs_of_weighted_layers_only(quantized):
    """TensorRT's explicit quantization: Q/DQ on the inputs of the layers it runs in int8, none on
    their outputs. With output quantization a value was rounded after a Conv and again after its
    Relu, the graphs' own outputs (logits, tokens) were clipped to int8, and Add as an op type put
    MatMul biases and constants behind int8 DequantizeLinear."""
    weighted = {"Conv", "ConvTranspose", "MatMul", "Gemm", "MaxPool", "AveragePool", "GlobalAveragePool"}
    for path in quantized["tensorrt-int8"].package.root.glob("*.onnx"):
        graph = onnx.load(str(path)).graph
        outputs = {o.name for o in graph.output}
        consumers: dict[str, set[str]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, set()).add(node.op_type)
        for node in graph.node:
            assert not (node.op_type == "DequantizeLinear" and set(node.output) & outputs), (path.name, node.name)
            if node.op_type == "DequantizeLinear":  # every DQ feeds a quantized layer
                assert consumers.get(node.output[0], set()) <= weighted, (path.name, node.name)


def test_fp16_has_float16_weights_and_float32_io(quantized):
    root = quantized["fp16"].package.root
    model = onnx.load(str(root / "head.onnx"))
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert all(v.type.tensor_type.elem_type != TensorProto.FLOAT16 for v in [*model.graph.input, *model.graph.output])
    report = quantized["fp16"].report
    assert report["fp16"]["final"]["ok"] and report["acceptance"]["fp16_parity_cosine_min"] >= 0.999


@pytest.mark.parametrize("recipe", ["ort-cpu-int8", "fp16"])
def test_report_has_the_documented_keys(quantized, recipe):
    root = quantized[recipe].package.root
    report = json.loads((root / REPORT_NAME).read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert set(report["metrics"]["fp32"]) == {"mean_scene_auc", "hazard_auc", "mean_scene_f1", "mean_bev_iou"}
    assert "calibration logs" in report["evaluation"]["source"]  # no --eval-log: the report says so
    assert set(report["divergence"]) == {"scene_logits", "bev_logits", "modality_share"}
    assert {"cosine", "max_abs", "mean_abs"} <= set(report["divergence"]["scene_logits"])
    assert report["sizes"]["ratio"] > 0 and report["latency"]["speedup_median"] > 0
    manifest = quantized[recipe].package.manifest
    assert manifest["quantization"]["report"] == REPORT_NAME
    # timings live in the report only: the manifest, and so the package's sha256, is the same run to run
    assert report["acceptance"]["speedup_median"] > 0
    assert not {"speedup_median", "speedup_at_least_2x"} & set(manifest["quantization"])
    assert manifest["quantization"]["size_ratio"] == report["acceptance"]["size_ratio"]


def test_entropy_and_percentile_change_the_scales(calib_package, calib_log, tmp_path):
    """The calibrator options take effect: each method gives different activation scales."""
    from fusion_rt.calibration.predict import PackageRunner
    from fusion_rt.calibration.reader import load_calibration_set

    package = load_package(calib_package)
    frames = load_calibration_set([calib_log], package, 16).frames
    feeds = PackageRunner(package).encoder_feed("radar", frames.inputs["radar"])
    prepared = tmp_path / "radar.prepared.onnx"
    _prepare(package.graph_path("radar"), prepared)
    recipe = get_recipe("ort-cpu-int8")
    scales = {}
    for method in CalibrationMethod:
        cache = tmp_path / f"{method.value}.json"
        _calibrate(prepared, feeds, method, False, cache, recipe.op_types)
        out = tmp_path / f"{method.value}.onnx"
        _quantize_int8(prepared, out, recipe, method, cache)
        model = onnx.load(str(out))
        inits = _initializers(model)
        scales[method] = np.array([float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"])
    assert scales[CalibrationMethod.MINMAX].size
    assert not np.allclose(scales[CalibrationMethod.ENTROPY], scales[CalibrationMethod.MINMAX])
    assert not np.allclose(scales[CalibrationMethod.PERCENTILE], scales[CalibrationMethod.MINMAX])


@pytest.mark.parametrize("method, widen, symmetric", [(CalibrationMethod.ENTROPY, 6.0, False),
                                                      (CalibrationMethod.PERCENTILE, 6.0, False),
                                                      (CalibrationMethod.PERCENTILE, 1e5, False),
                                                      (CalibrationMethod.PERCENTILE, 1e5, True)])
def test_histograms_keep_their_bins_when_a_later_chunk_widens_the_range(tmp_path, method, widen, symmetric):
    """The calibrator is fed chunk by chunk; a tensor whose range jumps in a later chunk (the head's
    attention scores once a modality is masked: ~10 against a -1e4 bias) must not multiply ORT's
    histogram bins (entropy: 1024 became ~10^6 and the search ran for hours; percentile, the
    default method: 2048 became 7e8 and numpy refused, 'Too many bins', on a head whose first 16
    calibration rows had no sensor masked). Every tensor keeps the configured bins and its threshold
    covers the wide chunk."""
    from onnx import helper
    from onnxruntime.quantization.calibrate import load_tensors_data

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("Add", ["y", "b"], ["z"], name="add")]
    weights = [numpy_helper.from_array(np.eye(8, dtype=np.float32), "w"),
               numpy_helper.from_array(np.ones(8, np.float32), "b")]
    graph = helper.make_graph(nodes, "widening", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 8])], weights)
    model = tmp_path / "widening.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(model))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    x[16:] *= widen  # the second chunk of 16 rows
    cache = tmp_path / f"{method.value}.json"
    _calibrate(model, {"x": x}, method, symmetric, cache, ["MatMul", "Add"], chunk=16)
    bins = method.calibrator_options(symmetric)["num_bins"]
    data = load_tensors_data(cache).data
    assert {"x", "y", "z"} <= set(data)
    for name in ("x", "y", "z"):
        if method is CalibrationMethod.ENTROPY:  # (ORT keeps no histogram in a percentile cache)
            assert len(data[name].hist) == bins, name
            assert float(data[name].bins[-1]) >= float(np.abs(x).max()) * (0.99 if name != "z" else 0.5), name
    lo, hi = data["y"].range_value
    assert 0 < float(hi) <= float(np.abs(x).max())  # a real threshold, not a collapsed range
    assert float(lo) < 0


def test_weight_only_int8_keeps_fp32_compute_with_int8_weights(tmp_path):
    """The speed gate's fallback: int8 weight matrices behind DequantizeLinear, FP32 activations."""
    from fusion_rt.backends.onnxruntime import OrtConfig, SessionFromOnnx, is_weight_only_quantized
    from fusion_rt.calibration.quantize import weight_only_int8
    from fusion_rt.demo import shipped_package

    src = shipped_package() / "head.onnx"
    dst = tmp_path / "head.onnx"
    converted = weight_only_int8(src, dst)
    model = onnx.load(str(dst))
    assert converted >= 10 and converted == sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert is_weight_only_quantized(dst) and not is_weight_only_quantized(src)
    assert dst.stat().st_size < 0.45 * src.stat().st_size
    # same outputs up to int8 weight rounding, through the runtime's own session loader
    rng = np.random.default_rng(0)
    fp32, wo = SessionFromOnnx(src, OrtConfig(threads=1))(), SessionFromOnnx(dst, OrtConfig(threads=1))()
    feed = {}
    for i in fp32.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in i.shape]
        feed[i.name] = (rng.random(shape) < 0.8) if i.type == "tensor(bool)" else rng.standard_normal(shape).astype(
            np.float32)
    feed["present"][0, 0] = True
    for a, b in zip(fp32.run(None, feed), wo.run(None, feed), strict=True):
        cosine = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cosine > 0.999, cosine
        assert not np.array_equal(a, b)  # the weights really changed


def test_weight_only_int8_stores_conv_kernels_as_int8_and_onnxruntime_folds_them(tmp_path):
    """Convolutions hold most of an encoder's weights: a camera encoder the speed gate keeps at FP32
    compute (a CPU without VNNI) is still stored at ~0.3x, and ONNX Runtime folds every
    DequantizeLinear back into an FP32 kernel when the session is created."""
    import onnxruntime as ort

    from fusion_rt.backends.onnxruntime import apply_weight_only_config
    from fusion_rt.calibration.quantize import weight_only_int8
    from fusion_rt.demo import shipped_package

    src = shipped_package() / "camera_encoder.onnx"
    kernels = {n.input[1] for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"}
    sizes = {i.name: int(np.prod(i.dims)) for i in onnx.load(str(src)).graph.initializer if i.name in kernels}
    gemm_only = weight_only_int8(src, tmp_path / "gemm.onnx", ops=("MatMul", "Gemm"))
    converted = weight_only_int8(src, tmp_path / "camera.onnx")
    assert converted - gemm_only == sum(size >= 1024 for size in sizes.values()) > 0
    assert (tmp_path / "camera.onnx").stat().st_size < 0.35 * src.stat().st_size
    assert (tmp_path / "gemm.onnx").stat().st_size > 0.8 * src.stat().st_size  # MatMul/Gemm alone: 0.9x
    options = ort.SessionOptions()
    apply_weight_only_config(options, tmp_path / "camera.onnx")
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    session = ort.InferenceSession(str(tmp_path / "camera.onnx"), options, providers=["CPUExecutionProvider"])
    assert not any(n.op_type == "DequantizeLinear" for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node)
    fp32 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    (x,) = fp32.get_inputs()
    image = np.random.default_rng(0).standard_normal([1, *x.shape[1:]]).astype(np.float32)
    for a, b in zip(fp32.run(None, {x.name: image}), session.run(None, {x.name: image}), strict=True):
        cosine = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert 0.999 < cosine and not np.array_equal(a, b), cosine


def test_speed_gate_benchmark_cycles_through_every_row(monkeypatch):
    """benchmark_graph feeds row i mod rows at batch 1, so the gate sees full and masked inputs alike."""
    import onnxruntime as ort

    from fusion_rt.calibration.report import benchmark_graph
    from fusion_rt.demo import shipped_package

    fed: list[int] = []
    real_run = ort.InferenceSession.run

    def run(self, outputs, feed, *args, **kw):
        (ids,) = feed.values()
        assert ids.shape == (1, 16)  # batch 1
        fed.append(int(ids[0, 0]))
        return real_run(self, outputs, feed, *args, **kw)

    monkeypatch.setattr(ort.InferenceSession, "run", run)
    src = shipped_package() / "text_encoder.onnx"
    ids = np.zeros((3, 16), dtype=np.int64)
    ids[:, 0] = [1, 2, 3]
    result = benchmark_graph(src, src, {"text_ids": ids}, threads=1, iterations=6, warmup=0)
    assert result["rows"] == 3 and result["fp32_median_ms"] > 0 and result["median_ms"] > 0
    assert result["speedup"] == pytest.approx(result["fp32_median_ms"] / result["median_ms"], rel=0.01)
    assert fed == [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]  # both precisions, every row in turn


def test_ort_cpu_int8_keeps_the_input_convolutions_fp32(tmp_path):
    """Recipe.fp32_input_conv_channels: the camera stem (3 channels) and radar's first conv (2) stay
    FP32, every other convolution is quantized, and the graph input is not quantized at all."""
    from fusion_rt.calibration.quantize import input_convs
    from fusion_rt.demo import shipped_package

    recipe = get_recipe("ort-cpu-int8")
    assert recipe.fp32_input_conv_channels >= 5 and get_recipe("tensorrt-int8").fp32_input_conv_channels == 0
    package = load_package(shipped_package())
    prepared = {}
    for name in ("camera", "radar", "head"):
        prepared[name] = tmp_path / f"{name}.prepared.onnx"
        _prepare(package.graph_path(name), prepared[name])
    stems = {name: input_convs(path, recipe.fp32_input_conv_channels) for name, path in prepared.items()}
    assert len(stems["camera"]) == 1 and len(stems["radar"]) == 1 and stems["head"] == []  # head convs read tensors
    assert input_convs(prepared["camera"], 2) == [] and input_convs(prepared["camera"], 0) == []

    (spec,) = package.graphs["camera"].inputs
    rng = np.random.default_rng(0)
    feeds = {spec.name: rng.standard_normal((4, *spec.shape[1:])).astype(np.float32)}
    cache = tmp_path / "camera.json"
    _calibrate(prepared["camera"], feeds, CalibrationMethod.MINMAX, False, cache, recipe.op_types)
    out = tmp_path / "camera.onnx"
    _quantize_int8(prepared["camera"], out, recipe, CalibrationMethod.MINMAX, cache, stems["camera"])
    graph = onnx.load(str(out)).graph
    (stem,) = [n for n in graph.node if n.name == stems["camera"][0]]
    assert stem.op_type == "Conv" and stem.input[0] == spec.name  # FP32, straight off the input
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == spec.name for n in graph.node)
    convs = [n for n in graph.node if n.op_type == "Conv" and n is not stem]
    weight_dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert convs and all(c.input[1] in weight_dq for c in convs)  # the rest run INT8 (QDQ weights)


def test_int8_recipes_keep_the_attention_score_adds_fp32(tmp_path):
    """Recipe.fp32_softmax_inputs: the Adds that put the key-mask bias (-1e4) on the attention scores
    stay FP32. Calibrated on rows with a masked modality, a quantized score Add gets a range of ~1e4
    and rounds every real score to zero; kept FP32, the head's outputs follow FP32 closely."""
    import onnxruntime as ort

    from fusion_rt.calibration.quantize import softmax_input_adds
    from fusion_rt.demo import shipped_package

    # tensorrt-int8 quantizes no Add at all (inputs of weighted layers only); ort-cpu-int8 does
    assert "Add" not in get_recipe("tensorrt-int8").op_types
    recipe = get_recipe("ort-cpu-int8")
    assert recipe.fp32_softmax_inputs and "Add" in recipe.op_types
    package = load_package(shipped_package())
    prepared = tmp_path / "head.prepared.onnx"
    _prepare(package.graph_path("head"), prepared)
    adds = softmax_input_adds(prepared)
    graph = onnx.load(str(prepared)).graph
    softmax_inputs = {n.input[0] for n in graph.node if n.op_type == "Softmax"}
    assert adds and all(n.output[0] in softmax_inputs for n in graph.node if n.name in adds)

    rng = np.random.default_rng(0)
    feeds = {}
    for spec in package.graphs["head"].inputs:
        shape = (8, *spec.shape[1:])
        feeds[spec.name] = (rng.standard_normal(shape).astype(np.float32) if spec.dtype == "float32"
                            else np.ones(shape, dtype=bool))
    feeds["present"][4:, 0] = False  # half the rows without a camera: masked keys in every cross-attention
    cache = tmp_path / "head.json"
    _calibrate(prepared, feeds, CalibrationMethod.MINMAX, True, cache, recipe.op_types)
    ref = ort.InferenceSession(str(package.graph_path("head")), providers=["CPUExecutionProvider"]).run(None, feeds)
    cosine = {}
    for name, exclude in (("kept", adds), ("quantized", [])):
        out = tmp_path / f"head-{name}.onnx"
        _quantize_int8(prepared, out, recipe, CalibrationMethod.MINMAX, cache, exclude)
        model = onnx.load(str(out)).graph
        dq_outputs = {n.output[0] for n in model.node if n.op_type == "DequantizeLinear"}
        score_adds = [n for n in model.node if n.name in adds]
        fed_by_dq = [bool(set(n.input) & dq_outputs) for n in score_adds]
        assert score_adds and fed_by_dq == [not exclude] * len(score_adds)  # FP32 inputs when kept
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
        a, b = ref[0].ravel(), got[0].ravel()  # scene logits
        cosine[name] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    # measured with tensorrt-int8 (when it quantized Adds): kept 0.9996, quantized -0.017 (the
    # masked-key bias swamps the int8 scale)
    assert cosine["kept"] > 0.99 and cosine["quantized"] < 0.9


def test_encoders_calibrate_only_on_frames_that_hold_their_modality(calib_package, calib_log):
    """A frame without radar carries a zero placeholder: it must not set the radar encoder's ranges,
    and the head sees that radar as masked, as the runtime would."""
    from fusion_rt.calibration.predict import PackageRunner
    from fusion_rt.calibration.quantize import _calibration_feeds
    from fusion_rt.calibration.reader import load_calibration_set

    package = load_package(calib_package)
    calib = load_calibration_set([calib_log], package, 8)
    calib.frames.present[::2, 1] = False  # half the frames without radar
    calib.frames.present[:, 2] = False  # no map at all
    feeds = _calibration_feeds(PackageRunner(package), calib, masked_fraction=0.25, seed=0)
    (radar,) = feeds["radar"].values()
    assert len(radar) == 4 and "map" not in feeds and len(next(iter(feeds["camera"].values()))) == 8
    present = feeds["head"]["present"]
    assert len(present) == 8 + 2 and not present[:, 2].any()  # 2 masked copies, map never present
    assert not present[:8:2, 1].any() and present[1:8:2, 1].all()


def test_a_camera_only_bag_quantizes_the_camera_and_keeps_the_rest_fp32(calib_package, calib_log, camera_only_bag,
                                                                        tmp_path):
    """Calibrating on a vehicle bag with no radar, map or text: those encoders keep FP32 compute
    (said in the report and manifest), the camera encoder and the head are quantized, and the
    metric is measured on a labelled --eval-log."""
    result = quantize_package(calib_package, tmp_path / "int8", QuantizeConfig(recipe="ort-cpu-int8", **FAST),
                              [camera_only_bag], eval_logs=[calib_log])
    steps = result.report["mixed_precision"]
    assert set(steps["uncalibrated_graphs"]) == {"radar", "map", "text"}
    assert steps["int8_graphs"] == ["camera", "head"]
    for name in steps["uncalibrated_graphs"]:  # listed as weight-only exactly when it stores int8 weights
        graph = onnx.load(str(result.package.graph_path(name))).graph
        assert (name in steps["weight_only_graphs"]) == any(n.op_type == "DequantizeLinear" for n in graph.node)
    recipe = result.package.manifest["precision_recipe"]
    assert set(recipe["uncalibrated_graphs"]) == {"radar", "map", "text"}
    assert recipe["calibration_logs"][0]["file"] == camera_only_bag.name
    for name in ("radar", "map"):
        graph = onnx.load(str(result.package.graph_path(name))).graph
        assert not any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in graph.node)  # FP32 compute
    camera = onnx.load(str(result.package.graph_path("camera"))).graph
    assert any(n.op_type == "QuantizeLinear" for n in camera.node)
    assert result.report["evaluation"]["frames"] > 0
    # without --eval-log the unlabelled bag would be the evaluation log: refused before calibrating
    with pytest.raises(ConfigError, match=r"no ground truth to measure .*unless --eval-log names a labelled one"):
        quantize_package(calib_package, tmp_path / "unlabelled", QuantizeConfig(recipe="ort-cpu-int8", **FAST),
                         [camera_only_bag])
    assert not (tmp_path / "unlabelled").exists()


def test_fp16_keeps_an_overflowing_unnamed_node_fp32(calib_log, tmp_path):
    """A node whose FP32 output leaves the float16 range stays FP32 even when the graph leaves its nodes
    unnamed (onnx.helper's default): the converter blocks nodes by name, so the graphs are named first."""
    from onnx import helper

    from fusion_rt.package import replace_graph

    from ._fixtures import make_calibration_package

    root = make_calibration_package(tmp_path / "pkg")
    shape, tokens, width = (3, 36, 64), 9, 8
    flat, scale = int(np.prod(shape)), 1e7
    weights = np.random.default_rng(0).normal(size=(flat, tokens * width)) / flat * scale
    inits = [numpy_helper.from_array(np.array([0, flat], np.int64), "flat_shape"),
             numpy_helper.from_array(weights.astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1.0 / scale, np.float32), "inv"),
             numpy_helper.from_array(np.array([0, tokens, width], np.int64), "tok_shape")]
    nodes = [helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["proj"]),  # |proj| ~ 1e5: inf in float16
             helper.make_node("Mul", ["proj", "inv"], ["small"]),
             helper.make_node("Reshape", ["small", "tok_shape"], ["tokens"])]
    graph = helper.make_graph(nodes, "camera_encoder",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *shape])],
                              [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", tokens, width])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10),
              str(root / "camera_encoder.onnx"))
    replace_graph(root, "camera")
    result = quantize_package(root, tmp_path / "fp16", QuantizeConfig(recipe="fp16", **FAST), [calib_log])
    assert result.report["fp16"]["overflow_nodes"]["camera"] == ["MatMul_1"]
    camera = onnx.load(str(result.package.graph_path("camera")))
    assert _initializers(camera)["w"].dtype == np.float32  # the MatMul kept its FP32 weights


def test_a_package_with_graphs_in_a_subfolder_quantizes(calib_package, calib_log, tmp_path):
    import shutil

    from fusion_rt.package import describe_graph

    root = tmp_path / "pkg"
    shutil.copytree(calib_package, root)
    (root / "graphs").mkdir()
    shutil.move(root / "map_encoder.onnx", root / "graphs" / "map_encoder.onnx")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["graphs"]["map"] = describe_graph(root, "graphs/map_encoder.onnx", "map", "encoder", "map").to_dict()
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = quantize_package(root, tmp_path / "fp16", QuantizeConfig(recipe="fp16", **FAST), [calib_log])
    assert result.package.graph_path("map").parent.name == "graphs"


def test_an_unmeasured_metric_is_never_a_pass(quantized):
    """Evaluation frames on which the FP32 metric is undefined (this short drive lacks a second class
    for every label) leave the tolerance unmeasured (None), not passed; a metric the new precision
    loses is a failure."""
    from fusion_rt.calibration.quantize import _within

    acceptance = quantized["fp16"].report["acceptance"]
    assert acceptance["fp32"] is None and acceptance["within_tolerance"] is None
    assert quantized["fp16"].within_tolerance is None
    assert _within({"measurable": True, "relative_drop": None}, 0.005) is False
    assert _within({"measurable": True, "relative_drop": 0.004}, 0.005) is True
    assert _within({"measurable": True, "relative_drop": 0.006}, 0.005) is False


def test_non_finite_outputs_fail_the_verdict(calib_package, calib_log, tmp_path, monkeypatch):
    """An output holding inf on the evaluation frames (an FP16 overflow the parity frames missed, say)
    fails the package, measured or not, and the worst cosine is NaN: Python's min skipped the NaN
    cosine of bev_logits (not the first output), here and in the fp16 parity attempts."""
    from fusion_rt.calibration import quantize

    class Overflowing(quantize.PackageRunner):
        def run(self, frames, batch_size=32, present=None):
            out = super().run(frames, batch_size, present)
            if any(path != self.package.graph_path(name) for name, path in self.files.items()):  # new precision
                out["bev_logits"][0, 0, 0, 0] = np.inf
            return out

    monkeypatch.setattr(quantize, "PackageRunner", Overflowing)
    result = quantize_package(calib_package, tmp_path / "fp16", QuantizeConfig(recipe="fp16", **FAST), [calib_log])
    report = result.report
    assert list(report["divergence"]).index("bev_logits") > 0
    acceptance = report["acceptance"]
    assert acceptance["outputs_finite"] is False and acceptance["within_tolerance"] is False
    assert result.within_tolerance is False  # was None: the FP32 metric is unmeasured on this drive
    assert math.isnan(acceptance["worst_output_cosine"])
    assert all(math.isnan(a["worst_cosine"]) and not a["ok"] for a in report["fp16"]["attempts"])
    assert set(report["metrics"]["new"].values()) == {None}
    assert any("bev_logits hold NaN/inf" in note for note in report["notes"])
    assert load_package(result.package.root).manifest["quantization"]["outputs_finite"] is False


def test_calibration_and_evaluation_see_the_sensors_the_runtime_fuses(calib_package, calib_log, tmp_path):
    # (1) A radar that publishes only detections is binned onto the package's radar grid by replay;
    # calibration and evaluation read only radar tensors, so the radar encoder stayed uncalibrated and
    # the metric was measured with radar masked on every frame. (2) The package's max_age_ns decides
    # presence in the runtime; calibration used LogDataset's defaults (radar 100 ms, not the manifest's).
    from fusion_rt.calibration.reader import load_calibration_set
    from fusion_rt.export.data import read_logs
    from fusion_rt.logs.bags import open_log
    from fusion_rt.logs.topics import resolve_topics
    from fusion_rt.package import write_manifest

    with open_log(calib_log) as log:
        tensor_topic = resolve_topics(log.topics(), ("radar",)).topics["radar"]
    detections_only = copy_log(calib_log, tmp_path / "detections.mcap", lambda item: item.topic != tensor_topic)
    package = load_package(calib_package)
    default = load_calibration_set([calib_log], package, 16).frames.present[:, 1]
    frames = load_calibration_set([detections_only], package, 16).frames
    assert default.sum() >= 15 and (frames.present[:, 1] == default).all()  # from its detections
    assert np.abs(frames.inputs["radar"]).sum() > 0
    split, _ = read_logs([detections_only], PreprocessConfig.from_dict(package.manifest["preprocess"]),
                         bev_classes=package.bev_classes, bev_shape=package.rig.bev.shape, rig_radar=package.rig.radar)
    assert split.present[1:, 1].all()

    strict = tmp_path / "strict"
    shutil.copytree(calib_package, strict)
    manifest = json.loads((strict / "manifest.json").read_text())
    manifest["max_age_ns"]["radar"] = 1  # only a radar scan stamped with the frame counts
    manifest.pop("format_version")
    write_manifest(strict, manifest)
    ages = load_calibration_set([calib_log], load_package(strict), 16).frames.present[:, 1]
    assert ages.sum() < default.sum()


def _variant(src, dst, change):
    """A copy of the package at `src` whose graphs `change(name, model)` edits in place, re-described."""
    from fusion_rt.package import describe_graph, write_manifest

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for name, spec in manifest["graphs"].items():
        model = onnx.load(str(dst / spec["file"]))
        change(name, model)
        onnx.save(model, str(dst / spec["file"]))
        manifest["graphs"][name] = describe_graph(dst, spec["file"], name, spec["role"], spec.get("modality")).to_dict()
    manifest.pop("format_version")
    write_manifest(dst, manifest)
    return dst


def _fixed_batch(_name, model):
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1


def _tokens_named_features(name, model):
    if name != "head":
        for node in model.graph.node:
            node.output[:] = ["features" if o == "tokens" else o for o in node.output]
        model.graph.output[0].name = "features"


def _no_modality_share(name, model):
    if name == "head":
        keep = [o for o in model.graph.output if o.name != "modality_share"]
        del model.graph.output[:]
        model.graph.output.extend(keep)


def _present_float64(name, model):
    if name == "head":
        present = next(i for i in model.graph.input if i.name == "present")
        for node in model.graph.node:
            node.input[:] = ["present_in" if i == "present" else i for i in node.input]
        cast = onnx.helper.make_node("Cast", ["present"], ["present_in"], to=present.type.tensor_type.elem_type)
        model.graph.node.insert(0, cast)
        present.type.tensor_type.elem_type = TensorProto.DOUBLE


@pytest.mark.parametrize("change", [_fixed_batch, _tokens_named_features, _no_modality_share, _present_float64])
def test_packages_the_runtime_runs_quantize_too(calib_package, calib_log, tmp_path, change):
    # Graphs exported without a dynamic batch axis, an encoder whose single output is not named
    # 'tokens', a head without modality_share, a head taking `present` as float64: the runtime and
    # replay take them, quantize crashed with ONNX Runtime tracebacks (batches of 32; run(["tokens"]);
    # outputs["modality_share"]) or a KeyError 'float64'.
    from fusion_rt.runtime import FusionRuntime

    package = load_package(_variant(calib_package, tmp_path / "variant", change))
    FusionRuntime(package).close()
    for recipe in ("ort-cpu-int8", "fp16"):
        result = quantize_package(package.root, tmp_path / recipe, QuantizeConfig(recipe=recipe, **FAST), [calib_log])
        assert result.report["evaluation"]["frames"] > 0
        FusionRuntime(load_package(tmp_path / recipe)).close()


def test_evaluation_holds_at_most_eval_frames(calib_package, calib_log):
    # Evaluating on the calibration logs (the default) read every frame of them into memory: ~4 GB for
    # a 10-minute drive. Now at most `eval_frames`, evenly spaced, and the report says which.
    from fusion_rt.calibration.predict import PackageRunner
    from fusion_rt.calibration.quantize import _evaluation

    runner = PackageRunner(load_package(calib_package))
    whole = _evaluation(runner, [str(calib_log)], lambda _m: None)
    capped = _evaluation(runner, [str(calib_log)], lambda _m: None, max_frames=10)
    assert whole.stride == 1 and len(whole.frames) == whole.available > 30
    assert capped.stride == -(-whole.available // 10) and 0 < len(capped.frames) <= 10
    assert capped.split.stamp_ns.tolist() == whole.split.stamp_ns[::capped.stride].tolist()
    assert whole.frames.inputs["camera"].dtype == np.float16  # the split's own array, not a float32 copy
    with pytest.raises(ConfigError, match="eval_frames"):
        QuantizeConfig(recipe="fp16", eval_frames=0)


def test_the_evaluation_stride_runs_over_labelled_frames(calib_package, calib_log, tmp_path):
    # The stride counted every camera frame and kept only labelled ones: a log labelled on every other
    # frame, evaluated with an even stride, had no labelled frame left ("no usable samples").
    from fusion_rt.calibration.predict import PackageRunner
    from fusion_rt.calibration.quantize import _evaluation
    from fusion_rt.messages import GroundTruth

    truths = []

    def every_other_label(item) -> bool:
        if isinstance(item.message, GroundTruth):
            truths.append(item)
            return len(truths) % 2 == 1
        return True

    half = copy_log(calib_log, tmp_path / "half_labelled.mcap", every_other_label)
    runner = PackageRunner(load_package(calib_package))
    whole = _evaluation(runner, [str(half)], lambda _m: None)
    capped = _evaluation(runner, [str(half)], lambda _m: None, max_frames=len(whole.frames) // 2)
    assert whole.available == len(whole.frames) and capped.stride == 2
    assert capped.split.stamp_ns.tolist() == whole.split.stamp_ns[::2].tolist()


@pytest.mark.parametrize("speedups, runs, kept", [([0.5], 1, 0.5), ([1.6], 1, 1.6), ([1.08, 0.79, 0.83], 3, 0.83),
                                                  ([1.2, 1.3, 1.0], 3, 1.2), ([0.9], 1, 0.9)])
def test_speed_gate_times_a_near_even_graph_three_times(monkeypatch, speedups, runs, kept):
    """The text encoder measured 1.08x in one quantize and 0.79x in the next, and the package's graphs
    changed with it: a speedup near 1x is measured twice more and the median run decides."""
    from fusion_rt.calibration import quantize

    results = iter(speedups)
    monkeypatch.setattr(quantize, "benchmark_graph", lambda *a, **k: {"speedup": next(results), "rows": 1})
    measured = quantize._gate_speed(None, None, {}, 1)
    assert measured["speedup"] == kept and measured["speedups"] == speedups[:runs]


def test_int8_compute_is_kept_only_where_it_buys_time():
    """The head measured 0.96x alone and was kept INT8 (the bar was 0.95), then ran 10-50% slower
    than its FP32 version inside the runtime: INT8 compute stays only where it is clearly faster."""
    from fusion_rt.calibration.quantize import _SPEED_GATE_BAND, int8_pays

    assert not int8_pays(0.956) and not int8_pays(1.05) and int8_pays(1.3) and int8_pays(2.5)
    assert _SPEED_GATE_BAND[0] < 1.1 < _SPEED_GATE_BAND[1]  # a verdict near the bar is measured three times


def test_a_cpu_without_int8_dot_products_keeps_every_graph_fp32_and_says_why(calib_package, calib_log, tmp_path,
                                                                            monkeypatch):
    """On an AVX2-only CPU (AMD EPYC, Zen 2) no graph ran faster in INT8 and the package came out 0.90x
    the size with no word on why: every graph's weights (Conv kernels too) are now stored as int8,
    and the progress, the report's notes and its host entry name the CPU and what it lacks."""
    import fusion_rt.calibration.quantize as quantize

    monkeypatch.setattr(quantize, "host_cpu", lambda: {"cpu_model": "AMD EPYC", "cpu_id": "cpu family 23",
                                                       "machine": "x86_64", "int8_dot_product": None})
    monkeypatch.setattr(quantize, "_gate_speed", lambda *a, **k: {"speedup": 0.9, "speedups": [0.9]})
    said: list[str] = []
    config = QuantizeConfig(recipe="ort-cpu-int8", **{**FAST, "speed_gate": True})
    result = quantize_package(calib_package, tmp_path / "int8", config, [calib_log], progress=said.append)
    steps = result.report["mixed_precision"]
    assert steps["int8_graphs"] == [] and sorted(steps["fp32_graphs"]) == sorted(result.package.graphs)
    why = "this CPU (AMD EPYC) has no int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, ARM dot product)"
    assert sum(why in line for line in said) == 1
    assert any(why in note for note in result.report["notes"])
    assert result.report["host"]["int8_dot_product"] is None
    for name in result.package.graphs:  # FP32 compute
        graph = onnx.load(str(result.package.graph_path(name))).graph
        assert not any(n.op_type == "QuantizeLinear" for n in graph.node), name
    assert result.report["acceptance"]["size_ratio"] <= 0.35  # the weights are int8 all the same
    # --no-speed-gate there: INT8 compute that buys no time on this CPU is said too
    said.clear()
    config = QuantizeConfig(recipe="ort-cpu-int8", **FAST, fp32_graphs=("head",))
    forced = quantize_package(calib_package, tmp_path / "forced", config, [calib_log], progress=said.append)
    assert "camera" in forced.report["mixed_precision"]["int8_graphs"]
    (line,) = [line for line in said if why in line]
    assert "in INT8 buy no time here; the package is for a CPU that has them" in line and line in forced.report["notes"]


def test_tensorrt_int8_keeps_fp32_weights_in_graphs_kept_at_fp32_compute(calib_package, calib_log, tmp_path):
    """TensorRT's weight-only quantization is INT4: an int8 weight behind a DequantizeLinear with no
    quantized input is not what its explicit quantization takes. ort-cpu-int8 stores them (ONNX
    Runtime folds them at load); tensorrt-int8 leaves a pinned graph plain FP32."""
    config = QuantizeConfig(recipe="tensorrt-int8", **FAST, fp32_graphs=("head",))
    result = quantize_package(calib_package, tmp_path / "trt", config, [calib_log])
    head = onnx.load(str(result.package.graph_path("head"))).graph
    assert not any(n.op_type in ("DequantizeLinear", "QuantizeLinear") for n in head.node)
    assert "head" not in result.report["mixed_precision"]["weight_only_graphs"]
    assert result.package.manifest["precision_recipe"]["weight_only_ops"] == []


def test_uncovered_strata_lists_what_evaluation_has_and_calibration_lacks():
    from fusion_rt.calibration.quantize import uncovered_strata
    from fusion_rt.calibration.reader import NO_TRUTH

    calib = [("fog", "highway"), ("night", "highway")]
    conditions, scenes = ["fog", "rain", "day", "night", "rain"], ["highway", "urban", "highway", "highway", "highway"]
    assert uncovered_strata(calib, conditions, scenes) == {
        "conditions": {"day": 1, "rain": 2}, "scene_types": {"urban": 1}, "evaluation_frames": 3,
        "unlabelled_calibration_frames": 0}
    assert uncovered_strata(calib, ["fog", "night"], ["highway", "highway"]) is None
    # an unlabelled calibration frame may hold what is missing, but the labelled ones' gaps still show
    # (it used to silence the check: a day log with a stripped one passed a fog/night evaluation)
    some = uncovered_strata([*calib, NO_TRUTH], conditions, scenes)
    assert some["conditions"] == {"day": 1, "rain": 2} and some["unlabelled_calibration_frames"] == 1
    assert uncovered_strata([NO_TRUTH, NO_TRUTH], conditions, scenes) is None  # nothing to tell coverage by
    assert uncovered_strata(calib, ["", "fog"], ["", "highway"]) is None  # an evaluation frame without truth


def test_coverage_warning_says_what_the_gap_means_for_the_package_made():
    from fusion_rt.calibration.quantize import coverage_warning

    gap = {"conditions": {"night": 329}, "scene_types": {"highway": 485}, "evaluation_frames": 600,
           "unlabelled_calibration_frames": 0}
    int8 = coverage_warning(gap, 600, get_recipe("ort-cpu-int8"), {"int8_graphs": ["camera", "radar"]})
    assert int8.startswith("no labelled calibration frame has condition night (329 frames), scene type highway "
                           "(485 frames) of the 600 evaluation frames: the INT8 ranges of camera, radar were set")
    # every graph kept at FP32 compute (the speed gate on a CPU without int8 dot products): no range was
    # set here, but the same logs would clip where INT8 runs, and a user there should hear of it
    none = coverage_warning(gap, 600, get_recipe("ort-cpu-int8"), {"int8_graphs": []})
    assert "nothing clips in this package (every graph keeps FP32 compute), but where INT8 runs" in none
    fp16 = coverage_warning(gap, 600, get_recipe("fp16"), None)
    assert "FP16 overflow check saw none of their frames" in fp16 and "INT8" not in fp16
    maybe = coverage_warning({**gap, "unlabelled_calibration_frames": 15}, 600, get_recipe("fp16"), None)
    assert "; 15 calibration frames have no ground truth and may:" in maybe
    assert coverage_warning(None, 600, get_recipe("fp16"), None) is None


def test_calibration_without_the_evaluation_conditions_is_warned_about(calib_package, tmp_path_factory, tmp_path):
    """The demo calibrated on a 12 s drive of fog and night on a highway: the INT8 encoders then
    scored an unseen drive of every condition at scene cosine 0.993 and moved its AUC by 2.9%, with
    nothing said. quantize now names what calibration lacks, and the report records it."""
    from tests.conftest import record_test_drive

    fog = record_test_drive(tmp_path_factory, "fog", 1.0, seed=11, conditions="fog")
    rain = record_test_drive(tmp_path_factory, "rain", 1.0, seed=12, conditions="rain")
    said: list[str] = []
    result = quantize_package(calib_package, tmp_path / "int8", QuantizeConfig(recipe="ort-cpu-int8", **FAST), [fog],
                              eval_logs=[rain], progress=said.append)
    uncovered = result.report["calibration"]["uncovered"]
    frames = result.report["evaluation"]["frames"]
    assert uncovered["conditions"] == {"rain": frames} and uncovered["evaluation_frames"] == frames
    (line,) = [line for line in said if line.startswith("warning: no labelled calibration frame has")]
    assert f"condition rain ({frames} frames)" in line and "INT8 ranges of camera" in line
    assert any(note.startswith("calibration coverage: no labelled") for note in result.report["notes"])
    assert not any("also a --calib log" in line for line in said)
    covered = quantize_package(calib_package, tmp_path / "int8b", QuantizeConfig(recipe="ort-cpu-int8", **FAST),
                               [fog, rain], eval_logs=[rain], progress=said.append)
    assert covered.report["calibration"]["uncovered"] is None
    # scored on a log it calibrated on: said, since the report's "--eval-log" source reads as unseen data
    assert any(line.startswith(f"warning: --eval-log {rain} is also a --calib log") for line in said)


def test_named_fp32_graphs_make_the_package_the_same_every_run(calib_package, calib_log, tmp_path):
    """--no-speed-gate --fp32-graphs head,text: the graphs are chosen by name, not by the host's load,
    and the manifest holds no timing, so two runs of the same command give the same package sha256."""
    config = QuantizeConfig(recipe="ort-cpu-int8", **FAST, fp32_graphs=("head", "text", "head"))
    runs = [quantize_package(calib_package, tmp_path / str(i), config, [calib_log]) for i in range(2)]
    recipe = runs[0].package.manifest["precision_recipe"]
    assert sorted(recipe["pinned_fp32_graphs"]) == ["head", "text"] and {"head", "text"} <= set(recipe["fp32_graphs"])
    assert "camera" not in recipe["fp32_graphs"] and "head" in recipe["weight_only_graphs"]
    assert runs[0].package.sha256 == runs[1].package.sha256
    for name in runs[0].package.graphs:
        a, b = (r.package.graph_path(name).read_bytes() for r in runs)
        assert a == b, name
    with pytest.raises(ConfigError, match=r"fp32_graphs \['lidar'\] are not graphs of .*\['camera', "):
        quantize_package(calib_package, tmp_path / "x", QuantizeConfig(recipe="ort-cpu-int8", fp32_graphs=("lidar",)),
                         [calib_log])
    with pytest.raises(ConfigError, match="fp32_graphs applies to the int8 recipes; fp16"):
        QuantizeConfig(recipe="fp16", fp32_graphs=("head",))


def test_truth_on_another_bev_grid_is_scored_without_bev(calib_package, calib_log, tmp_path):
    """A labelled log whose BEV truth is on another grid than the package's rig.bev: quantize refused
    it (LogError) where replay scores it without BEV IoU; now quantize does as replay, and says so."""
    import dataclasses

    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.messages import GroundTruth

    coarse = tmp_path / "coarse.mcap"
    with LogReader(calib_log) as reader, LogWriter(coarse) as writer:
        for item in reader.messages():
            message = item.message
            if isinstance(message, GroundTruth):
                message = dataclasses.replace(message, bev=np.ascontiguousarray(message.bev[:, ::2, ::2]))
            writer.write(message, item.topic, log_time_ns=item.log_time_ns)
    said: list[str] = []
    result = quantize_package(calib_package, tmp_path / "out", QuantizeConfig(recipe="fp16", **FAST), [calib_log],
                              eval_logs=[coarse], progress=said.append)
    warning = next(m for m in said if "another BEV grid" in m)
    assert "rig.bev (64x64 (x [0, 51.2] m" in warning and "not scored" in warning
    fine = quantize_package(calib_package, tmp_path / "fine", QuantizeConfig(recipe="fp16", **FAST), [calib_log],
                            eval_logs=[calib_log]).report["metrics"]["fp32"]
    metrics = result.report["metrics"]["fp32"]
    assert metrics["mean_bev_iou"] is None and fine["mean_bev_iou"] is not None
    assert {k: v for k, v in metrics.items() if k != "mean_bev_iou"} == {k: v for k, v in fine.items()
                                                                          if k != "mean_bev_iou"}


def test_camera_frames_the_runtime_rejects_for_their_size_are_left_out(calib_package, calib_log, tmp_path):
    """The runtime refuses images of another size than its rig camera (or that size halved 2, 4, 8
    times); quantize calibrated and evaluated on them anyway and passed its acceptance on frames the
    deployed package never runs. They are left out (counted), and a log of nothing else is refused."""
    from fusion_rt.errors import LogError
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    wide = tmp_path / "wide.mcap"
    record_drive(DriveConfig(seconds=1.0, seed=3, camera_size=(800, 600)), wide)
    config = QuantizeConfig(recipe="fp16", **FAST)
    with pytest.raises(LogError, match=r"none of the \d+ selected camera frames .* decoded \(the runtime would reject "
                                       r"them too: camera image size 800x600 differs from the rig's camera 640x360\)"):
        quantize_package(calib_package, tmp_path / "a", config, [wide])
    with pytest.raises(LogError, match=r"no usable samples .*: \d+ camera frames rejected \(camera image size 800x600"):
        quantize_package(calib_package, tmp_path / "b", config, [calib_log], eval_logs=[wide])
    said: list[str] = []
    mixed = QuantizeConfig(recipe="fp16", **{**FAST, "samples": 64})
    result = quantize_package(calib_package, tmp_path / "c", mixed, [calib_log, wide], progress=said.append)
    assert result.report["calibration"]["skipped"]["camera_rejected"] > 0
    assert any("evaluation camera frames left out: the runtime rejects them" in m for m in said), said


def test_truth_on_a_shifted_grid_of_the_same_shape_is_not_scored_for_bev(calib_package, calib_log, tmp_path):
    """The package's rig.bev covers 20-71.2 m ahead, the log's truth (its fusion_rt.rig metadata)
    0-51.2 m, both 64x64: quantize scored BEV IoU cell by cell across them, where replay does not."""
    shifted = tmp_path / "shifted"
    shutil.copytree(calib_package, shifted)
    manifest = json.loads((shifted / "manifest.json").read_text())
    manifest["rig"]["bev"].update(x_min_m=20.0, x_max_m=71.2)
    manifest["outputs"].pop("bev_grid", None)
    (shifted / "manifest.json").write_text(json.dumps(manifest))
    said: list[str] = []
    result = quantize_package(shifted, tmp_path / "out", QuantizeConfig(recipe="fp16", **FAST), [calib_log],
                              progress=said.append)
    assert result.report["metrics"]["fp32"]["mean_bev_iou"] is None
    assert any("another BEV grid" in m and "x [20, 71.2] m" in m for m in said), said
