"""What a command writes: checked before any work, and written atomically.

`check_outputs` refuses, before anything is computed, an output that is a directory where a file
is wanted (or the reverse), whose folder is missing or not writable, that two outputs share, or
that would overwrite or land inside one of the command's inputs (a log, a bag directory, a run or
a package). `atomic_output` writes next to the destination and renames into place on success, so
a failed or interrupted command leaves the previous file (or none), never a half-written one;
`staged_dir` does the same for a folder (a model package). A symlinked destination is followed: its
target is replaced and the link kept. A destination that is not a file at all (`/dev/null`, a FIFO,
`/dev/stdout` to a pipe) is written in place, never renamed over (as root that would turn
/dev/null into a regular file for every process). `json_text` writes non-finite floats as null.
`printable` and `console` keep what a log or package says (topic names, a package name, a
ground-truth condition) from steering the terminal it is printed to.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from fusion_rt.errors import OutputError

__all__ = ["check_outputs", "atomic_output", "partial_path", "destination", "special_file", "writes_stdout",
           "write_text", "staged_dir", "json_text", "with_tell", "printable", "console"]

# C0/C1 control characters (ESC: colours, OSC 52 clipboard writes, OSC 8 links, titles), line and
# paragraph separators, and bidirectional overrides (text that reads differently than it is)
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: object, keep_newlines: bool = False) -> str:
    """`str(text)` safe to print on a terminal: control characters, separators and bidi overrides
    become their escapes (`\\x1b`, `\\u202e`); tabs stay, and newlines with `keep_newlines` (a
    multi-line message of our own; one-line contexts escape them)."""
    kept = "\n" if keep_newlines else ""
    return _UNPRINTABLE.sub(lambda m: m.group() if m.group() == kept else ascii(m.group())[1:-1], str(text))


_PIPE_WIDTH = 200  # columns for tables written to a file or a CI log: whole rows, numbers never cut


def console(stderr: bool = False):
    """A rich Console for tables and summaries that may hold strings from logs and packages: no
    markup (a name like "x[/]" would crash the print, "[link=...]" plant a hidden link), no
    highlighting, and every string passed through `printable`. Style with `rich.text.Text`. Not on a
    terminal (a CI log, `> out.txt`) and without COLUMNS, lines are written whole, not wrapped at 80
    columns mid-path, and tables get `_PIPE_WIDTH` columns instead of being squeezed into 80."""
    from rich.console import Console

    class _Console(Console):
        def render_str(self, text: str, **kwargs):
            return super().render_str(printable(text, keep_newlines=True), **kwargs)

        def on_broken_pipe(self) -> None:  # rich's exits 1 quietly: raised, the CLI exits 141 as for any print
            self.quiet = True
            raise BrokenPipeError("the reader of the output went away")

    c = _Console(stderr=stderr, markup=False, highlight=False, emoji=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:  # rich would fit tables to 80 columns: "0.9…"
        c.width, c.soft_wrap = _PIPE_WIDTH, True
    return c


def json_text(value: object, **kwargs) -> str:
    """`json.dumps(value, **kwargs)` with non-finite floats (NaN, +-inf) written as null: Python's
    `NaN` is not JSON, and jq, JavaScript and strict parsers refuse the whole document."""
    def finite(v: object) -> object:
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and not math.isfinite(v):
            return None
        return v

    return json.dumps(finite(value), allow_nan=False, **kwargs)


_SPECIAL = ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def special_file(path: str | os.PathLike) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder ("a pipe": a FIFO or
    a shell's `<(...)`, "a socket", "a character device", "a block device"); None otherwise. Links
    are followed, so `/dev/stdout` is what it points to."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((what for test, what in _SPECIAL if test(mode)), None)


class _Counted:
    """A write-only file that cannot seek (a pipe, a terminal), with a `tell` that counts the bytes
    written: the mcap writer records offsets with `tell`."""

    def __init__(self, file) -> None:
        self._file, self._written = file, 0

    def write(self, data) -> int:
        written = self._file.write(data)
        self._written += len(data)
        return written

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


def with_tell(file):
    """`file` itself, or for one that cannot seek (written in place, see `destination`) a wrapper whose
    `tell` counts what was written."""
    return file if file.seekable() else _Counted(file)


def _through_fd(path: Path) -> bool:
    """Whether `path` reaches its file through a process's open file descriptor (`/dev/stdout`,
    `/dev/fd/N`, `/proc/self/fd/N`): a link into /proc/<pid>/fd, not a name of the file."""
    seen = 0
    while True:
        if str(path).startswith("/proc/") and "/fd/" in str(path):
            return True
        if not path.is_symlink() or seen > 40:
            return False
        path = Path(os.path.join(path.parent, os.readlink(path)))
        seen += 1


def writes_stdout(path: str | os.PathLike | None) -> bool:
    """Whether writing `path` writes this process's standard output (`/dev/stdout` piped on): text
    for the terminal must then go to stderr, or it lands inside the file written there."""
    if path is None:
        return False
    try:
        st, out = os.stat(path), os.fstat(1)
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino)


def destination(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where an output for `path` goes: (the path to replace, whether to write it in place). A
    symlink gives its target (replaced, the link kept); a device, FIFO or socket is written in place
    (True): renaming over it would replace the device node or the link, not write through it. A
    regular file reached through an open descriptor (`/dev/stdout` redirected to a file) is refused:
    replacing it would not write the descriptor, and writing it in place would truncate what
    `>> file` had appended."""
    final = Path(path)
    if special_file(final) is not None:
        return final, True
    if _through_fd(final) and final.exists():
        raise OutputError(f"{str(final)!r} is an open descriptor of the regular file {str(final.resolve())!r} "
                          f"(standard output redirected to a file?): give that file's name instead")
    return (final.resolve() if final.is_symlink() else final), False


