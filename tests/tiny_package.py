"""A tiny but real model package built with onnx.helper (no torch): graphs ONNX Runtime can run.

Each encoder averages its input into `tokens` [batch, N, D] through a real MatMul; the head pools
tokens and maps them to scene logits, BEV logits and a modality share. Good for testing the
package contract and the runtime's plumbing, not for accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fusion_rt.package import describe_graph, write_manifest
from fusion_rt.preprocess import PreprocessConfig, Vocabulary
from fusion_rt.rig import CLASS_NAMES, Rig

D = 8
SCENE_LABELS = ("car", "truck", "pedestrian", "cyclist", "hazard")
INPUTS = {  # modality -> (input name, dtype, shape without batch, tokens)
    "camera": ("image", TensorProto.FLOAT, (3, 36, 64), 9),
    "radar": ("radar", TensorProto.FLOAT, (2, 128, 64), 8),
    "map": ("map", TensorProto.FLOAT, (5, 64, 64), 4),
    "text": ("text_ids", TensorProto.INT64, (16,), 1),
}


def _encoder(modality: str, seed: int, tokens_name: str = "tokens", shape: tuple[int, ...] | None = None
             ) -> onnx.ModelProto:
    name, dtype, default_shape, tokens = INPUTS[modality]
    shape = shape or default_shape
    rng = np.random.default_rng(seed)
    flat = int(np.prod(shape))
    nodes, inits = [], []
    src = name
    if dtype == TensorProto.INT64:
        nodes.append(helper.make_node("Cast", [name], ["as_float"], to=TensorProto.FLOAT))
        src = "as_float"
    inits.append(numpy_helper.from_array(np.array([0, flat], dtype=np.int64), "flat_shape"))
    inits.append(numpy_helper.from_array((rng.normal(size=(flat, tokens * D)) / flat).astype(np.float32), "w"))
    inits.append(numpy_helper.from_array(np.array([0, tokens, D], dtype=np.int64), "tok_shape"))
    nodes += [helper.make_node("Reshape", [src, "flat_shape"], ["flat"]),
              helper.make_node("MatMul", ["flat", "w"], ["proj"]),
              helper.make_node("Reshape", ["proj", "tok_shape"], [tokens_name])]
    graph = helper.make_graph(nodes, f"{modality}_encoder",
                              [helper.make_tensor_value_info(name, dtype, ["batch", *shape])],
                              [helper.make_tensor_value_info(tokens_name, TensorProto.FLOAT, ["batch", tokens, D])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _conv_encoder(modality: str, seed: int, width: int = 64, layers: int = 4) -> onnx.ModelProto:
    """A convolutional encoder with the same I/O as `_encoder` and realistic compute (benchmarks).

    3x3 convolutions at full input resolution, a 1x1 projection to tokens x D channels, a global
    mean over space: [B, C, H, W] -> [B, tokens, D]. At the camera input (36x64) with width 64 and
    4 layers that is ~0.7 GFLOP, so the camera encoder dominates a frame as in a real model.
    """
    name, dtype, shape, tokens = INPUTS[modality]
    assert dtype == TensorProto.FLOAT and len(shape) == 3
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    src, channels = name, shape[0]
    for i in range(layers):
        w = (rng.normal(size=(width, channels, 3, 3)) * np.sqrt(2.0 / (channels * 9))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [src, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        src, channels = f"r{i}", width
    inits.append(numpy_helper.from_array((rng.normal(size=(tokens * D, channels, 1, 1)) * 0.1).astype(np.float32),
                                         "proj"))
    inits.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "hw"))
    inits.append(numpy_helper.from_array(np.array([0, tokens, D], dtype=np.int64), "tok_shape"))
    nodes += [helper.make_node("Conv", [src, "proj"], ["p"]),
              helper.make_node("ReduceMean", ["p", "hw"], ["pooled"], keepdims=0),  # [B, tokens * D]
              helper.make_node("Reshape", ["pooled", "tok_shape"], ["tokens"])]  # [B, tokens, D]
    graph = helper.make_graph(nodes, f"{modality}_encoder",
                              [helper.make_tensor_value_info(name, dtype, ["batch", *shape])],
                              [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", tokens, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _head(modalities: tuple[str, ...], seed: int, present_dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    m = len(modalities)
    nodes, inits, inputs = [], [], []
    pres = "present"
    if present_dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["present"], ["present_f"], to=TensorProto.FLOAT))
        pres = "present_f"
    pooled = []
    for i, mod in enumerate(modalities):
        tokens = INPUTS[mod][3]
        inputs.append(helper.make_tensor_value_info(f"{mod}_tokens", TensorProto.FLOAT, ["batch", tokens, D]))
        nodes.append(helper.make_node("ReduceMean", [f"{mod}_tokens", "axis1"], [f"{mod}_pool"], keepdims=0))
        inits.append(numpy_helper.from_array(np.array([i], dtype=np.int64), f"idx{i}"))
        nodes.append(helper.make_node("Gather", [pres, f"idx{i}"], [f"{mod}_p"], axis=1))
        nodes.append(helper.make_node("Mul", [f"{mod}_pool", f"{mod}_p"], [f"{mod}_masked"]))
        pooled.append(f"{mod}_masked")
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    inputs.append(helper.make_tensor_value_info("present", present_dtype, ["batch", m]))
    nodes.append(helper.make_node("Concat", pooled, ["feat"], axis=1))
    rows, cols = Rig.default().bev.shape
    n_cls = len(CLASS_NAMES)
    inits.append(numpy_helper.from_array(rng.normal(size=(m * D, len(SCENE_LABELS))).astype(np.float32), "ws"))
    inits.append(numpy_helper.from_array(rng.normal(size=(m * D, n_cls * rows * cols)).astype(np.float32) * 0.1, "wb"))
    inits.append(numpy_helper.from_array(np.array([0, n_cls, rows, cols], dtype=np.int64), "bev_shape"))
    inits.append(numpy_helper.from_array(np.array([0, 1, m], dtype=np.int64), "share_shape"))
    inits.append(numpy_helper.from_array(np.ones((1, len(SCENE_LABELS) + 1, 1), dtype=np.float32), "share_rows"))
    nodes += [helper.make_node("MatMul", ["feat", "ws"], ["scene_logits"]),
              helper.make_node("MatMul", ["feat", "wb"], ["bev_flat"]),
              helper.make_node("Reshape", ["bev_flat", "bev_shape"], ["bev_logits"]),
              helper.make_node("ReduceSum", [pres, "axis1"], ["n_present"], keepdims=1),
              helper.make_node("Div", [pres, "n_present"], ["share2d"]),
              helper.make_node("Reshape", ["share2d", "share_shape"], ["share3d"]),
              helper.make_node("Mul", ["share3d", "share_rows"], ["modality_share"])]
    outputs = [helper.make_tensor_value_info("scene_logits", TensorProto.FLOAT, ["batch", len(SCENE_LABELS)]),
               helper.make_tensor_value_info("bev_logits", TensorProto.FLOAT, ["batch", n_cls, rows, cols]),
               helper.make_tensor_value_info("modality_share", TensorProto.FLOAT,
                                             ["batch", len(SCENE_LABELS) + 1, m])]
    graph = helper.make_graph(nodes, "head", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def make_tiny_package(root: Path, modalities: tuple[str, ...] = ("camera", "radar", "map", "text"),
                      heavy: bool = False, tokens_name: str = "tokens",
                      present_dtype: int = TensorProto.FLOAT, radar_bins: tuple[int, int] | None = None) -> Path:
    """Write a complete, valid package under `root` and return it.

    `heavy` gives the camera (and, lighter, the radar) encoder real convolutions, so benchmarks see
    a compute profile like a real model's (camera encoder ~80% of a frame) instead of microseconds.
    `tokens_name` names the encoders' output, `present_dtype` the head's presence input's type (ONNX),
    `radar_bins` (range, azimuth) gives the rig a radar of other bins than the default 128x64.
    """
    root.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for i, mod in enumerate(modalities):
        if heavy and mod in ("camera", "radar"):
            model = _conv_encoder(mod, i, width=64 if mod == "camera" else 8, layers=4 if mod == "camera" else 2)
        else:
            shape = (INPUTS["radar"][2][0], *radar_bins) if mod == "radar" and radar_bins else None
            model = _encoder(mod, i, tokens_name, shape)
        onnx.save(model, str(root / f"{mod}_encoder.onnx"))
        graphs[mod] = describe_graph(root, f"{mod}_encoder.onnx", mod, "encoder", mod).to_dict()
    onnx.save(_head(modalities, 99, present_dtype), str(root / "head.onnx"))
    graphs["head"] = describe_graph(root, "head.onnx", "head", "head").to_dict()
    Vocabulary(["school", "zone", "rain", "construction", "pedestrians", "crossing"],
               max_tokens=INPUTS["text"][2][0]).save(root / "vocab.json")
    rig = Rig.default()
    if radar_bins:
        rig = dataclasses.replace(rig, radar=dataclasses.replace(rig.radar, num_range_bins=radar_bins[0],
                                                                 num_azimuth_bins=radar_bins[1]))
    _, height, width = INPUTS["camera"][2]
    # The real preprocessing the runtime applies: a small camera input; radar and map grids from the rig.
    preprocess = PreprocessConfig.from_rig(rig, camera_height=height, camera_width=width,
                                           text_max_tokens=INPUTS["text"][2][0])
    write_manifest(root, {
        "name": "tiny", "precision": "fp32", "rig": rig.to_dict(), "modalities": list(modalities),
        "preprocess": preprocess.to_dict(), "graphs": graphs,
        "outputs": {"scene_labels": list(SCENE_LABELS), "bev_classes": list(CLASS_NAMES)},
        "max_age_ns": {m: age for m, age in (("radar", 100_000_000), ("map", 2_000_000_000),
                                             ("text", 2_000_000_000)) if m in modalities},
        "latency_budget_ms": {"end_to_end": 50.0}, "vocabulary": "vocab.json",
        "provenance": {"source": "tests/tiny_package.py"},
    })
    return root
