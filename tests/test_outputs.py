"""fusion_rt.outputs: outputs checked before any work, written atomically."""

from __future__ import annotations

import pytest

from fusion_rt.errors import OutputError
from fusion_rt.outputs import atomic_output, check_outputs, staged_dir, write_text


def test_check_outputs(tmp_path):
    log = tmp_path / "drive.mcap"
    log.write_bytes(b"x")
    bag = tmp_path / "bag"
    bag.mkdir()
    # an output folder may be new, parents included (make demo writes out/demo in a fresh clone)
    check_outputs(dirs={"--out": tmp_path / "out" / "demo"}, inputs=[log])
    check_outputs(files={"--json": tmp_path / "s.json", "--report": tmp_path / "r.html"}, inputs=[log, bag])
    for kwargs, needle in [
        ({"files": {"--out": log}}, "would overwrite the input"),
        ({"files": {"--out": bag / "results.mcap"}}, "would overwrite the input"),  # would become a split
        ({"dirs": {"--out": tmp_path}}, "would overwrite the input"),  # a folder holding an input
        ({"files": {"--json": tmp_path / "no" / "s.json"}}, "does not exist"),  # a file's folder must exist
        ({"files": {"--json": bag}}, "is a directory"),
        ({"dirs": {"--out": log}}, "is a file"),
        ({"dirs": {"--out": log / "pkg"}}, "cannot be created: '.*drive.mcap' is a file, not a folder"),  # not missing
        ({"files": {"--json": log / "s.json"}}, "cannot be created: '.*drive.mcap' is a file, not a folder"),
        ({"files": {"--json": tmp_path / "a", "--report": tmp_path / "a"}}, "same path"),
    ]:
        with pytest.raises(OutputError, match=needle):
            check_outputs(inputs=[log, bag], **kwargs)


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    path = tmp_path / "report.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    write_text(path, "new")
    assert path.read_text() == "new"


def test_staged_dir_replaces_a_folder_only_when_complete(tmp_path):
    out = tmp_path / "pkg"
    with staged_dir(out) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(OutputError, match="not empty"):
        with staged_dir(out):
            pass
    with pytest.raises(RuntimeError), staged_dir(out, overwrite=True) as staging:
        (staging / "b").write_text("2")
        raise RuntimeError("parity failed")
    assert sorted(p.name for p in out.iterdir()) == ["a"] and sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    with staged_dir(out, overwrite=True) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def test_printable_and_console_keep_the_terminal_ours():
    """Escape sequences, separators and bidi overrides from a log or package print as escapes; our own
    multi-line messages keep their lines (the demo printed a literal "\\n" between two paths)."""
    import io

    from fusion_rt.outputs import console, printable

    assert printable("/cam\x1b]52;c;AAA\x07 \u202eevil\tok") == "/cam\\x1b]52;c;AAA\\x07 \\u202eevil\tok"
    assert printable("one\ntwo") == "one\\ntwo" and printable("one\ntwo", keep_newlines=True) == "one\ntwo"
    c = console()
    c.file = io.StringIO()
    c.print("results log: a.mcap\nreport:      r.html [/] \x1b[8m")
    assert c.file.getvalue() == "results log: a.mcap\nreport:      r.html [/] \\x1b[8m\n"


def _fifo_reader(path):
    """Start a thread that reads the FIFO `path` to its end; join it, then read `.data`."""
    import threading

    thread = threading.Thread(target=lambda: setattr(thread, "data", path.read_bytes()), daemon=True)
    thread.start()
    return thread


def test_a_fifo_or_device_output_is_written_in_place(tmp_path):
    """`--out /dev/null` as root turned /dev/null into a regular file (the rename replaced the device
    node), and `--json /dev/stdout | jq` got nothing: a destination that is not a file is written
    directly, never renamed over (a FIFO stands in for the device here)."""
    import os
    import stat

    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    check_outputs(files={"--json": fifo})
    reader = _fifo_reader(fifo)
    write_text(fifo, '{"ok": true}\n')
    reader.join(10)
    assert reader.data == b'{"ok": true}\n'
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_symlinked_output_keeps_its_link(tmp_path):
    """The rename replaced a symlinked output file (its target kept the old content), and a symlinked
    output folder was a traceback (rmtree on a link): the target is replaced, the link kept."""
    disk = tmp_path / "bigdisk"
    (disk / "pkg").mkdir(parents=True)
    (disk / "summary.json").write_text("old")
    (tmp_path / "summary.json").symlink_to(disk / "summary.json")
    (tmp_path / "pkg").symlink_to(disk / "pkg")
    check_outputs(files={"--json": tmp_path / "summary.json"}, dirs={"--out": tmp_path / "pkg"})
    write_text(tmp_path / "summary.json", "new")
    assert (tmp_path / "summary.json").is_symlink() and (disk / "summary.json").read_text() == "new"
    for content in ("1", "2"):  # an empty target folder, then one replaced with --overwrite
        with staged_dir(tmp_path / "pkg", overwrite=True) as staging:
            (staging / "a").write_text(content)
        assert (tmp_path / "pkg").is_symlink() and (disk / "pkg" / "a").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigdisk", "pkg", "summary.json"]
    assert sorted(p.name for p in disk.iterdir()) == ["pkg", "summary.json"]


