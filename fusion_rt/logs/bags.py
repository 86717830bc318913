"""Open any recorded drive as one message source: an MCAP file or a ROS 2 bag directory.

`open_log(path)` returns a `LogSource`:

- an MCAP file: `LogReader` (defensive: CRCs, truncation, offsets of skipped records);
- a ROS 2 bag directory with ``.mcap`` storage: its ``.mcap`` files in split order, each through
  `LogReader` (issues are reported per file); compressed per message with zstd (``compression_mode:
  message`` in its metadata.yaml), each payload is decompressed before it is decoded, so publish
  times are kept as for a plain bag;
- a ROS 2 bag with ``.db3`` (sqlite3) storage, the directory or the ``.db3`` file, and any other bag
  that rosbag2 compressed (``compression_mode: file``, either storage, or ``message`` with sqlite3
  storage): through `rosbags` (the ``bags`` extra, imported only here and only then), which
  decompresses; CDR is decoded by rosbags' typestore (ROS 2 Humble types, plus every type the bag
  defines) and converted by the same `fusion_rt.logs.convert` functions as MCAP.

Every source lists its topics (`TopicInfo`, with PointCloud2 field names so radar clouds can be
told from lidar ones) and yields `LogMessage`s in log order.
"""

from __future__ import annotations

import itertools
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fusion_rt.errors import LogError, NotALogError
from fusion_rt.logs.convert import converter_for
from fusion_rt.logs.reader import LogMessage, LogReader, RawMessage, ReadIssue, schema_text
from fusion_rt.logs.schemas import POINT_CLOUD2, SCHEMAS, normalize_schema_name, schema_matches
from fusion_rt.logs.topics import TopicInfo
from fusion_rt.outputs import special_file

__all__ = ["LogSource", "McapSource", "Db3BagSource", "open_log", "log_sha256", "bag_metadata"]


class LogSource(ABC):
    """A recorded drive: its topics and its messages, plus what reading skipped."""

    path: str

    @abstractmethod
    def topics(self) -> list[TopicInfo]:
        """Every topic with its schema (and PointCloud2 field names, from the topic's first message)."""

    @abstractmethod
    def messages(self, topics: Iterable[str] | None = None) -> Iterator[LogMessage]:
        """Decoded messages of `topics` (None: all) in log order; damaged records are skipped, reported."""

    @property
    @abstractmethod
    def issues(self) -> list[ReadIssue]:
        """What the last `messages` pass skipped, with offsets and reasons."""

    @abstractmethod
    def stamps(self) -> Iterator[tuple[str, str, int]]:
        """(topic, schema name, log time) of every message, in log order, without decoding any."""

    @property
    def truncated_at(self) -> int | None:
        """Byte offset where the (last) file was cut, or None."""
        return None

    @property
    def duration_ns(self) -> int | None:
        """Time span of the messages when the log's index says it (None: unknown until read)."""
        return None

    def close(self) -> None:  # noqa: B027 (optional hook: sources without open files need none)
        """Release open files (idempotent)."""

    def __enter__(self) -> LogSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _topic_list(topics: Iterable[str] | str) -> list[str]:
    """Topic names; one name given as a plain string is one topic, not its characters."""
    return [topics] if isinstance(topics, str) else list(topics)


def _split_index(path: Path) -> tuple[int, str]:
    """rosbag2 split files are <name>_<n>.mcap: order by n, then by name."""
    match = re.search(r"_(\d+)$", path.stem)
    return (int(match.group(1)) if match else 0, path.name)


