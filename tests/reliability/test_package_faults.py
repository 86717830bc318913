"""R8 package faults and R9 no unsafe loading (issue #8): a damaged package is refused with a typed
error before any frame is processed; the sources never unpickle, load unsafe YAML or torch.load."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import onnx
import pytest

from fusion_rt.backends import RunnerError
from fusion_rt.errors import FusionRTError, GraphMismatchError, IntegrityError, PackageError, UnsafePathError
from fusion_rt.package import sha256_file
from fusion_rt.replay import ReplayConfig, replay
from fusion_rt.runtime import FusionRuntime

from ..test_package import _edit_manifest
from ..tiny_package import make_tiny_package

ROOT = Path(__file__).resolve().parents[2]


def _resave_with_external_data(pkg: Path, location: str, size_threshold: int = 1024) -> None:
    """radar_encoder.onnx with its weights in an external file at `location` (manifest hash updated).

    Tensors under `size_threshold` bytes (the Reshape shapes) stay inline: ONNX Runtime needs them there."""
    model = onnx.load(str(pkg / "radar_encoder.onnx"))
    onnx.save(model, str(pkg / "radar_encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="radar.bin", size_threshold=size_threshold)
    if location != "radar.bin":  # point the graph elsewhere, as a hostile package would
        model = onnx.load(str(pkg / "radar_encoder.onnx"), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, str(pkg / "radar_encoder.onnx"))
    external = {"radar.bin": sha256_file(pkg / "radar.bin")} if location == "radar.bin" else {}
    _edit_manifest(pkg, lambda m: m["graphs"]["radar"].update(sha256=sha256_file(pkg / "radar_encoder.onnx"),
                                                              external_data=external))


def _tamper(pkg: Path, outside: Path) -> None:
    data = bytearray((pkg / "map_encoder.onnx").read_bytes())
    data[-5] ^= 0xFF
    (pkg / "map_encoder.onnx").write_bytes(bytes(data))


def _symlink_graph(pkg: Path, outside: Path) -> None:
    shutil.move(pkg / "camera_encoder.onnx", outside / "camera_encoder.onnx")
    os.symlink(outside / "camera_encoder.onnx", pkg / "camera_encoder.onnx")


def _external_data_through_symlink(pkg: Path, outside: Path) -> None:
    _resave_with_external_data(pkg, "radar.bin")
    shutil.move(pkg / "radar.bin", outside / "radar.bin")
    os.symlink(outside / "radar.bin", pkg / "radar.bin")


def _external_data_outside(pkg: Path, outside: Path) -> None:
    _resave_with_external_data(pkg, "../outside/radar.bin")
    shutil.move(pkg / "radar.bin", outside / "radar.bin")


def _tampered_external_data(pkg: Path, outside: Path) -> None:
    _resave_with_external_data(pkg, "radar.bin")
    data = bytearray((pkg / "radar.bin").read_bytes())
    data[-1] ^= 0xFF  # one weight changes: the graph file itself is untouched
    (pkg / "radar.bin").write_bytes(bytes(data))


def _shape_constants_external(pkg: Path, outside: Path) -> None:
    """A graph the manifest checks pass but ONNX Runtime refuses: its shape constants in external data."""
    _resave_with_external_data(pkg, "radar.bin", size_threshold=0)


FAULTS = {  # name -> (damage(pkg, outside dir), error type, message pattern naming what is wrong)
    "wrong_dtype": (lambda pkg, _: _edit_manifest(pkg, lambda m: m["graphs"]["camera"]["inputs"][0].update(
        dtype="float16")), GraphMismatchError, r"graph 'camera'.inputs\['image'\].dtype"),
    "wrong_shape": (lambda pkg, _: _edit_manifest(pkg, lambda m: m["graphs"]["radar"]["outputs"][0].update(
        shape=["batch", 7, 8])), GraphMismatchError, r"graph 'radar'.outputs\['tokens'\].shape"),
    "tampered_graph": (_tamper, IntegrityError, "graph 'map'.*sha256"),
    "missing_graph": (lambda pkg, _: (pkg / "head.onnx").unlink(), IntegrityError, "head.onnx.*missing"),
    "graph_path_outside": (lambda pkg, _: _edit_manifest(pkg, lambda m: m["graphs"]["text"].update(
        file="../elsewhere.onnx")), UnsafePathError, "outside the package"),
    "graph_absolute_path": (lambda pkg, _: _edit_manifest(pkg, lambda m: m["graphs"]["text"].update(
        file="/etc/passwd")), UnsafePathError, "absolute"),
    "graph_symlink_outside": (_symlink_graph, UnsafePathError, "outside the package"),
    "external_data_outside": (_external_data_outside, UnsafePathError, "external data"),
    "external_data_symlink_outside": (_external_data_through_symlink, UnsafePathError, "external data"),
    "tampered_external_data": (_tampered_external_data, IntegrityError, "external data.*sha256 of 'radar.bin'"),
    "graph_the_backend_refuses": (_shape_constants_external, RunnerError, "ONNX Runtime cannot load .*radar_encoder"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_r8_package_faults_are_refused_at_load_before_any_frame(fault, short_drive, tmp_path, figures):
    pkg = make_tiny_package(tmp_path / "pkg")
    (tmp_path / "outside").mkdir()
    damage, error, pattern = FAULTS[fault]
    damage(pkg, tmp_path / "outside")
    out = tmp_path / "results.mcap"
    with pytest.raises(error, match=pattern) as refused:
        replay(short_drive, pkg, ReplayConfig(out=out))
    # refused at load (or, for the runner, when its session is created) before the first frame: no
    # results log, not even an empty one (it is renamed into place only when a replay completes)
    assert not out.exists() and not list(out.parent.glob(".*.partial"))
    with pytest.raises(error, match=pattern):
        FusionRuntime(pkg)
    assert isinstance(refused.value, PackageError if error is not RunnerError else FusionRTError)
    figures.update(refused=True, error=type(refused.value).__name__, frames_processed=0)


def test_r8_the_undamaged_package_loads(tmp_path):
    """The control: the same steps without damage load (external data inside the package included)."""
    pkg = make_tiny_package(tmp_path / "pkg")
    _resave_with_external_data(pkg, "radar.bin")
    with FusionRuntime(pkg) as rt:
        assert set(rt.runners) == {"camera", "radar", "map", "text", "head"}


# ------------------------------------------------------------------------------------------- R9

_PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
_LOADERS = {"load", "loads", "Unpickler", "open", "read_pickle"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loading(source: str) -> list[tuple[int, str]]:
    """(line, what) for every call that can execute code from a file's contents: unpickling (pickle,
    dill, joblib, marshal, shelve, pandas.read_pickle), `allow_pickle=True`, yaml.load without a safe
    Loader, yaml.unsafe_load / full_load, torch.load without weights_only=True."""
    found = []
    imported = {}  # local name -> module.function for `from pickle import loads as x`
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _PICKLING_MODULES:
            for alias in node.names:
                if alias.name in _LOADERS:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        if not isinstance(node, ast.Call):
            continue
        name = imported.get(_dotted(node.func), _dotted(node.func))
        head, _, last = name.rpartition(".")
        if head.split(".")[0] in _PICKLING_MODULES and last in _LOADERS or last == "read_pickle":
            found.append((node.lineno, name))
        elif _is_true(_keyword(node, "allow_pickle")):
            found.append((node.lineno, f"{name}(allow_pickle=True)"))
        elif head == "yaml" and last in ("unsafe_load", "full_load", "load_all", "unsafe_load_all"):
            found.append((node.lineno, name))
        elif head == "yaml" and last == "load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if _dotted(loader).rpartition(".")[2] not in ("SafeLoader", "CSafeLoader"):
                found.append((node.lineno, "yaml.load without SafeLoader"))
        elif head == "torch" and last == "load" and not _is_true(_keyword(node, "weights_only")):
            found.append((node.lineno, "torch.load without weights_only=True"))
    return found


def test_r9_sources_contain_no_unsafe_loading(figures):
    planted = """
import pickle, yaml, torch, numpy as np
from pickle import loads as l
pickle.load(f); l(b); yaml.load(s); yaml.unsafe_load(s); torch.load(p); np.load(p, allow_pickle=True)
yaml.load(s, Loader=yaml.SafeLoader); torch.load(p, weights_only=True); np.load(p); yaml.safe_load(s)
"""
    assert len(unsafe_loading(planted)) == 6  # the scanner sees each kind, and passes the safe forms
    files = [p for tree in ("fusion_rt", "export", "calibration") for p in sorted((ROOT / tree).rglob("*.py"))]
    assert len(files) > 50
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in files
                 for line, what in unsafe_loading(path.read_text())]
    assert not offenders, offenders
    figures.update(files_scanned=len(files), offenders=0)
