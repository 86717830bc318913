"""The model package contract: a valid package loads; every kind of damage is refused at load."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fusion_rt.errors import (
    GraphMismatchError,
    IntegrityError,
    ManifestError,
    PackageError,
    UnsafePathError,
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


def test_wrong_dtype_in_manifest(pkg):
    _edit_manifest(pkg, lambda m: m["graphs"]["camera"]["inputs"][0].update(dtype="float16"))
    with pytest.raises(GraphMismatchError, match=r"graph 'camera'.inputs\['image'\].dtype"):
        load_package(pkg)


def test_wrong_shape_in_manifest(pkg):
    _edit_manifest(pkg, lambda m: m["graphs"]["radar"]["outputs"][0].update(shape=["batch", 7, 8]))
    with pytest.raises(GraphMismatchError, match=r"graph 'radar'.outputs\['tokens'\].shape"):
        load_package(pkg)


def test_tampered_graph(pkg):
    data = bytearray((pkg / "map_encoder.onnx").read_bytes())
    data[-5] ^= 0xFF
    (pkg / "map_encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="graph 'map'.*sha256"):
        load_package(pkg)


def test_missing_graph(pkg):
    (pkg / "head.onnx").unlink()
    with pytest.raises(IntegrityError, match="head.onnx.*missing"):
        load_package(pkg)


def test_graph_outside_package(pkg, tmp_path):
    _edit_manifest(pkg, lambda m: m["graphs"]["text"].update(file="../elsewhere.onnx"))
    with pytest.raises(UnsafePathError, match="outside the package"):
        load_package(pkg)
    _edit_manifest(pkg, lambda m: m["graphs"]["text"].update(file="/etc/passwd"))
    with pytest.raises(UnsafePathError, match="absolute"):
        load_package(pkg)


def test_graph_through_symlink_outside(pkg, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(pkg / "camera_encoder.onnx", outside)
    os.symlink(outside, pkg / "camera_encoder.onnx")
    with pytest.raises(UnsafePathError, match="outside the package"):
        load_package(pkg)


def test_external_data_outside_package(pkg, tmp_path):
    model = onnx.load(str(pkg / "radar_encoder.onnx"))
    onnx.save(model, str(pkg / "radar_encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="radar.bin", size_threshold=0)
    assert load_package(pkg, check_hashes=False).graphs["radar"]  # external data inside: fine
    shutil.move(pkg / "radar.bin", tmp_path / "radar.bin")
    os.symlink(tmp_path / "radar.bin", pkg / "radar.bin")
    with pytest.raises(UnsafePathError, match="external data"):
        load_package(pkg, check_hashes=False)


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
    ],
)
def test_malformed_manifest(pkg, edit, needle):
    _edit_manifest(pkg, edit)
    with pytest.raises(ManifestError, match=needle):
        load_package(pkg)


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="not a directory"):
        load_package(tmp_path / "nope")
    with pytest.raises(ManifestError, match="missing"):
        load_package(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_package(tmp_path)