class McapSource(LogSource):
    """One MCAP file, or the ordered ``.mcap`` files of a rosbag2 directory."""

    def __init__(self, files: list[Path], path: str, payload_compression: str = "") -> None:
        self.path = path
        self._readers: list[LogReader] = []
        try:
            for f in files:  # NotALogError for anything that is not MCAP
                self._readers.append(LogReader(f, payload_compression=payload_compression))
        except BaseException:
            for reader in self._readers:  # the splits opened before the bad one
                reader.close()
            raise
        self._topics: list[TopicInfo] | None = None
        self._duration: int | None = None
        self._split_issues: list[ReadIssue] = []  # of the last pass: splits that overlap in time

    def topics(self) -> list[TopicInfo]:
        if self._topics is not None:
            return self._topics
        found: dict[str, TopicInfo] = {}
        starts, ends = [], []
        for reader in self._readers:
            summary = _official_summary(reader.path)
            channels: list[tuple[str, str]] = []
            stats = summary.statistics if summary is not None else None
            if stats is not None and stats.message_count:
                starts.append(stats.message_start_time)
                ends.append(stats.message_end_time)
            clouds: dict[str, tuple[str, ...] | None] = {}  # PointCloud2 field names, by topic
            if summary is not None and _channels_complete(summary):
                for channel in summary.channels.values():
                    schema = summary.schemas.get(channel.schema_id)
                    channels.append((channel.topic, normalize_schema_name(schema.name) if schema else ""))
            else:  # no usable index (a truncated log), or channels left out of it: one undecoded pass,
                # which also probes each cloud topic's first message and notes the first and last log time
                from mcap_ros2.decoder import DecoderFactory

                factory = DecoderFactory()
                seen: set[str] = set()
                need_span = not (stats is not None and stats.message_count)
                first = last = None
                for raw in reader.raw_messages():
                    if need_span:
                        t = raw.record.log_time
                        first = t if first is None or t < first else first
                        last = t if last is None or t > last else last
                    if raw.channel.topic not in seen:
                        seen.add(raw.channel.topic)
                        channels.append((raw.channel.topic, reader.schema_name(raw.channel)))
                        if channels[-1][1] == POINT_CLOUD2 and (probed := _probe_fields(reader, raw, factory)):
                            clouds[raw.channel.topic] = probed  # else `_cloud_fields` probes further
                if first is not None:
                    starts.append(first)
                    ends.append(last)
            # a split declares every topic; a cloud's fields come from the first split holding a message
            todo = [(t, s) for t, s in channels
                    if t not in found or (found[t].point_fields is None and s == POINT_CLOUD2)]
            clouds.update(_cloud_fields(reader, [t for t, s in todo if s == POINT_CLOUD2 and t not in clouds]))
            for topic, schema_name in todo:
                found[topic] = TopicInfo(topic, schema_name, clouds.get(topic))
        if starts and len(starts) == len(self._readers):
            self._duration = max(ends) - min(starts)
        self._topics = sorted(found.values(), key=lambda i: i.topic)
        return self._topics

    @property
    def duration_ns(self) -> int | None:
        self.topics()
        return self._duration

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[LogMessage]:
        wanted = None if topics is None else _topic_list(topics)
        order = _SplitOrder(self._split_issues)
        for reader in self._readers:
            order.start(reader)
            for message in reader.messages(topics=wanted):
                order.see(message.log_time_ns)
                yield message

    def stamps(self) -> Iterator[tuple[str, str, int]]:
        order = _SplitOrder(self._split_issues)
        for reader in self._readers:
            order.start(reader)
            for raw in reader.raw_messages():
                order.see(raw.record.log_time)
                yield raw.channel.topic, reader.schema_name(raw.channel), raw.record.log_time

    @property
    def readers(self) -> list[LogReader]:
        """The MCAP readers of the files, in split order (after `stamps`: their issues and state)."""
        return list(self._readers)

    @property
    def issues(self) -> list[ReadIssue]:
        if len(self._readers) == 1:
            return list(self._readers[0].issues)
        return [*(ReadIssue(i.offset, i.kind, f"{Path(r.path).name}: {i.detail}")
                  for r in self._readers for i in r.issues), *self._split_issues]

    @property
    def truncated_at(self) -> int | None:
        cuts = [r.truncated_at for r in self._readers if r.truncated_at is not None]
        return cuts[-1] if cuts else None

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


class _SplitOrder:
    """One pass's check that each split of a bag starts after the splits before it end, as rosbag2
    writes them. Splits that overlap (a folder holding several recordings, or copies of one) are
    still read in file order, so stamps jump back: said once per split as an `order` issue in
    `issues` (cleared at the start of the pass)."""

    def __init__(self, issues: list[ReadIssue]) -> None:
        issues.clear()
        self.issues = issues
        self.newest: int | None = None  # the latest log time read so far, every split
        self.before: int | None = None  # ... when the current split started
        self.name = ""
        self.said = False

    def start(self, reader: LogReader) -> None:
        self.before, self.name, self.said = self.newest, Path(reader.path).name, False

    def see(self, log_time: int) -> None:
        if not self.said and self.before is not None and log_time < self.before:
            self.said = True
            self.issues.append(ReadIssue(0, "order", (
                f"{self.name}: a message at log time {log_time} comes before the end of the splits read before it "
                f"({self.before}): the split files of one recording follow each other, so this folder holds "
                "several recordings (or copies of one), read one after the other")))
        if self.newest is None or log_time > self.newest:
            self.newest = log_time