def _overlap(output: Path, source: Path, output_is_dir: bool) -> bool:
    """Whether writing `output` could touch `source`: the same path, `output` inside `source`, or an
    output folder holding `source`."""
    return output == source or source in output.parents or (output_is_dir and output in source.parents)


def check_outputs(files: Mapping[str, str | os.PathLike | None] = {},  # noqa: B006 (read only)
                  dirs: Mapping[str, str | os.PathLike | None] = {},  # noqa: B006
                  inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse unusable outputs before any work. `files` and `dirs` map a name for the message
    (e.g. "--json") to a path (None: not requested); `inputs` are what the command reads."""
    sources = [(str(p), Path(p).resolve()) for p in inputs if p is not None]
    seen: dict[Path, str] = {}
    for what, path, is_dir in [*((w, p, False) for w, p in files.items()), *((w, p, True) for w, p in dirs.items())]:
        if path is None:
            continue
        p = Path(path)
        # `destination` refuses /dev/stdout redirected to a file (its content would be lost); /dev/null or
        # a FIFO is written in place (atomic_output)
        if not is_dir and p.exists() and destination(p)[1]:
            if not os.access(p, os.W_OK):
                raise OutputError(f"{what} {str(p)!r} is not writable")
            target = Path(os.path.abspath(p))
            if target in seen:
                raise OutputError(f"{what} and {seen[target]} are the same path {str(p)!r}")
            seen[target] = what
            continue
        if not is_dir and p.is_dir():
            raise OutputError(f"{what} {str(p)!r} is a directory; give a file name")
        if is_dir and p.exists() and not p.is_dir():
            raise OutputError(f"{what} {str(p)!r} is a file; give a folder name")
        target = p.resolve()
        parent = target.parent
        if is_dir:  # an output folder's missing parents are created: the nearest existing one counts
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{what} {str(p)!r} cannot be created: {str(parent)!r} is a file, not a folder")
        if not parent.is_dir():
            raise OutputError(f"the folder of {what} {str(p)!r} does not exist ({str(parent)!r})")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"the folder of {what} {str(p)!r} is not writable ({str(parent)!r})")
        for name, source in sources:
            if _overlap(target, source, is_dir):
                raise OutputError(f"{what} {str(p)!r} would overwrite the input {name!r}; write elsewhere")
        if target in seen:
            raise OutputError(f"{what} and {seen[target]} are the same path {str(p)!r}")
        seen[target] = what


def partial_path(final: str | os.PathLike) -> Path:
    """A temporary name beside `final`, this writer's alone (two processes writing one file, such as
    two runs filling a shared cache, must not share a temporary file: the first rename would take
    the other's, and the second fail)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (`partial_path`) to write; it replaces `path` when the
    block succeeds and is removed when it fails. OSError while writing becomes an OutputError
    naming `path`. A symlink's target is replaced; a device or FIFO is yielded itself (`destination`)."""
    final, in_place = destination(path)
    tmp = final if in_place else partial_path(final)
    try:
        yield tmp
        if not in_place:
            os.replace(tmp, final)
    except BrokenPipeError:  # the reader of a pipe went away: the CLI exits 141, as for any print
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    finally:
        if not in_place and tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (see `atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def staged_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `path` to build in; when the block succeeds it takes the place of
    `path` (an existing non-empty `path` only with `overwrite`), and when it fails it is removed and
    `path` is left as it was. A symlinked `path` keeps its link: the folder it points to is replaced."""
    final = Path(path)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
        raise OutputError(f"output folder {str(final)!r} exists and is not empty (pass --overwrite to replace it)")
    if final.is_symlink():
        final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.name}.partial-", dir=final.parent) as tmp:
        staging = Path(tmp) / final.name
        staging.mkdir()
        yield staging
        if final.is_dir():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(staging, final)
