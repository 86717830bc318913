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
