"""`log_info`: what a log holds, like ``ros2 bag info``, without decoding any message.

Counts and times come from the message records themselves (CRC-checked, read front to back), not
from the summary section, so a truncated or damaged log is described as it actually reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusion_rt.errors import NotALogError
from fusion_rt.logs.reader import LogReader
from fusion_rt.outputs import printable

__all__ = ["log_info", "format_info"]

_NS = 1_000_000_000


def log_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of a log as a JSON-ready dict.

    Keys: path, file_size, profile, compression, message_count, start_ns, end_ns, duration_ns
    (None when empty), topics (topic -> schema, count, first_ns, last_ns, rate_hz), metadata
    names, issues (offset, kind, detail), truncated_at, complete. Stamps are MCAP log times,
    which fusion-rt writes equal to the header stamps. A ROS 2 bag (a directory of .mcap splits
    or .db3 storage, or a .db3 file) is described as one log: sizes summed, splits in order, and
    its compression says the storage and what rosbag2 compressed ("mcap storage, zstd per message").
    """
    p = Path(path)
    if not p.exists():  # as open_log says it (LogReader's "not an MCAP log: No such file" read as damage)
        raise NotALogError(f"{str(p)!r} does not exist")
    if p.is_dir() or p.suffix == ".db3":
        return _bag_info(p)
    with LogReader(path) as reader:
        topics = _count((raw.channel.topic, reader.schema_name(raw.channel), raw.record.log_time)
                        for raw in reader.raw_messages())
        return {
            "path": reader.path,
            "file_size": reader.file_size,
            "profile": reader.profile,
            "compression": ",".join(sorted(reader.compressions)) or "none",
            **_span(topics),
            "metadata": sorted(reader.metadata),
            "issues": [{"offset": i.offset, "kind": i.kind, "detail": i.detail} for i in reader.issues],
            "truncated_at": reader.truncated_at,
            "complete": reader.complete,
        }


def _bag_info(path: Path) -> dict[str, Any]:
    from fusion_rt.logs.bags import McapSource, bag_metadata, open_log

    meta = bag_metadata(path if path.is_dir() else path.parent)
    with open_log(path) as source:
        topics = _count(source.stamps())
        readers = source.readers if isinstance(source, McapSource) else []
        return {
            "path": str(path),
            "file_size": sum(f.stat().st_size for f in _bag_files(path, meta)),
            "profile": "ros2",
            "compression": _bag_storage(meta, path, readers),
            **_span(topics),
            "metadata": sorted({m for r in readers for m in r.metadata}),
            "issues": [{"offset": i.offset, "kind": i.kind, "detail": i.detail} for i in source.issues],
            "truncated_at": source.truncated_at,
            "complete": all(r.complete for r in readers),
        }


def _bag_files(path: Path, meta: dict[str, Any]) -> list[Path]:
    """The files of a bag: those its metadata.yaml (`meta`) lists (inside the bag), or every file in it
    but metadata.yaml when it lists none (a .db3.zstd or .mcap.zstd of a file-compressed bag counts too)."""
    if path.is_file():
        return [path]
    root = path.resolve()
    listed = [path / name for name in meta["relative_file_paths"]]
    listed = [f for f in listed if f.is_file() and root in f.resolve().parents]
    return listed or sorted(f for f in path.iterdir() if f.is_file() and f.name != "metadata.yaml")


def _bag_storage(meta: dict[str, Any], path: Path, readers: list[LogReader]) -> str:
    """Storage and compression of a bag, e.g. "mcap storage, zstd per message", "sqlite3 storage, zstd
    per file", "mcap storage, zstd chunks": from metadata.yaml, the storage from the files without it."""
    storage = meta["storage_identifier"]
    if not storage:
        names = [path.name] if path.is_file() else [f.name for f in path.iterdir()]
        storage = "mcap" if any(".mcap" in n for n in names) else "sqlite3"
    parts = [f"{storage} storage"]
    if meta["compression_mode"]:
        parts.append(f"{meta['compression_format'] or 'unknown format'} per {meta['compression_mode']}")
    chunks = sorted({c for r in readers for c in r.compressions if c and c != "none"})
    if chunks:
        parts.append(f"{','.join(chunks)} chunks")
    return ", ".join(parts)


def _count(stamps) -> dict[str, dict[str, Any]]:
    """Per topic: schema, count, first and last log time, rate."""
    topics: dict[str, dict[str, Any]] = {}
    for topic, schema, t in stamps:
        entry = topics.get(topic)
        if entry is None:
            topics[topic] = {"schema": schema, "count": 1, "first_ns": t, "last_ns": t}
        else:
            entry["count"] += 1
            entry["first_ns"] = min(entry["first_ns"], t)
            entry["last_ns"] = max(entry["last_ns"], t)
    for entry in topics.values():
        span = entry["last_ns"] - entry["first_ns"]
        entry["rate_hz"] = (entry["count"] - 1) * _NS / span if entry["count"] > 1 and span > 0 else None
    return dict(sorted(topics.items()))


def _span(topics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    start = min((e["first_ns"] for e in topics.values()), default=None)
    end = max((e["last_ns"] for e in topics.values()), default=None)
    return {"message_count": sum(e["count"] for e in topics.values()), "start_ns": start, "end_ns": end,
            "duration_ns": None if start is None else end - start, "topics": topics}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _seconds(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / _NS:.3f} s"


def format_info(info: dict[str, Any]) -> str:
    """`log_info` output as a plain-text report with one table row per topic. Names from the log
    (topics, types, metadata, issue details) are made `printable`: a log cannot steer the terminal."""
    lines = [
        f"File:         {printable(info['path'])}",
        f"Size:         {_size(info['file_size'])}",
        f"Profile:      {info['profile'] or '-'}",
        f"Compression:  {info['compression']}",
        f"Duration:     {_seconds(info['duration_ns'])}",
        f"Start:        {_seconds(info['start_ns'])} ({info['start_ns']} ns)",
        f"End:          {_seconds(info['end_ns'])} ({info['end_ns']} ns)",
        f"Messages:     {info['message_count']}",
        f"Metadata:     {printable(', '.join(info['metadata'])) or '-'}",
    ]
    if info["truncated_at"] is not None:
        lines.append(f"Truncated at: byte {info['truncated_at']}")
    header = ("Topic", "Type", "Count", "Rate (Hz)", "First (s)", "Last (s)")
    rows = [(printable(topic), printable(e["schema"] or "?"), str(e["count"]),
             "-" if e["rate_hz"] is None else f"{e['rate_hz']:.2f}", f"{e['first_ns'] / _NS:.3f}",
             f"{e['last_ns'] / _NS:.3f}") for topic, e in info["topics"].items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("")
    for i, row in enumerate([header, *rows]):
        lines.append("  ".join(cell.rjust(w) if 2 <= j else cell.ljust(w)
                               for j, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    issues = info["issues"]
    lines.append("")
    lines.append(f"Issues:       {len(issues) or 'none'}")
    for issue in issues:
        lines.append(f"  @{issue['offset']} {issue['kind']}: {printable(issue['detail'])}")
    return "\n".join(lines)