def test_logs_through_a_symlink_or_a_fifo(tmp_path):
    """record_drive and the replay results writer (MCAP through mcap's writer, which asks `tell`):
    a symlink's target is replaced, a FIFO is written in place and reads back as a whole log."""
    import os

    from fusion_rt.logs import LogReader
    from fusion_rt.replay import _ResultsWriter
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    disk = tmp_path / "disk"
    disk.mkdir()
    (disk / "drive.mcap").write_text("old")
    (tmp_path / "drive.mcap").symlink_to(disk / "drive.mcap")
    record_drive(DriveConfig(seconds=0.5, seed=1), tmp_path / "drive.mcap")
    assert (tmp_path / "drive.mcap").is_symlink()
    with LogReader(disk / "drive.mcap") as log:
        count = sum(1 for _ in log.messages())
    assert count > 10

    fifo = tmp_path / "pipe.mcap"
    os.mkfifo(fifo)
    reader = _fifo_reader(fifo)
    record_drive(DriveConfig(seconds=0.5, seed=1), fifo)
    reader.join(30)
    assert reader.data == (disk / "drive.mcap").read_bytes()

    reader = _fifo_reader(fifo)
    results = _ResultsWriter(fifo)
    results.write("/x", "std_msgs/msg/String", {"data": "hi"}, 1)
    results.close()
    reader.join(10)
    assert reader.data.startswith(b"\x89MCAP0\r\n") and reader.data.endswith(b"\x89MCAP0\r\n")
    (disk / "r.mcap").write_text("old")
    (tmp_path / "r.mcap").symlink_to(disk / "r.mcap")
    results = _ResultsWriter(tmp_path / "r.mcap")
    results.close()
    assert (tmp_path / "r.mcap").is_symlink() and (disk / "r.mcap").read_bytes()[:8] == b"\x89MCAP0\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "drive.mcap", "pipe.mcap", "r.mcap"]


def test_a_results_log_that_fails_to_close_leaves_no_partial_file(tmp_path):
    """A full disk fails the flush in close(): the partial file stayed (the disk stayed full) and the
    error was a traceback; now it goes, and the error names the results log."""
    from fusion_rt.errors import LogError
    from fusion_rt.replay import _ResultsWriter

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def __getattr__(self, name):
            return getattr(self.file, name)

        def close(self):
            self.file.close()
            raise OSError(28, "No space left on device")

    path = tmp_path / "results.mcap"
    for complete in (True, False):
        writer = _ResultsWriter(path)
        writer._file = FullDisk(writer._file)
        if complete:
            with pytest.raises(LogError, match="results.mcap.*No space left"):
                writer.close(complete=True)
        else:
            writer.close(complete=False)  # dropped anyway: the replay's own error is the one to say
        assert list(tmp_path.iterdir()) == []


def test_json_text_writes_non_finite_numbers_as_null():
    """`quantize --json` printed `NaN` (not JSON) exactly when the package failed for non-finite outputs."""
    import json
    import math

    import numpy as np

    from fusion_rt.outputs import json_text

    value = {"cosine": math.nan, "max": math.inf, "rows": [1, -math.inf, (np.float32("nan"), 0.5)], "n": 3,
             "ok": True}
    text = json_text(value, indent=2, default=str)
    assert json.loads(text, parse_constant=pytest.fail) == {"cosine": None, "max": None,
                                                            "rows": [1, None, [None, 0.5]], "n": 3, "ok": True}


def test_console_does_not_wrap_when_not_a_terminal(monkeypatch):
    """Redirected output (a CI log, `> out.txt`) was hard-wrapped at 80 columns, mid-path."""
    import io

    from fusion_rt.outputs import console

    monkeypatch.delenv("COLUMNS", raising=False)
    c = console()
    c.file = io.StringIO()
    line = "long/" + "a_fairly_long_directory_name/" * 4 + "drive_0001.mcap: 1.0 s of driving, 1.0 MB"
    c.print(line)
    assert c.file.getvalue() == line + "\n"


def test_tables_written_to_a_file_keep_their_numbers(monkeypatch):
    # rich fitted tables to 80 columns off a terminal: bench's ratio table printed "0.9…" for 0.784.
    import io

    from rich.table import Table

    from fusion_rt.outputs import console

    monkeypatch.delenv("COLUMNS", raising=False)
    c = console()
    c.file = io.StringIO()
    table = Table()
    for col in ("ratio", "value", "budget", "verdict", "target"):
        table.add_column(col)
    table.add_row("critical_path_vs_stages_alone_and_a_long_name", "1.0123", "<= 1.1", "ok", "<= 1.05 not yet reached")
    table.add_row("int8_model_vs_fp32_model_in_one_process", "0.6970", "<= 0.8", "ok", "<= 0.5 not yet reached")
    c.print(table)
    text = c.file.getvalue()
    assert "1.0123" in text and "0.6970" in text and "…" not in text


def test_stdout_redirected_to_a_file_is_refused_not_replaced(tmp_path):
    # `--json /dev/stdout >> results.log`: /dev/stdout -> /proc/self/fd/1 -> results.log, and the atomic
    # rename replaced results.log (everything appended to it before was lost).
    from fusion_rt.errors import OutputError
    from fusion_rt.outputs import check_outputs, destination

    log = tmp_path / "results.log"
    log.write_text("earlier runs\n")
    with open(log, "a") as f:
        fd_path = f"/proc/self/fd/{f.fileno()}"
        link = tmp_path / "stdout"
        link.symlink_to(fd_path)
        for path in (fd_path, link):
            with pytest.raises(OutputError, match="open descriptor of the regular file"):
                destination(path)
            with pytest.raises(OutputError, match="give that file's name instead"):
                check_outputs(files={"--json": path})
    assert log.read_text() == "earlier runs\n"
    assert destination(tmp_path / "plain.json") == (tmp_path / "plain.json", False)