def _channels_complete(summary: Any) -> bool:
    """Whether an official summary lists every channel that has messages. A writer may leave
    channels out (the `repeat_channels` option): the statistics and chunk indexes still name them."""
    ids = set(summary.statistics.channel_message_counts) if summary.statistics is not None else set()
    for index in summary.chunk_indexes:
        ids.update(index.message_index_offsets)
    return ids <= set(summary.channels) if ids else bool(summary.channels)


def _official_summary(path: str) -> Any:
    """The summary section through the official reader (None when absent or unreadable)."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            return make_reader(f).get_summary()
    except (McapError, OSError):
        return None
    except Exception:  # noqa: BLE001 (a damaged summary: LogReader reads the file without it)
        return None


#: How many messages of a PointCloud2 topic are probed for the first one that declares fields: a
#: driver may publish empty, default-constructed clouds (no fields) before its first detections.
FIELD_PROBES = 16


def _cloud_fields(reader: LogReader, topics: list[str]) -> dict[str, tuple[str, ...] | None]:
    """Field names of each PointCloud2 topic: those of its first message that declares any, in one
    pass that stops once every topic is settled (not one pass over the log per topic). A topic whose
    first `FIELD_PROBES` messages declare none (or do not decode) is None, as is one that has had
    a message but none with fields once 64 x `FIELD_PROBES` messages of these topics were read: a
    topic with a few empty clouds and nothing after them does not make the probe read every
    other cloud topic to the end of the log."""
    from mcap_ros2.decoder import DecoderFactory

    fields: dict[str, tuple[str, ...] | None] = {}
    probes: dict[str, int] = {}
    if not topics:
        return fields
    factory = DecoderFactory()
    read = 0
    for raw in reader.raw_messages(topics=topics):
        read += 1
        topic = raw.channel.topic
        if not fields.get(topic) and probes.get(topic, 0) < FIELD_PROBES:
            probes[topic] = probes.get(topic, 0) + 1
            fields[topic] = _probe_fields(reader, raw, factory) or None
        if all(fields.get(t) or probes.get(t, 0) >= (1 if read >= 64 * FIELD_PROBES else FIELD_PROBES)
               for t in topics):
            break
    return fields


def _probe_fields(reader: LogReader, raw: RawMessage, factory: Any) -> tuple[str, ...] | None:
    """The field names of one PointCloud2 message (None when it does not decode as one; () for a
    cloud that declares no fields)."""
    from mcap.records import Schema

    schema = reader.schema(raw.channel)
    if schema is None:
        return None
    text, assumed = schema_text(schema, POINT_CLOUD2)
    if assumed:
        schema = Schema(id=schema.id, name=schema.name, encoding=schema.encoding, data=text.encode())
    if not schema_matches(POINT_CLOUD2, text):
        return None
    try:
        decode = factory.decoder_for(raw.channel.message_encoding, schema)
        return tuple(f.name for f in decode(reader.payload(raw.record.data)).fields)
    except Exception:  # noqa: BLE001 (a probe: a cloud that does not decode is judged by its schema)
        return None


class Db3BagSource(LogSource):
    """A rosbag2 bag read with `rosbags` (the ``bags`` extra): sqlite3 (``.db3``) storage, and bags
    rosbag2 compressed per file (either storage) or per message in sqlite3 (rosbags decompresses).
    rosbags gives only the log (receive) time of a message: text is stamped with it."""

    def __init__(self, path: Path) -> None:
        from fusion_rt._optional import require

        rosbag2 = require("rosbags.rosbag2", purpose="reading .db3 ROS 2 bags")
        typesys = require("rosbags.typesys", purpose="reading .db3 ROS 2 bags")
        self.path = str(path)
        # A .db3 file beside its metadata.yaml is read as its bag; a lone one (copied out of its
        # bag) is opened directly, which rosbags supports.
        bag = path.parent if path.is_file() and (path.parent / "metadata.yaml").is_file() else path
        try:
            self._reader = rosbag2.Reader(bag)
            self._reader.open()
        except Exception as exc:  # rosbags raises its own ReaderError and sqlite3 errors
            raise NotALogError(f"{self.path!r} is not a readable ROS 2 bag: {exc}") from exc
        self._store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
        self._schema_issues: list[ReadIssue] = []
        for conn in self._reader.connections:
            if conn.msgtype in self._store.types:
                continue
            msgdef = getattr(conn, "msgdef", None)
            text = getattr(msgdef, "data", "") if msgdef is not None else ""
            # Bags recorded before ROS 2 Jazzy store no definitions: fusion-rt's own types (the radar
            # tensor, ground truth) are known here anyway.
            own = SCHEMAS.get(normalize_schema_name(conn.msgtype), "")
            if text and not schema_matches(conn.msgtype, text):
                self._schema_issues.append(ReadIssue(0, "schema", f"type {conn.msgtype} of {conn.topic!r} does not lay "
                                                                  f"out the wire as fusion-rt's (its fields differ)"))
                continue
            # fusion-rt's own text whole, every MSG: block: GroundTruth's Agent is defined only there
            for definition in (text, own):
                if not definition or conn.msgtype in self._store.types:
                    continue
                try:
                    types = typesys.get_types_from_msg(definition, conn.msgtype)
                    if definition is own:  # the standard types it repeats (Header, Time) are known already
                        types = {name: fields for name, fields in types.items() if name not in self._store.types}
                    self._store.register(types)
                except Exception as exc:  # noqa: BLE001 (a type we cannot parse: its topic is skipped)
                    self._schema_issues.append(ReadIssue(0, "schema", f"type {conn.msgtype} of {conn.topic!r}: "
                                                                      f"{exc}"))
            if conn.msgtype not in self._store.types and converter_for(conn.msgtype) is not None:
                self._schema_issues.append(ReadIssue(0, "schema", f"the bag has no definition of {conn.msgtype}: "
                                                                  f"messages on {conn.topic!r} cannot be decoded"))
        self._issues = list(self._schema_issues)

    def topics(self) -> list[TopicInfo]:
        out = []
        for conn in self._reader.connections:
            name = normalize_schema_name(conn.msgtype)
            fields = None
            if name == POINT_CLOUD2:  # the first message that declares fields, as for MCAP
                for _, _, raw in itertools.islice(self._reader.messages(connections=[conn]), FIELD_PROBES):
                    try:
                        fields = tuple(f.name for f in self._store.deserialize_cdr(raw, conn.msgtype).fields) or None
                    except Exception:  # noqa: BLE001 (a probe, as for MCAP)
                        fields = None
                    if fields:
                        break
            out.append(TopicInfo(conn.topic, name, fields))
        return sorted(out, key=lambda i: i.topic)

    @property
    def duration_ns(self) -> int | None:
        return int(self._reader.duration) if self._reader.message_count else None

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[LogMessage]:
        wanted = None if topics is None else set(_topic_list(topics))
        self._issues = list(self._schema_issues)  # what this pass skips, like LogReader's issues
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        routes = {c.id: converter_for(c.msgtype) for c in conns}
        for conn, stamp, raw in self._reader.messages(connections=conns):
            convert = routes.get(conn.id)
            if convert is None or conn.msgtype not in self._store.types:
                continue
            try:
                message = convert(self._store.deserialize_cdr(raw, conn.msgtype), int(stamp))
            except Exception as exc:  # noqa: BLE001 (a bad message is reported and skipped, as for MCAP)
                self._issues.append(ReadIssue(0, "decode", f"{conn.msgtype} on {conn.topic!r} at log time {stamp}: "
                                                           f"{type(exc).__name__}: {exc}"))
                continue
            yield LogMessage(conn.topic, normalize_schema_name(conn.msgtype), int(stamp), message)

    @property
    def issues(self) -> list[ReadIssue]:
        return list(self._issues)

    def stamps(self) -> Iterator[tuple[str, str, int]]:
        for conn, stamp, _raw in self._reader.messages():
            yield conn.topic, normalize_schema_name(conn.msgtype), int(stamp)

    def close(self) -> None:
        self._reader.close()


def log_sha256(path: str | os.PathLike) -> str:
    """sha256 of a log: of the file, or for a bag directory of its files' names and hashes in name order."""
    import hashlib

    from fusion_rt.package import sha256_file

    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    digest = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        digest.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def bag_metadata(directory: Path) -> dict[str, Any]:
    """What a rosbag2 directory's metadata.yaml says of its storage: ``storage_identifier``,
    ``compression_mode``, ``compression_format`` (lower case, "" when absent) and
    ``relative_file_paths`` (a list, empty when absent). No file, or one that cannot be read: all empty.

    Read with line patterns, not a YAML parser: rosbag2 writes each key on a line of its own (the
    list one item a line), and the file stays data (nothing in it is evaluated)."""
    meta = Path(directory) / "metadata.yaml"
    try:
        text = meta.read_text(encoding="utf-8", errors="replace") if meta.is_file() else ""
    except OSError:
        text = ""
    out: dict[str, Any] = {}
    for key in ("storage_identifier", "compression_mode", "compression_format"):
        match = re.search(rf"^\s*{key}:[ \t]*['\"]?([A-Za-z0-9_]*)", text, flags=re.M)
        out[key] = match.group(1).lower() if match else ""
    if out["compression_mode"] == "none":
        out["compression_mode"] = ""
    paths: list[str] = []
    match = re.search(r"^\s*relative_file_paths:[ \t]*(\[[^\]\n]*\])?[ \t]*$", text, flags=re.M)
    if match and match.group(1):  # the flow form: [a.mcap, b.mcap]
        paths = [item.strip().strip("'\"") for item in match.group(1)[1:-1].split(",") if item.strip()]
    elif match:  # the block form: one "- name" a line
        for line in text[match.end():].splitlines()[1:]:
            item = re.match(r"^\s*-\s*(.+?)\s*$", line)
            if item is None:
                break
            paths.append(item.group(1).strip("'\""))
    out["relative_file_paths"] = paths
    return out


