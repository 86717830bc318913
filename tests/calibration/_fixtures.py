"""Tiny real artefacts for the calibration tests: a package whose manifest carries a usable
preprocessing config and vocabulary (tests/tiny_package.py's graphs, camera input 36x64), and a
short simulated log."""

from __future__ import annotations

import json
from pathlib import Path

from fusion_rt.package import write_manifest
from fusion_rt.preprocess import PreprocessConfig, Vocabulary

from ..tiny_package import INPUTS, make_tiny_package


def make_calibration_package(root: Path) -> Path:
    """tests/tiny_package.py's package, with the real preprocessing config its graphs fit."""
    make_tiny_package(root)
    manifest = json.loads((root / "manifest.json").read_text())
    _, height, width = INPUTS["camera"][2]
    manifest["preprocess"] = PreprocessConfig(camera_height=height, camera_width=width).to_dict()
    Vocabulary.build(["school zone ahead", "construction zone", "pedestrians crossing"],
                     max_tokens=INPUTS["text"][2][0]).save(root / "vocab.json")
    manifest.pop("format_version")
    write_manifest(root, manifest)
    return root
