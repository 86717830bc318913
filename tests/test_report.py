"""The HTML report: self-contained (no external fetch), every section present, renders in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from fusion_rt.replay import FrameRecord, ReplayConfig, ReplayResult, replay
from fusion_rt.report import _share_chart, _timeline, render_report, write_report

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


def _long_result(n: int) -> ReplayResult:
    """`n` frames at 20 Hz: a rejected frame every 997th, radar missing on every 3rd, a deadline miss
    on every 50th, latency and attention share varying frame to frame."""
    frames = []
    for i in range(n):
        status = "rejected" if i % 997 == 500 else "degraded" if i % 3 == 0 else "ok"
        flags = (("degraded:radar_missing",) if i % 3 == 0 else ()) + (("deadline_miss:head",) if i % 50 == 7 else ())
        frames.append(FrameRecord(stamp_ns=i * 50_000_000, status=status, flags=flags,
                                  share=(0.4 + 0.1 * (i % 7) / 7, 0.3, 0.2, 0.1) if status != "rejected" else (),
                                  timings_ms={} if status == "rejected" else {"end_to_end": 5.0 + (i * 37 % 11)}))
    return ReplayResult(summary={}, frames=frames, worst=[], conditions={}, scene_labels=("car",),
                        modalities=("camera", "radar", "map", "text"))


def test_timeline_and_share_chart_do_not_grow_with_the_drive():
    # One <rect> per frame per lane and one point per frame per line: a report grew by ~4.7 KB per
    # second of drive (~17 MB for an hour). Drawn per pixel column now, whatever the drive's length.
    def size(n: int) -> tuple[int, int, str]:
        result = _long_result(n)
        timeline, share = _timeline(result), _share_chart(result)
        points = sum(len(p.split()) for p in re.findall(r'points="([^"]*)"', timeline + share))
        return timeline.count("<rect"), points, timeline

    rects, points, timeline = size(72_000)  # an hour
    assert rects <= 5 + 4 * 930 and points <= 9 * 2 * 930, (rects, points)
    assert len(timeline) + points * 12 < 300_000
    # nothing rare gets lost: every rejected frame and every deadline miss still shows
    assert timeline.count('fill="#d7263d"') >= 72_000 // 997
    # 20 s: frames of one state in a row are one rect (status: an ok run and a degraded one every 3
    # frames, radar missing: one), where it was a rect per frame per lane (548 here)
    short_rects, _, _ = size(400)
    assert short_rects <= 5 + (2 + 1) * (400 // 3 + 1) + 400 // 50 + 1, short_rects


def test_a_short_drive_draws_every_frame(result):
    # below a frame per pixel column nothing is merged away: every latency point, every tick
    timeline, share = _timeline(result), _share_chart(result)
    (line,) = re.findall(r'<polyline points="([^"]*)"', timeline)
    assert len(line.split()) == sum(1 for f in result.frames if "end_to_end" in f.timings_ms)
    polygons = re.findall(r'<polygon points="([^"]*)"', share)
    assert [len(p.split()) for p in polygons] == [2 * len(result.frames)] * len(result.modalities)
    degraded = sum(f.status == "degraded" for f in result.frames)
    assert (degraded == 0) == ('fill="#f0a202"' not in timeline)
