"""The HTML report: self-contained (no external fetch), every section present, renders in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from fusion_rt.replay import ReplayConfig, replay
from fusion_rt.report import render_report, write_report

from .tiny_package import make_tiny_package


@pytest.fixture(scope="module")
def result(short_drive, tmp_path_factory):
    package = make_tiny_package(tmp_path_factory.mktemp("report") / "pkg")
    return replay(short_drive, package, ReplayConfig(drop=("map",)))


def test_report_is_self_contained_with_every_section(result):
    page = render_report(result)
    for heading in ("Latency", "Timeline", "Attention share per modality", "Metrics per condition", "Worst frames"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("<svg") >= 4 and page.count("data:image/jpeg;base64,") == len(result.worst) > 0
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched at view time
    assert "map missing" in page and "masked: map" in page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(result, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "report.html"
    write_report(result, page)
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1200)
    assert float(image.std()) > 10.0  # not blank: charts, text and thumbnails
    dark = (image.mean(axis=2) < 128).mean()
    assert 0.01 < dark < 0.6
    Path("/tmp/fusion_rt_report_test.png").write_bytes(shot.read_bytes())  # for a human to look at
