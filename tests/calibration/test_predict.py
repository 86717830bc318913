"""PackageRunner wiring: the head's inputs in the package's own order."""

from __future__ import annotations

import numpy as np

from fusion_rt.calibration.predict import PackageRunner
from fusion_rt.package import load_package

from ..tiny_package import make_tiny_package


def test_the_presence_mask_follows_the_package_modality_order(tmp_path):
    # A package may list all four modalities in any order (train --modalities camera,map,radar,text);
    # its head's `present` columns follow that order. The MODALITIES-order mask quantize draws from
    # logs went to the head unreordered: a frame without radar reached it as radar present, map absent.
    package = load_package(make_tiny_package(tmp_path / "pkg", modalities=("camera", "map", "radar", "text")))
    runner = PackageRunner(package)
    tokens = {m: np.ones((1, *package.graphs[m].outputs[0].shape[1:]), np.float32) for m in package.modalities}
    present = np.array([[True, False, True, True]])  # MODALITIES order (camera, radar, map, text): no radar
    fed = runner.head_feed(tokens, present)["present"]
    assert fed.astype(bool).tolist() == [[True, True, False, True]]  # camera, map, radar, text
    share = runner.head(tokens, present)["modality_share"][0, 0]
    assert share[package.modalities.index("radar")] == 0 and share[package.modalities.index("map")] > 0