def _zstd_per_message(meta: dict[str, Any]) -> bool:
    """Whether a bag's metadata (`bag_metadata`) says rosbag2 compressed each message with zstd."""
    return meta["compression_mode"] == "message" and meta["compression_format"] == "zstd"


def open_log(path: str | os.PathLike) -> LogSource:
    """A `LogSource` for an MCAP file, a rosbag2 directory (mcap or sqlite3 storage) or a ``.db3`` file.

    Raises `NotALogError` (one clear line) for anything else, a pipe or FIFO included (it would read
    as an empty log, and cannot be read twice).
    """
    p = Path(path)
    if not p.exists():
        raise NotALogError(f"{str(p)!r} does not exist")
    if p.is_dir():
        meta = bag_metadata(p)
        mcaps = sorted(p.glob("*.mcap"), key=_split_index)
        if mcaps and _zstd_per_message(meta):  # read as MCAP, each payload decompressed: publish times kept
            return McapSource(mcaps, str(p), payload_compression="zstd")
        # A compressed bag (each file zstd-compressed by rosbag2, or sqlite3 storage compressed per
        # message): its payloads are not CDR as stored, so it is read through rosbags, which decompresses.
        if meta["compression_mode"] or any(p.glob("*.mcap.zstd")) or any(p.glob("*.db3.zstd")):
            return Db3BagSource(p)
        if mcaps:
            return McapSource(mcaps, str(p))
        if any(p.glob("*.db3")):
            return Db3BagSource(p)
        raise NotALogError(f"{str(p)!r} is a directory without .mcap or .db3 files (or their rosbag2-compressed "
                           f".zstd forms), not a ROS 2 bag")
    kind = special_file(p)  # `<(zstdcat drive.mcap.zst)`: refused before anything opens (and blocks on) it
    if kind is not None:
        raise NotALogError(f"{str(p)!r} is {kind}, not a file: write it to a file first")
    meta = bag_metadata(p.parent) if p.suffix == ".mcap" else None  # one .mcap of a bag, maybe compressed
    if meta is not None and _zstd_per_message(meta):
        return McapSource([p], str(p), payload_compression="zstd")  # one .mcap of a message-compressed bag
    if p.suffix == ".db3" or (meta is not None and meta["compression_mode"]):
        return Db3BagSource(p)  # a .db3, or one .mcap of a compressed bag: its payloads are not CDR as stored
    try:
        return McapSource([p], str(p))
    except NotALogError:
        raise
    except OSError as exc:
        raise LogError(f"cannot read {str(p)!r}: {exc}") from exc
