"""The command line as a user meets it: help, bad input as one line, real output."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli


def test_help_lists_verbs():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for verb in ("simulate", "log"):
        assert verb in proc.stdout
    sim_help = run_cli("simulate", "--help")
    assert sim_help.returncode == 0
    assert "byte-identical" in sim_help.stdout and "--conditions" in sim_help.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["simulate", "{tmp}/a.mcap", "--seconds", "-3"], "-3"),
        (["simulate", "{tmp}/a.mcap", "--seconds", "0"], "seconds"),
        (["simulate", "{tmp}/a.mcap", "--conditions", "snow"], "snow"),
        (["simulate", "{tmp}/a.mcap", "--camera-size", "big"], "big"),
        (["simulate", "{tmp}/a.mcap", "--camera-size", "10x10"], "10"),
        (["simulate", "{tmp}/no/such/dir/a.mcap", "--seconds", "1"], "does not exist"),
        (["simulate", "{tmp}", "--seconds", "1"], "is a directory"),
        (["log", "info", "{tmp}/missing.mcap"], "missing.mcap"),
        (["log", "info", "{tmp}/notalog.mcap"], "notalog.mcap"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, needle):
    (tmp_path / "notalog.mcap").write_text("this is not a log\n")
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]


def test_simulate_then_info(tmp_path):
    log = tmp_path / "drive.mcap"
    proc = run_cli("simulate", str(log), "--seconds", "2", "--seed", "5", "--conditions", "night", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["camera_frames"] == summary["messages"]["CameraFrame"] >= 38
    assert summary["conditions"] == {"night": summary["camera_frames"]}
    assert summary["bytes"] == log.stat().st_size
    info = run_cli("log", "info", str(log), "--json")
    assert info.returncode == 0, info.stderr
    assert "/camera/front/image/compressed" in info.stdout
    text = run_cli("log", "info", str(log))
    assert text.returncode == 0 and "sensor_msgs/msg/CompressedImage" in text.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from .tiny_package import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("cli") / "pkg")


@pytest.mark.parametrize(
    "args, needle",
    [
        # an output that names an input is refused before anything is read or written
        (["replay", "{log}", "--package", "{pkg}", "--out", "{log}"], "would overwrite the input"),
        (["replay", "{log}", "--package", "{pkg}", "--json", "{log}"], "would overwrite the input"),
        (["replay", "{log}", "--package", "{pkg}", "--report", "{pkg}/report.html"], "would overwrite the input"),
        (["compare", "{log}", "--a", "{pkg}", "--b", "{pkg}", "--json", "{log}"], "would overwrite the input"),
        (["quantize", "{pkg}", "--recipe", "fp16", "--calib", "{log}", "--out", "{pkg}/q"], "would overwrite"),
        (["export", "{tmp}/run", "--out", "{tmp}", "--overwrite"], "would overwrite the input"),
        (["replay", "{log}", "--package", "{pkg}", "--out", "{tmp}/r.x", "--json", "{tmp}/r.x"], "same path"),
        (["replay", "{log}", "--package", "{pkg}", "--json", "{tmp}"], "is a directory"),
        (["compare", "{log}", "--a", "{pkg}", "--b", "{pkg}", "--json", "{tmp}/no/c.json"], "does not exist"),
        (["bench", "--package", "{pkg}", "--quick", "--png", "{tmp}/hist.txt"], "image type"),
        (["demo", "--threads", "0"], "positive integer"),
        (["replay", "{log}", "--package", "{pkg}", "--threads", "-2"], "positive integer"),
        (["export", "{tmp}/run", "--out", "{tmp}/pkg2", "--samples", "0"], "positive integer"),
    ],
)
def test_outputs_are_checked_before_any_work(tmp_path, short_drive, tiny, args, needle):
    (tmp_path / "run").mkdir()
    before = short_drive.read_bytes()
    proc = run_cli(*[a.format(tmp=tmp_path, log=short_drive, pkg=tiny) for a in args])
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert short_drive.read_bytes() == before  # the input log is untouched
    assert not (tiny / "q").exists() and not (tiny / "report.html").exists()


def test_names_from_logs_and_packages_cannot_steer_the_terminal(tmp_path, short_drive, tiny):
    """A package named "x[/]" crashed replay's summary (rich markup, traceback after the JSON was
    written) and "[link=...]" planted a hidden link; escape sequences in a topic name reached the
    terminal raw from `log info` (OSC 52 writes the clipboard). Both print as text now."""
    import json
    import shutil

    from fusion_rt.logs import LogReader, LogWriter

    pkg = tmp_path / "pkg"
    shutil.copytree(tiny, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["name"] = "evil[/bold][/] [link=https://evil.example]ok[/link]"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("replay", str(short_drive), "--package", str(pkg))
    assert proc.returncode == 0, proc.stderr
    assert "evil[/bold][/]" in proc.stdout and "[link=https://evil.example]ok[/link]" in proc.stdout
    assert "\x1b]8" not in proc.stdout

    log = tmp_path / "esc.mcap"
    with LogReader(short_drive) as reader, LogWriter(log) as writer:
        for item in reader.messages():
            topic = "/context/text\x1b]52;c;cm0gLXJmIH4K\x07" if item.topic == "/context/text" else item.topic
            writer.write(item.message, topic=topic)
    proc = run_cli("log", "info", str(log))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "/context/text\\x1b]52;c;cm0gLXJmIH4K\\x07" in proc.stdout
