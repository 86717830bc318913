"""The command line as a user meets it: help, bad input as one line, real output."""

from __future__ import annotations

import json
from pathlib import Path

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
    # the description is laid out flush whatever the Python (3.13 dedents docstrings, 3.11 does not)
    description = sim_help.stdout.split("\n\n")[1:3]
    assert description and not any(line.startswith(" ") for part in description for line in part.splitlines())


@pytest.mark.parametrize(
    "args, needle",
    [
        (["simulate", "{tmp}/a.mcap", "--seconds", "-3"], "-3"),
        (["simulate", "{tmp}/a.mcap", "--seconds", "0"], "seconds"),
        (["simulate", "{tmp}/a.mcap", "--conditions", "snow"], "snow"),
        (["simulate", "{tmp}/a.mcap", "--camera-size", "big"], "big"),
        (["simulate", "{tmp}/a.mcap", "--camera-size", "10x10"], "must be within 64x64 .. 3840x2160, got 10x10"),
        (["simulate", "{tmp}/a.mcap", "--jpeg-quality", "0"], "--jpeg-quality must be an integer in [1, 100], got 0"),
        (["demo", "--out", "{tmp}/demo", "--seconds", "nan"], "--seconds must be a positive finite number, got nan"),
        (["demo", "--out", "{tmp}/demo", "--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (["simulate", "{tmp}/no/such/dir/a.mcap", "--seconds", "1"], "does not exist"),
        (["simulate", "{tmp}", "--seconds", "1"], "is a directory"),
        (["log", "info", "{tmp}/missing.mcap"], "missing.mcap' does not exist"),
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
    assert not (tmp_path / "demo").exists()  # refused before anything is written


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


def test_simulate_a_calibration_set(tmp_path):
    """One short drive per condition and scene type, for quantize --calib OUT/*.mcap (README had a
    16-line shell loop for it)."""
    from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES

    out = tmp_path / "calib"
    proc = run_cli("simulate", str(out), "--calibration-set", "--seconds", "0.1", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert sorted(p.name for p in out.glob("*.mcap")) == sorted(f"{c}_{s}.mcap" for c in CONDITIONS
                                                                 for s in SCENE_TYPES)
    for row in result["logs"]:
        condition, scene = Path(row["log"]).stem.split("_", 1)
        assert row["conditions"] == {condition: row["camera_frames"]} and row["camera_frames"] >= 1
        assert row["scene_types"] == {scene: row["camera_frames"]}
    again = run_cli("simulate", str(tmp_path / "again"), "--calibration-set", "--seconds", "0.1", "--seed", "3",
                    "--json")
    assert (tmp_path / "again" / "fog_urban.mcap").read_bytes() == (out / "fog_urban.mcap").read_bytes(), again.stderr
    for args, says in ((["--conditions", "fog"], "--conditions cannot go with --calibration-set"),
                       (["--scene-type", "urban"], "--scene-type cannot go with --calibration-set"),
                       (["--seconds", "0.01"], "--seconds must be at least 0.05"),
                       ([], "exists and is not empty; choose a new or empty folder")):
        target = out if not args else tmp_path / "bad"
        proc = run_cli("simulate", str(target), "--calibration-set", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
    assert not (tmp_path / "bad").exists()  # checked before anything is written
    (tmp_path / "file").write_text("x")
    proc = run_cli("simulate", str(tmp_path / "file"), "--calibration-set")
    assert proc.returncode == 2 and "is a file; give a folder name" in proc.stderr
    assert [row["seed"] for row in result["logs"]] == list(range(3, 19))


def test_an_interrupted_calibration_set_leaves_nothing_behind(tmp_path, monkeypatch):
    """Interrupted after 6 of 16 drives, the folder held those 6, which --calib OUT/*.mcap then took
    for a set. It is built beside OUT and moved into place whole."""
    import fusion_rt.sim.record
    from fusion_rt.cli import main

    real, written = fusion_rt.sim.record.record_drive, []

    def record_drive(config, path, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        return real(config, path, **kwargs)

    monkeypatch.setattr(fusion_rt.sim.record, "record_drive", record_drive)
    assert main(["simulate", str(tmp_path / "calib"), "--calibration-set", "--seconds", "0.1", "-q"]) == 130
    assert len(written) == 3 and sorted(p.name for p in tmp_path.iterdir()) == []


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


def _cli(*args: str, **kwargs):
    """`python -m fusion_rt ARGS` as a Popen (the caller decides what stdout and stderr are)."""
    import subprocess
    import sys

    from .conftest import ROOT

    return subprocess.Popen([sys.executable, "-m", "fusion_rt", *args], cwd=ROOT, **kwargs)


def test_a_reader_that_goes_away_is_never_success(tmp_path, short_drive, tiny):
    """`bench --check 2>&1 | head -1` exited 0 after its first progress line (a CI gate passed without
    measuring), and `log info | head` 0 too: a broken pipe exits 141, without a traceback."""
    import subprocess

    for args, broken in ((["log", "info", str(short_drive)], "stdout"),
                         (["bench", "--package", str(tiny), "--quick", "--steps", "5", "--no-budgets"], "stderr")):
        proc = _cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        getattr(proc, broken).close()  # the reader is gone before the first line
        other = (proc.stderr if broken == "stdout" else proc.stdout).read().decode()
        assert proc.wait(120) == 141, (args, other)
        assert "Traceback" not in other and "Exception" not in other


def _default_signals():
    import signal

    for signum in (signal.SIGHUP, signal.SIGINT):  # under nohup SIGHUP is ignored (and a background job's
        signal.signal(signum, signal.SIG_DFL)  # SIGINT), and fusion-rt keeps them so


@pytest.mark.parametrize("signame, code, said", [("SIGTERM", 143, "terminated"), ("SIGHUP", 129, "terminated"),
                                                 ("SIGINT", 130, "interrupted")])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, signame, code, said):
    """`docker stop`, `timeout`, CI cancellation (SIGTERM) and a closed SSH session (SIGHUP) killed the
    command without its cleanup: a hidden multi-MB .partial file was left with every cancelled run."""
    import signal
    import subprocess
    import time

    proc = _cli("simulate", str(tmp_path / "drive.mcap"), "--seconds", "60", "-q", stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    start = time.monotonic()
    while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()) and time.monotonic() < start + 60:
        time.sleep(0.05)
    seen = time.monotonic() - start
    running = proc.poll() is None
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=90)
    took = time.monotonic() - start - seen
    # (what the rare (0, '') failure was: no .partial seen, the command already done, or the signal lost)
    assert running and seen < 60, (seen, running, sorted(p.name for p in tmp_path.iterdir()))
    assert proc.returncode == code and err == f"fusion-rt: {said}\n", (proc.returncode, err, seen, took)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_termination_lost_in_a_library_is_raised_again(signame):
    """CI: SIGTERM landed while numpy.random's Cython init ran Python code that clears errors; the
    exception vanished and `simulate` ran to its end with exit code 0. The signal is raised again
    until main has caught it, but never into the cleanup of the first one. Ctrl-C alike."""
    import signal
    import time

    from fusion_rt import cli

    signum = getattr(signal, signame)
    termination = cli._Termination()
    previous = signal.signal(signum, termination.handle)
    try:
        try:
            signal.raise_signal(signum)
            time.sleep(1)
        except KeyboardInterrupt:  # what the library did with it
            pass
        with pytest.raises(KeyboardInterrupt) as raised:
            for _ in range(500):  # (a repeat runs between bytecodes: it does not cut a sleep short)
                time.sleep(0.01)
        assert getattr(raised.value, "signum", signal.SIGINT) == signum
        assert isinstance(raised.value, cli._Terminated) == (signame == "SIGTERM")
        try:
            raise raised.value
        except KeyboardInterrupt:  # its cleanup: not interrupted again
            for _ in range(60):
                time.sleep(0.01)
        termination.caught = True
        for _ in range(60):  # caught: no more repeats
            time.sleep(0.01)
    finally:
        termination.caught = True
        signal.signal(signum, previous)


def test_a_signal_swallowed_as_the_command_ends_still_ends_it(monkeypatch, capsys):
    """Swallowed in the last 0.25 s of a command (before the watcher's first repeat), SIGTERM was
    lost and the command exited 0; main raises it itself."""
    import signal

    from fusion_rt import cli

    def command(_args):
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:  # what a library did with it
            pass
        return 0

    monkeypatch.setattr(cli, "cmd_log_info", command)
    assert cli.main(["log", "info", "x.mcap"]) == 143
    assert capsys.readouterr().err == "fusion-rt: terminated\n"


def test_a_second_ctrl_c_interrupts_a_cleanup(monkeypatch, capsys):
    """The watcher's repeats leave a running cleanup alone; a second real Ctrl-C still interrupts it
    (press again to force quit), as before fusion-rt handled SIGINT itself."""
    import signal

    from fusion_rt import cli

    finished: list[bool] = []

    def command(_args):
        try:
            signal.raise_signal(signal.SIGINT)
        finally:
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C again during the cleanup
            finished.append(True)

    monkeypatch.setattr(cli, "cmd_log_info", command)
    assert cli.main(["log", "info", "x.mcap"]) == 130 and finished == []
    assert capsys.readouterr().err == "fusion-rt: interrupted\n"


def test_a_terminated_command_with_stdout_gone_still_exits_143(tmp_path):
    """Terminated with its printed output still buffered and the reader gone (`| head`, which Ctrl-C
    ends too) or stdout on a full disk: the flush at exit failed, 'Exception ignored ... BrokenPipeError'
    and exit code 120. main flushes (or silences stdout) on the way out."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    child = (
        "import signal, sys, time\n"
        "from fusion_rt import cli\n"
        "def command(_args):\n"
        "    print('{\"summary\": 1}')\n"
        "    time.sleep(0.3)\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "cli.cmd_log_info = command\n"
        "sys.exit(cli.main(['log', 'info', 'x.mcap']))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as in a shell
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    targets = ["pipe"] + (["/dev/full"] if Path("/dev/full").exists() else [])
    for target in targets:
        if target == "pipe":
            read, write = os.pipe()
            proc = subprocess.Popen([sys.executable, "-c", child], stdout=write, stderr=subprocess.PIPE, text=True,
                                    env=env, cwd=tmp_path)
            os.close(write)
            os.close(read)  # the reader is gone
        else:
            with open(target, "w") as full:
                proc = subprocess.Popen([sys.executable, "-c", child], stdout=full, stderr=subprocess.PIPE, text=True,
                                        env=env, cwd=tmp_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and err == "fusion-rt: terminated\n", (target, proc.returncode, err)


def test_a_full_disk_is_one_line(short_drive):
    """`log info LOG > /dev/full` (stdout on a full disk) was a traceback: one line, exit code 1."""
    import subprocess
    from pathlib import Path

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:  # an open descriptor only: nothing is written to the device's name
        proc = _cli("log", "info", str(short_drive), stdout=full, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err == "fusion-rt: error: No space left on device\n", err


def test_quantize_json_is_json_when_outputs_are_not_finite(tmp_path, short_drive, tiny, monkeypatch, capsys):
    """An output overflowing to inf made the worst cosine NaN, printed as `NaN` by `quantize --json` and
    written into manifest.json and quantization_report.json: strict parsers refused all three. It is
    null now. --out is a symlink to an empty folder (was: NotADirectoryError after all the work)."""
    import numpy as np

    from fusion_rt.calibration import quantize
    from fusion_rt.cli import main

    class Overflowing(quantize.PackageRunner):
        def run(self, frames, batch_size=32, present=None):
            out = super().run(frames, batch_size, present)
            if any(path != self.package.graph_path(name) for name, path in self.files.items()):  # new precision
                out["bev_logits"][...] = np.inf
            return out

    monkeypatch.setattr(quantize, "PackageRunner", Overflowing)
    (tmp_path / "disk" / "q").mkdir(parents=True)
    (tmp_path / "q").symlink_to(tmp_path / "disk" / "q")
    code = main(["quantize", str(tiny), "--recipe", "fp16", "--calib", str(short_drive), "--out", str(tmp_path / "q"),
                 "--samples", "8", "--max-rounds", "1", "--tolerance", "0.99", "--json", "-q"])
    out = capsys.readouterr().out
    assert code == 1
    assert json.loads(out, parse_constant=pytest.fail)["worst_output_cosine"] is None
    assert (tmp_path / "q").is_symlink()
    package = tmp_path / "disk" / "q"
    manifest = json.loads((package / "manifest.json").read_text(), parse_constant=pytest.fail)
    assert manifest["quantization"]["worst_output_cosine"] is None
    json.loads((package / "quantization_report.json").read_text(), parse_constant=pytest.fail)


def test_ctrl_c_while_the_cli_loads_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first ~0.4 s (numpy imported by build_parser, outside main's try) was a traceback."""
    import sys

    from fusion_rt import cli

    def interrupted():
        raise KeyboardInterrupt

    def escaped(call):  # before: the KeyboardInterrupt (a traceback) ended the whole test session
        try:
            return call()
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped as a traceback")

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert escaped(lambda: cli.main(["simulate", "x.mcap"])) == 130
    assert capsys.readouterr().err == "fusion-rt: interrupted\n"

    class Interrupting:  # Ctrl-C while the console script imports fusion_rt.cli
        def find_spec(self, name, path=None, target=None):
            if name == "fusion_rt.cli":
                raise KeyboardInterrupt

    from fusion_rt.__main__ import run

    monkeypatch.delitem(sys.modules, "fusion_rt.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert escaped(run) == 130
    assert capsys.readouterr().err == "fusion-rt: interrupted\n"


def test_closed_stderr_is_not_a_crash(tmp_path):
    """With stderr closed (`2>&-`: some daemons and cron jobs) sys.stderr is None, and simulate, replay,
    compare and evaluate failed on `sys.stderr.isatty()` with exit code 1 and no word."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    log = tmp_path / "drive.mcap"
    proc = subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "-", sys.executable, "-m", "fusion_rt", "simulate",
                           str(log), "--seconds", "0.5"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "COLUMNS"})  # the path is not wrapped
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith(f"{log}: 0.5 s of driving"), proc.stdout
    assert log.stat().st_size > 0


def test_simulate_checks_its_output_like_every_verb(tmp_path, monkeypatch, capsys):
    """An unwritable folder was reported with the hidden temporary name ('.a.mcap.123-ab.partial'), after
    the simulator had started: refused first, naming the path given. (Root writes anywhere, so the
    read-only mount is os.access saying so.)"""
    import os

    from fusion_rt.cli import main

    real_access = os.access
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(folder) else real_access(p, mode))
    assert main(["simulate", str(folder / "a.mcap"), "--seconds", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"fusion-rt: error: the folder of OUT.mcap {str(folder / 'a.mcap')!r} is not writable " \
                  f"({str(folder)!r})\n"
    assert list(folder.iterdir()) == []


def test_a_log_written_to_stdout_is_only_the_log(tmp_path):
    # `simulate /dev/stdout | ...`: the drive's text summary was printed after the MCAP bytes, on the
    # same stream, so the official reader failed on the piped log; and a reader that went away gave
    # exit 2 "Broken pipe" instead of 141.
    import subprocess
    import sys

    from mcap.reader import make_reader

    out = subprocess.run([sys.executable, "-m", "fusion_rt", "simulate", "/dev/stdout", "--seconds", "0.2"],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (tmp_path / "piped.mcap").write_bytes(out.stdout)
    with open(tmp_path / "piped.mcap", "rb") as f:
        assert sum(1 for _ in make_reader(f).iter_messages()) > 5
    assert b"s of driving" in out.stderr
    cut = subprocess.run(f"{sys.executable} -m fusion_rt simulate /dev/stdout --seconds 3 -q | head -c 100 >/dev/null;"
                         " exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, timeout=120)
    assert cut.returncode == 141, cut.stderr


def test_replay_says_what_it_skipped_and_why_without_json(tmp_path, short_drive, tiny):
    """A bag whose camera is a compressed 16-bit depth image said "4 damaged records or messages were
    skipped (see log.issue_list)", a list only --json has: the text summary names the topic, the count
    and the reason, as unsupported, not damage."""
    import cv2
    import numpy as np
    from mcap_ros2.writer import Writer as Ros2Writer

    from fusion_rt.logs.schemas import COMPRESSED_IMAGE, SCHEMAS

    depth = cv2.imencode(".png", np.full((360, 640), 3000, np.uint16))[1].tobytes()
    log = tmp_path / "depth.mcap"
    with open(log, "wb") as f, Ros2Writer(f) as writer:
        schema = writer.register_msgdef(COMPRESSED_IMAGE, SCHEMAS[COMPRESSED_IMAGE])
        for i in range(4):
            t = 1_700_000_000_000_000_000 + i * 50_000_000
            writer.write_message("/camera/depth/image_rect_raw/compressed", schema,
                                 {"header": {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "d"},
                                  "format": "16UC1; png compressed ", "data": depth}, log_time=t, publish_time=t)
    proc = run_cli("replay", str(log), "--package", str(tiny))
    assert proc.returncode == 0, proc.stderr
    assert ("warning: 4 messages on '/camera/depth/image_rect_raw/compressed' skipped as unsupported" in proc.stderr
            and "'16UC1; png compressed '" in proc.stderr), proc.stderr
    assert "damaged" not in proc.stderr and "frames 0" in proc.stdout
