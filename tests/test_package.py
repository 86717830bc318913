"""The model package contract: a valid package loads; a malformed manifest is refused at load (damaged
or unsafe graphs and paths: tests/reliability/test_package_faults.py, R8)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fusion_rt.errors import (
    GraphMismatchError,
    IntegrityError,
    ManifestError,
    PackageError,
)
from fusion_rt.package import load_package, sha256_file

from .tiny_package import make_tiny_package


@pytest.fixture()
def pkg(tmp_path):
    return make_tiny_package(tmp_path / "pkg")


def _edit_manifest(root, edit):
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_valid_package_loads_and_runs(pkg):
    package = load_package(pkg)
    assert package.modalities == ("camera", "radar", "map", "text")
    assert package.head.inputs[-1].name == "present"
    assert package.rig.bev.shape == (64, 64)
    assert len(package.sha256) == 64
    session = ort.InferenceSession(str(package.graph_path("camera")), providers=["CPUExecutionProvider"])
    (tokens,) = session.run(None, {"image": np.zeros((2, 3, 36, 64), np.float32)})
    assert tokens.shape == (2, 9, 8)


def test_low_opset_refused(pkg):
    model = onnx.load(str(pkg / "text_encoder.onnx"))
    model.opset_import[0].version = 13
    onnx.save(model, str(pkg / "text_encoder.onnx"))
    _edit_manifest(pkg, lambda m: m["graphs"]["text"].update(sha256=sha256_file(pkg / "text_encoder.onnx")))
    with pytest.raises(GraphMismatchError, match="opset 13"):
        load_package(pkg)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: m.pop("graphs"), "missing field 'graphs'"),
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.update(modalities=["camera", "lidar"]), "lidar"),
        (lambda m: m["graphs"].pop("head"), "'head'"),
        (lambda m: m["max_age_ns"].update(radar=-5), "max_age_ns.radar"),
        (lambda m: m.update(rig={"camera": {}}), "manifest.rig"),
        (lambda m: m.update(modalities=["camera", "radar", "radar"]), "each named once"),
        (lambda m: m["graphs"]["text"].pop("opset"), "missing field 'opset'"),
        (lambda m: m["graphs"]["text"].update(opset=5), r"opset: expected an integer >= 17, got 5"),
        (lambda m: m["latency_budget_ms"].update(end_to_end=float("inf")), "positive finite"),
        (lambda m: m.pop("vocabulary_sha256"), "missing field 'vocabulary_sha256'"),
        # preprocessing is built at load, so a field of the wrong JSON type is a manifest error, not a crash
        (lambda m: m["preprocess"].update(radar_shape=128), "manifest.preprocess: radar_shape must be a list"),
        (lambda m: m["preprocess"].update(map_classes=5), "manifest.preprocess: map_classes"),
        (lambda m: m["preprocess"].update(bogus_field=1), "bogus_field"),
        (lambda m: m["preprocess"]["map_grid"].update(x_min_m=-1e308, x_max_m=1e308), "manifest.preprocess.*bev grid"),
        (lambda m: m["preprocess"]["map_grid"].update(x_max_m=float("nan")), "manifest.preprocess.*finite"),
        # names that do not line up with the head's axes would label its outputs wrongly
        (lambda m: m.update(modalities=m["modalities"][::-1]), "do not match the head's token inputs"),
        (lambda m: m["outputs"].update(bev_classes=["car", "truck"]), r"bev_classes names 2 .*4 channels"),
        (lambda m: m["outputs"].update(scene_labels=m["outputs"]["scene_labels"][:3]), r"scene_labels names 3"),
        # they key metrics and label outputs: a duplicate scored one class with another's plane
        (lambda m: m["outputs"].update(bev_classes=["car", "car", "pedestrian", "cyclist"]), r"\['car'\] named more"),
        (lambda m: m["outputs"].update(scene_labels=[0, 1, 2, 3, 4]), "every entry must be a non-empty string, got 0"),
        (lambda m: m["rig"]["camera"]["pose"].update(x=10**400), "pose x must be a finite number"),
        # the runtime applies sigmoid: another activation would be silently ignored
        (lambda m: m["outputs"].update(scene_activation="softmax"), r"outputs.scene_activation: 'softmax'"),
        (lambda m: m["outputs"].update(bev_activation="identity"), r"outputs.bev_activation: 'identity'"),
        # bev_grid is redundant with rig.bev; when given it must say the same
        (lambda m: m["outputs"].update(bev_grid={**m["rig"]["bev"], "x_min_m": 20.0, "x_max_m": 71.2}),
         r"outputs.bev_grid .* differs from manifest.rig.bev 64x64"),
        (lambda m: m["outputs"].update(bev_grid={"cell": 1}), "manifest.outputs.bev_grid"),
        # a budget or max age under a name the runtime does not use would never be applied
        (lambda m: m["latency_budget_ms"].update({"end-to-end": 0.001}), r"latency_budget_ms.end-to-end: .*stages"),
        (lambda m: m["latency_budget_ms"].update(camera_encoder_ms=1.0), r"latency_budget_ms.camera_encoder_ms"),
        (lambda m: m["max_age_ns"].update(lidar=5), r"max_age_ns.lidar: 'lidar' is not a modality"),
        (lambda m: m.pop("vocabulary"), r"manifest.vocabulary: the text modality needs a vocabulary"),
        # detections are binned on the rig's grid: another radar_shape refused every radar frame at run time
        (lambda m: m["graphs"]["radar"]["outputs"].append({**m["graphs"]["radar"]["outputs"][0], "name": "extra"})
         or m["graphs"]["radar"]["outputs"][0].update(name="features"),
         r"graphs.radar.outputs: an encoder needs an output named 'tokens' or a single output; it has \['features', "
         r"'extra'\]"),
        (lambda m: m["preprocess"].update(radar_shape=[64, 64]),
         r"preprocess.radar_shape \[64, 64\] differs from the rig's radar grid.* \[128, 64\]"),
    ],
)
def test_malformed_manifest(pkg, edit, needle):
    _edit_manifest(pkg, edit)
    with pytest.raises(ManifestError, match=needle):
        load_package(pkg)


def test_manifest_opset_must_be_the_graphs(pkg):
    _edit_manifest(pkg, lambda m: m["graphs"]["map"].update(opset=m["graphs"]["map"]["opset"] + 1))
    with pytest.raises(GraphMismatchError, match=r"graph 'map'.opset: manifest \d+, graph \d+"):
        load_package(pkg)


def test_vocabulary_is_covered_by_a_hash(pkg):
    words = json.loads((pkg / "vocab.json").read_text())
    words["words"][:2] = words["words"][1::-1]  # two words swapped: every text input changes meaning
    (pkg / "vocab.json").write_text(json.dumps(words))
    with pytest.raises(IntegrityError, match="vocabulary.*vocab.json"):
        load_package(pkg)
    load_package(pkg, check_hashes=False)


def test_external_data_is_read_beside_its_graph_and_hashed(pkg):
    """A graph in a subfolder keeps its weights beside it, as ONNX Runtime reads them; describe_graph
    records their hash and loading checks it."""
    from fusion_rt.package import describe_graph

    (pkg / "sub").mkdir()
    model = onnx.load(str(pkg / "camera_encoder.onnx"))
    onnx.save(model, str(pkg / "sub" / "camera.onnx"), save_as_external_data=True, location="camera.bin",
              size_threshold=64)
    (pkg / "camera_encoder.onnx").unlink()
    spec = describe_graph(pkg, "sub/camera.onnx", "camera", "encoder", "camera").to_dict()
    assert set(spec["external_data"]) == {"camera.bin"}
    rooted = {**spec, "external_data": {"sub/camera.bin": spec["external_data"]["camera.bin"]}}
    _edit_manifest(pkg, lambda m: m["graphs"].update(camera=rooted))  # keyed from the package root: refused
    with pytest.raises(IntegrityError, match=r"'camera.bin' has no sha256 .* relative to its folder; it has "
                                             r"\['sub/camera.bin'\]"):
        load_package(pkg)
    _edit_manifest(pkg, lambda m: m["graphs"].update(camera=spec))
    package = load_package(pkg)
    session = ort.InferenceSession(str(package.graph_path("camera")), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((1, 3, 36, 64), np.float32)})[0].shape == (1, 9, 8)
    data = bytearray((pkg / "sub" / "camera.bin").read_bytes())
    data[0] ^= 0xFF
    (pkg / "sub" / "camera.bin").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 of 'camera.bin'"):
        load_package(pkg)
    (pkg / "sub" / "camera.bin").rename(pkg / "camera.bin")  # where a root-relative reading would look
    with pytest.raises(IntegrityError, match="'camera.bin' is missing"):
        load_package(pkg)


def test_a_graph_file_that_is_a_folder_is_not_called_missing(pkg):
    (pkg / "head.onnx").unlink()
    (pkg / "head.onnx").mkdir()
    with pytest.raises(IntegrityError, match=r"graph 'head': 'head.onnx' is not a file in"):
        load_package(pkg)
    (pkg / "head.onnx").rmdir()
    with pytest.raises(IntegrityError, match=r"graph 'head': 'head.onnx' is missing in"):
        load_package(pkg)


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="not a directory"):
        load_package(tmp_path / "nope")
    with pytest.raises(ManifestError, match="missing"):
        load_package(tmp_path)
    for text in ("{not json", "[" * 100_000, '{"format_version": ' + "9" * 5000 + "}"):  # too deep, too long
        (tmp_path / "manifest.json").write_text(text)
        with pytest.raises(ManifestError, match="not valid JSON"):
            load_package(tmp_path)


def test_replace_graph_takes_a_new_file_into_the_manifest(pkg):
    from fusion_rt.package import replace_graph

    from .tiny_package import _encoder

    _edit_manifest(pkg, lambda m: m.update(parity={"file": "parity.json", "worst_max_rel": 1e-7}))
    before = load_package(pkg)
    onnx.save(_encoder("camera", seed=99), str(before.graph_path("camera")))  # same I/O, other weights
    with pytest.raises(IntegrityError):
        load_package(pkg)
    after = replace_graph(pkg, "camera")
    assert after.graphs["camera"].sha256 == sha256_file(after.graph_path("camera")) != before.graphs["camera"].sha256
    assert after.graphs["radar"] == before.graphs["radar"]
    assert "parity" not in after.manifest
    with pytest.raises(ManifestError, match="'lidar'"):
        replace_graph(pkg, "lidar")


def test_external_data_of_constant_nodes_is_hashed_too(pkg):
    """A Constant node's value kept in external data used to escape the hashes: the file could be
    swapped under an unchanged package sha256 and the outputs changed."""
    from onnx import external_data_helper, helper

    from fusion_rt.package import describe_graph

    model = onnx.load(str(pkg / "camera_encoder.onnx"))
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the largest: over the threshold
    model.graph.initializer.remove(weight)
    model.graph.node.insert(0, helper.make_node("Constant", [], [weight.name], value=weight))
    external_data_helper.convert_model_to_external_data(model, location="const.bin", size_threshold=0)
    onnx.save(model, str(pkg / "camera_encoder.onnx"))
    spec = describe_graph(pkg, "camera_encoder.onnx", "camera", "encoder", "camera").to_dict()
    assert set(spec["external_data"]) == {"const.bin"}
    _edit_manifest(pkg, lambda m: m["graphs"].update(camera=spec))
    load_package(pkg)
    data = bytearray((pkg / "const.bin").read_bytes())
    data[0] ^= 0xFF
    (pkg / "const.bin").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 of 'const.bin'"):
        load_package(pkg)


def test_the_shipped_package_and_optional_output_fields_load(pkg):
    from fusion_rt.demo import shipped_package

    shipped = load_package(shipped_package())
    assert shipped.manifest["outputs"]["bev_grid"] == shipped.rig.to_dict()["bev"]
    assert set(shipped.latency_budget_ms) >= {"camera_encoder", "end_to_end"}

    def edit(m):
        m["outputs"].update(bev_grid=m["rig"]["bev"], scene_activation="sigmoid", bev_activation="sigmoid")
        m["latency_budget_ms"].update(text_preprocess=1.0, overhead=1.0, head=5.0)
        m["max_age_ns"].update(camera=1)
    _edit_manifest(pkg, edit)
    load_package(pkg)


def test_budget_for_a_modality_the_package_lacks_is_left_out_a_misspelt_one_refused(tmp_path):
    # Exports before 2026-12-01 wrote the default budgets (and ages) of all four modalities into every
    # package: such a package still loads, without them; a stage no package has is a misspelling.
    root = make_tiny_package(tmp_path / "pkg", modalities=("camera", "radar"))
    load_package(root)
    _edit_manifest(root, lambda m: (m["latency_budget_ms"].update(map_encoder=3.0), m["max_age_ns"].update(text=5)))
    package = load_package(root)
    assert "map_encoder" not in package.latency_budget_ms and "text" not in package.max_age_ns
    _edit_manifest(root, lambda m: m["latency_budget_ms"].update({"end-to-end": 3.0}))
    with pytest.raises(ManifestError, match=r"latency_budget_ms.end-to-end: 'end-to-end' is not a stage"):
        load_package(root)


def _head_output_dims(root, output: str, dims: list) -> None:
    """Declare other dims for one head output, in the graph and (as describe_graph reads it) the manifest:
    a package whose manifest is true to its graph, as an exporter would write it."""
    from fusion_rt.package import describe_graph

    head = onnx.load(str(root / "head.onnx"))
    value = next(o for o in head.graph.output if o.name == output)
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().CopyFrom(onnx.TensorShapeProto.Dimension(**({"dim_param": d} if isinstance(d, str)
                                                                       else {"dim_value": d})))
    onnx.save(head, str(root / "head.onnx"))
    spec = describe_graph(root, "head.onnx", "head", "head").to_dict()
    _edit_manifest(root, lambda m: m["graphs"].update(head=spec))


@pytest.mark.parametrize(
    "output, dims, error, needle",
    [
        # one share column per modality: 3 columns for 4 modalities crashed the first frame (zip strict)
        ("modality_share", ["batch", 6, 3], ManifestError, r"modality_share' \['batch', 6, 3\] has 3 columns"),
        ("modality_share", ["batch", 2, 4], ManifestError, r"needs 6 rows \(labels then BEV\)"),
        ("modality_share", ["batch", 6, "m"], GraphMismatchError, r"'modality_share'.*static"),
        ("modality_share", ["batch", 24], GraphMismatchError, r"'modality_share'.*\[batch, 6, 4\]"),
        # the BEV is read on rig.bev: a head on another grid was scored against the wrong cells
        ("bev_logits", ["batch", 4, 32, 32], ManifestError, r"rig.bev is a 64x64 .* 'bev_logits' .* is 32x32"),
        ("bev_logits", ["batch", 4, "rows", "cols"], GraphMismatchError, r"'bev_logits'.*static rows and cols"),
    ],
)
def test_head_outputs_must_fit_the_manifest_and_rig(pkg, output, dims, error, needle):
    _head_output_dims(pkg, output, dims)
    with pytest.raises(error, match=needle):
        load_package(pkg)


def test_vocabulary_is_parsed_at_load(pkg):
    """README once documented a JSON word list: it loaded, then the runtime refused it."""
    from fusion_rt.package import write_manifest

    (pkg / "vocab.json").write_text(json.dumps(["school", "zone", "rain"]))
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest.pop("format_version")
    write_manifest(pkg, manifest)  # the hash of the new file: only its content is wrong
    with pytest.raises(ManifestError, match=r"manifest.vocabulary 'vocab.json': not a fusion-rt vocabulary"):
        load_package(pkg)
    with pytest.raises(ManifestError, match="not a fusion-rt vocabulary"):
        load_package(pkg, check_hashes=False)


@pytest.mark.parametrize("edit, says", [
    (lambda m: m["preprocess"].update(camera_height=m["preprocess"]["camera_height"] * 2),
     r"graph 'camera'.inputs\['image'\]: shape \['batch', 3, \d+, \d+\] does not fit the package's preprocessing"),
    (lambda m: m["preprocess"].update(radar_channels=m["preprocess"]["radar_channels"][:1]),
     r"graph 'radar'.inputs\[.*does not fit the package's preprocessing"),
])
def test_encoder_inputs_that_the_preprocessing_does_not_make_are_refused_at_load(pkg, edit, says):
    """A camera size, radar channel list or map grid that does not match the encoder's input loaded
    as valid and failed only when a runtime was created (own-model audit): load_package checks it."""
    _edit_manifest(pkg, edit)
    with pytest.raises(GraphMismatchError, match=says):
        load_package(pkg)
