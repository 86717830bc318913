"""`LogReader`: a defensive sequential MCAP reader that decodes to `fusion_rt.messages`.

The official `mcap` readers stop at the first bad record; replay and training want every good
message of a damaged log and a list of what was lost. This module hand-writes only the top-level
record loop and reuses `mcap.records` to parse records and `mcap_ros2.decoder.DecoderFactory` to
decode CDR. The file is read front to back, so logs without a summary section (a recorder that
was killed) read too; messages come out in log-time order all the same (each chunk is sorted; a
file whose chunks overlap in time, which MCAP allows, is merged through its chunk indexes, reading
chunks in the order of their start times, or, without a summary, through the start times the chunk
records' own headers state, read without decompressing anything: `reordered`).

What it guarantees (DESIGN.md sections 6 and 8):

- Chunk CRCs are checked (and the data-section CRC where the writer stored one). A chunk that
  fails its CRC, its decompression or its parse is reported with its file offset and skipped as a
  whole; reading goes on with the next record. No altered data is passed on.
- A chunk whose declared uncompressed size exceeds `max_chunk_bytes` is refused before anything
  is decompressed, and no decompressor may produce more than the declared size. Every record
  length is checked against the bytes left in the file (and `max_record_bytes`) before it is read.
- A truncated file yields every complete message before the cut and sets `truncated_at`: those
  of the chunk the file ends in too, decompressed as far as its data goes (no CRC covers them).
- A file that is not MCAP at all raises `NotALogError`.
- A message that decodes but does not convert (a radar tensor of the wrong size...) is reported
  with its offset and topic and skipped. Channels whose schema has no converter are counted in
  `unknown_counts` and skipped.

Offsets in issues are file offsets of the top-level record (for a message inside a chunk: the
chunk's offset, with the record's position inside the decompressed chunk in the detail).
"""

from __future__ import annotations

import heapq
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from types import TracebackType
from typing import IO, Any

import lz4.frame
import zstandard
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, ChunkIndex, DataEnd, Footer, Header, Message, Metadata, Schema
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap_ros2.decoder import DecoderFactory

from fusion_rt.errors import ConfigError, LogError, NotALogError
from fusion_rt.logs.convert import Converter, converter_for
from fusion_rt.logs.schemas import SCHEMAS, byte_view_schema, normalize_schema_name, schema_matches
from fusion_rt.messages import Message as FusionMessage

__all__ = ["LogReader", "LogMessage", "RawMessage", "ReadIssue", "MCAP_MAGIC", "NOTE_KINDS", "schema_text"]

MCAP_MAGIC = b"\x89MCAP0\r\n"
#: ReadIssue kinds that cost no message: a schema without text decoded as the standard type
#: (`schema_assumed`), a message let out of log-time order by a wrong chunk start time (`order`).
NOTE_KINDS = frozenset({"schema_assumed", "order"})
_RECORD_HEAD = struct.Struct("<BQ")  # opcode, length
_MESSAGE_HEAD = struct.Struct("<HIQ")  # channel id, sequence, log time (start of a Message body)
_FOOTER_BYTES = 9 + 20 + len(MCAP_MAGIC)
_MIB = 1 << 20
_ZERO_TAIL_MIN = 64 << 10  # zeros ending an unfinished file, at least: a preallocated or lost tail
_RUN_BYTES = _MIB  # top-level Message records (an unchunked log) are merged in runs of about this size

# Exceptions a CDR decoder or a converter raises on a payload that does not fit its schema.
_DECODE_ERRORS = (struct.error, ValueError, IndexError, KeyError, TypeError, AttributeError,
                  NotImplementedError, RuntimeError, OverflowError, McapError)
try:  # the msg-definition parser that mcap_ros2 vendors raises its own types (and NameError) on bad text
    from mcap_ros2._vendor.rosidl_adapter.parser import InvalidSpecification, InvalidValue
    _SCHEMA_ERRORS: tuple[type[Exception], ...] = (*_DECODE_ERRORS, NameError, InvalidSpecification, InvalidValue)
except ImportError:  # another mcap_ros2 layout: its parser errors are then not known by type
    _SCHEMA_ERRORS = (*_DECODE_ERRORS, NameError)


class _ShortRead(Exception):
    """A record's fields run past the end of its bytes."""


class _StrictStream(ReadDataStream):
    """A `ReadDataStream` that refuses short reads (the base class returns whatever is left)."""

    def read(self, length: int) -> bytes:
        if length < 0:
            raise _ShortRead(f"negative length {length}")
        if length > sys.maxsize:  # a damaged length field: no stream holds it (BytesIO would raise OverflowError)
            raise _ShortRead(f"needed {length} bytes")
        data = super().read(length) if length else b""
        if len(data) != length:
            raise _ShortRead(f"needed {length} bytes, {len(data)} left")
        return data


@dataclass(frozen=True)
class ReadIssue:
    """Something the reader skipped: where (file offset), what kind, and why."""

    offset: int
    kind: str  # truncated | chunk_crc | chunk_decompress | chunk_too_large | chunk_parse | record_parse |
    #            record_too_large | data_crc | summary | decode | schema | unknown_channel | bad_magic |
    #            schema_assumed (no definition stored: the standard one used; nothing skipped)
    detail: str


@dataclass(frozen=True, slots=True)
class LogMessage:
    """One decoded message: its topic, schema name, MCAP log time and the fusion-rt message."""

    topic: str
    schema_name: str
    log_time_ns: int
    message: FusionMessage


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One undecoded message record (what `LogReader.raw_messages` yields, e.g. for `log_info`)."""

    channel: Channel
    record: Message
    offset: int  # file offset of the record, or of the chunk that holds it


@dataclass
class _Summary:
    """What the summary section says, used only to skip chunks nobody asked for."""

    schemas: dict[int, Schema] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    chunks: dict[int, ChunkIndex] = field(default_factory=dict)  # by chunk start offset


@dataclass
class _Route:
    """How messages of one channel are decoded (None decoder: unknown type, counted and skipped)."""

    channel: Channel
    schema_name: str
    decode: Callable[[bytes], Any] | None
    convert: Converter | None


class LogReader:
    """Read an MCAP log defensively (see the module docstring); a context manager.

    max_chunk_bytes: largest declared uncompressed chunk size that will be decompressed
        (256 MiB; mcap writers default to 1 MiB chunks, a bigger one is almost surely damage).
    max_record_bytes: largest record that will be loaded (1 GiB); bigger ones are reported, skipped.
    payload_compression: "zstd" for the .mcap of a bag rosbag2 compressed per message (each payload
        one zstd frame, decompressed up to `max_record_bytes` before it is decoded); "" (default): CDR.
    After (or during) each pass, `issues`, `truncated_at`, `unknown_counts`, `metadata` and
    `compressions` describe that pass.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_chunk_bytes: int = 256 * _MIB,
                 max_record_bytes: int = 1024 * _MIB, payload_compression: str = "") -> None:
        for name, value in (("max_chunk_bytes", max_chunk_bytes), ("max_record_bytes", max_record_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of bytes, got {value!r}")
        if payload_compression not in ("", "zstd"):
            raise ConfigError(f"payload_compression must be '' or 'zstd', got {payload_compression!r}")
        self.payload_compression = payload_compression
        self._zstd = zstandard.ZstdDecompressor() if payload_compression == "zstd" else None
        self.path = os.fspath(path)
        self.max_chunk_bytes = max_chunk_bytes
        self.max_record_bytes = max_record_bytes
        from fusion_rt.outputs import special_file

        kind = special_file(self.path)  # before open: a FIFO without a writer would block it for ever
        if kind is not None:  # a pipe has no size (it read as an empty log) and cannot be read twice
            raise NotALogError(f"{self.path!r} is {kind}, not a file: write it to a file first")
        try:
            self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotALogError(f"{self.path!r} is not an MCAP log: {exc.strerror}") from exc
        except OSError as exc:
            raise LogError(f"cannot open log {self.path!r}: {exc.strerror or exc}") from exc
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            magic = self._file.read(len(MCAP_MAGIC))
        except OSError as exc:  # e.g. reading a directory on some platforms
            self._file.close()
            raise NotALogError(f"{self.path!r} is not an MCAP log: {exc.strerror or exc}") from exc
        if magic != MCAP_MAGIC:
            self._file.close()
            what = "it is empty" if not magic else f"it starts with {magic[:8]!r}, not the MCAP magic"
            raise NotALogError(f"{self.path!r} is not an MCAP log: {what}")
        self._summary: _Summary | None | bool = False  # False: not looked for yet
        self._order: str | None = None  # how `_ordered` reads this file (`_read_order`), once decided
        self._summary_issues: list[ReadIssue] = []
        self._reset()

    # --- public API ------------------------------------------------------------------------------

    @property
    def file_size(self) -> int:
        return self._size

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[LogMessage]:
        """Decoded messages in log-time order (ties in file order), optionally only on `topics` and
        with log time in [start_ns, end_ns) (end exclusive, as in `mcap`). Skips and reports what
        cannot be read.
        """
        wanted = None if topics is None else frozenset([topics] if isinstance(topics, str) else topics)
        factory = DecoderFactory()
        routes: dict[int, _Route] = {}
        for raw in self._ordered(wanted, start_ns, end_ns):
            channel, record = raw.channel, raw.record
            route = routes.get(channel.id)
            if route is None or route.channel is not channel:
                route = routes[channel.id] = self._route(channel, factory, raw.offset)
            if route.decode is None or route.convert is None:
                self.unknown_counts[channel.topic] = self.unknown_counts.get(channel.topic, 0) + 1
                continue
            try:
                # header-less messages (String) take the publish time: the sender's stamp, which
                # LogWriter stores there when the log time is a (late) receive time
                message = route.convert(route.decode(self.payload(record.data)),
                                        record.publish_time or record.log_time)
            except (*_DECODE_ERRORS, zstandard.ZstdError) as exc:
                self._issue(raw.offset, "decode", f"{route.schema_name} message on {channel.topic!r} at log time "
                                                  f"{record.log_time}: {type(exc).__name__}: {exc}")
                continue
            yield LogMessage(channel.topic, route.schema_name, record.log_time, message)

    def raw_messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                     end_ns: int | None = None) -> Iterator[RawMessage]:
        """Undecoded message records with their channel (CRC-checked, nothing converted), in log-time order."""
        wanted = None if topics is None else frozenset([topics] if isinstance(topics, str) else topics)
        yield from self._ordered(wanted, start_ns, end_ns)

    def payload(self, data: bytes) -> bytes:
        """A message record's data as CDR: zstd-decompressed for `payload_compression` "zstd".
        Raises ValueError (a frame declaring more than `max_record_bytes`) or zstandard.ZstdError."""
        if self._zstd is None:
            return data
        declared = zstandard.frame_content_size(data)
        if declared > self.max_record_bytes:
            raise ValueError(f"zstd payload declares {declared} bytes, over max_record_bytes "
                             f"({self.max_record_bytes})")
        return self._zstd.decompress(data, max_output_size=self.max_record_bytes)

    def schema(self, channel: Channel) -> Schema | None:
        """A channel's schema record as read so far (None when it has none)."""
        return self._schemas.get(channel.schema_id)

    def schema_name(self, channel: Channel) -> str:
        """The `pkg/msg/Type` name of a channel's schema ("" when it has none)."""
        schema = self.schema(channel)
        return "" if schema is None else normalize_schema_name(schema.name)

    def read_metadata(self) -> dict[str, dict[str, str]]:
        """The log's metadata records (name -> string map), found without decompressing chunks."""
        for _ in self._scan(frozenset(), None, None):
            pass
        return dict(self.metadata)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- the record loop -------------------------------------------------------------------------

    def _ordered(self, wanted: frozenset[str] | None, start_ns: int | None,
                 end_ns: int | None) -> Iterator[RawMessage]:
        """`_scan`'s messages in log-time order, ties in file order (the official reader's
        `log_time_order`). MCAP does not require a file to be in log-time order (a writer may group
        messages by topic): each chunk is sorted as it is read; when the chunk indexes overlap in
        time, chunks are merged by them (`_merged`: a file grouped by topic holds about one chunk
        per topic at a time). Without chunk indexes (no summary: a killed recorder), the records are
        merged in file order by the start times their own headers state (`_record_starts`, nothing
        decompressed for it): a late message holds back the chunks between, not the file. When time
        goes back, `reordered` is set."""
        if self._file.closed:
            raise LogError(f"log {self.path!r} is closed; open a new LogReader")
        summary = self._load_summary()
        order = self._read_order(summary)
        if order == "scan":
            yield from self._scan(wanted, start_ns, end_ns)
        elif order == "index":
            yield from self._merged(summary, wanted, start_ns, end_ns)
        elif order == "indexed_file_order":
            yield from self._merged_in_file_order({pos: index.message_start_time for pos, index in
                                                   summary.chunks.items()}, wanted, start_ns, end_ns)
        else:
            yield from self._merged_in_file_order(self._record_starts(summary), wanted, start_ns, end_ns)

    def _read_order(self, summary: _Summary | None) -> str:
        """How this file's messages come out in log-time order, decided once per reader (it depends on
        the summary and the file only): "scan" (indexed chunks in file order that never overlap in time),
        "index" (overlapping, every chunk readable through its index: `_merged`), "indexed_file_order"
        (overlapping, merged in file order by the index's start times), "headers" (no chunk index)."""
        if self._order is None:
            in_order = _chunks_in_order(summary)
            if in_order:
                self._order = "scan"
            elif in_order is None:
                self._order = "headers"
            else:
                self._order = "index" if self._indexed_chunks_readable(summary) else "indexed_file_order"
        return self._order

    def _merged(self, summary: _Summary, wanted: frozenset[str] | None, start_ns: int | None,
                end_ns: int | None) -> Iterator[RawMessage]:
        """Messages of a log whose indexed chunks overlap in time, merged into log-time order.

        Where the summary describes every chunk fully (its record found at the indexed offset, its
        channels and schemas in the summary), the chunks are read in the order of their start times,
        as the official reader does: a chunk is decompressed only once the merge reaches its start,
        so a file grouped by topic holds about one chunk per topic, not the file (`_read_order` chose
        this only where `_indexed_chunks_readable`)."""
        want = _want(wanted)
        # the top-level records first (no chunk read): metadata, footer, and any message outside a chunk
        waiting = [(raw.record.log_time, raw.offset, i, raw)
                   for i, raw in enumerate(self._scan(wanted, start_ns, end_ns, chunks=False))]
        heapq.heapify(waiting)
        self.reordered = True  # (after _scan, which resets what describes a pass)
        starts = sorted((summary.chunks[pos].message_start_time, pos) for pos in summary.chunks
                        if not self._skippable_chunk(summary, pos, wanted, start_ns, end_ns))
        k = 0
        while k < len(starts) or waiting:
            if k < len(starts) and (not waiting or starts[k][0] <= waiting[0][0]):
                pos = starts[k][1]
                k += 1
                length = summary.chunks[pos].chunk_length - _RECORD_HEAD.size
                if length > self.max_record_bytes:
                    self._issue(pos, "record_too_large", f"Chunk record of {length} bytes exceeds "
                                                         f"max_record_bytes={self.max_record_bytes}")
                    continue
                chunk = self._chunk_messages(pos, self._read_at(pos + _RECORD_HEAD.size, length), want)
                for i, (channel, record) in enumerate(sorted(chunk, key=lambda item: item[1].log_time)):
                    if _in_range(record.log_time, start_ns, end_ns):  # ties: file order (chunk offset, then place)
                        heapq.heappush(waiting, (record.log_time, pos, i, RawMessage(channel, record, pos)))
                continue
            yield heapq.heappop(waiting)[3]

    def _indexed_chunks_readable(self, summary: _Summary) -> bool:
        """Every indexed chunk can be read on its own: a Chunk record of the indexed length at its
        offset, inside the data section, and every channel it holds (and its schema) in the summary."""
        for pos, index in summary.chunks.items():
            if not _index_channels_known(summary, index):
                return False
            if pos < len(MCAP_MAGIC) or pos + index.chunk_length > self._size:
                return False
            head = self._read_at(pos, _RECORD_HEAD.size)
            if len(head) != _RECORD_HEAD.size:
                return False
            opcode, length = _RECORD_HEAD.unpack(head)
            if opcode != Opcode.CHUNK or _RECORD_HEAD.size + length != index.chunk_length:
                return False
        return True

    def _merged_in_file_order(self, starts: dict[int, int], wanted: frozenset[str] | None, start_ns: int | None,
                              end_ns: int | None) -> Iterator[RawMessage]:
        """`_scan`'s messages merged into log-time order by `starts`: the earliest log time of the
        records holding messages, by file offset (from the chunk indexes, or `_record_starts`).
        Reading the record at offset p, no message still unread is older than the earliest start of
        p and the records after it (p's floor), so every waiting message up to it is final.

        A start time is not covered by any CRC (a chunk's header, an index): the floor is also never
        above the record's own first message (a chunk's messages come sorted), and a message older
        than a floor already passed is still yielded, as soon as it is read (never dropped), with an
        `order` issue saying that a stated start time was wrong. `reordered` is set once time goes
        back in file order. A floor applies from its record on, whether or not that record's own
        messages are wanted (a run of top-level messages that starts with an unwanted topic)."""
        offsets = sorted(starts)
        floor: dict[int, int] = {}
        low: int | None = None
        for pos in reversed(offsets):
            low = starts[pos] if low is None else min(low, starts[pos])
            floor[pos] = low
        waiting: list[tuple[int, int, RawMessage]] = []
        applied: int | None = None  # the start whose floor was applied last
        k = 0  # offsets[:k] start at or before the message being read
        newest: int | None = None
        last_out: int | None = None
        said = False
        for seq, raw in enumerate(self._scan(wanted, start_ns, end_ns)):
            t = raw.record.log_time
            while k < len(offsets) and offsets[k] <= raw.offset:
                k += 1
            current = offsets[k - 1] if k else None  # the record (or run) this message is in
            if current is not None and current != applied:
                applied = current
                bound = min(floor[current], t)
                while waiting and waiting[0][0] <= bound:  # ties: the waiting one is earlier in the file
                    out = heapq.heappop(waiting)[2]
                    last_out = out.record.log_time
                    yield out
            if newest is not None and t < newest:
                self.reordered = True  # (after _scan started: it resets what describes a pass)
            newest = t if newest is None else max(newest, t)
            if last_out is not None and t < last_out and not said:
                said = True
                self._issue(raw.offset, "order", f"a message at log time {t} comes after one at {last_out}: a "
                                                 f"start time a record states (not covered by any CRC) is wrong")
            heapq.heappush(waiting, (t, seq, raw))
        while waiting:
            yield heapq.heappop(waiting)[2]

    def _record_starts(self, summary: _Summary | None) -> dict[int, int]:
        """The earliest log time of each top-level record that can hold messages, by file offset,
        for a log without chunk indexes: read from the records' headers alone (a Chunk's
        message_start_time, its first 8 bytes; a Message's log time), seeking past each body, so no
        chunk is decompressed or read. Top-level Message records (an unchunked log) count in runs of
        about `_RUN_BYTES`, keyed by the run's first record. The walk stops where `_scan` stops (the
        zero fill, the cut, a DataEnd or Footer record) and makes no issues; the chunk the file is
        cut in counts with its header's time (its messages are those `_cut_chunk` recovers)."""
        starts: dict[int, int] = {}
        size = self._size
        zeros = self._zero_fill(summary)
        pos = len(MCAP_MAGIC)
        run: int | None = None  # offset of the current run of top-level messages
        while (zeros is None or pos < zeros) and pos + _RECORD_HEAD.size <= size:
            head = self._read_at(pos, _RECORD_HEAD.size + _MESSAGE_HEAD.size)
            if len(head) < _RECORD_HEAD.size:  # the file shrank
                break
            opcode, length = _RECORD_HEAD.unpack_from(head)
            end = pos + _RECORD_HEAD.size + length
            body = head[_RECORD_HEAD.size:]
            if opcode == Opcode.CHUNK:
                run = None
                if len(body) >= 8 and (end > size or length <= self.max_record_bytes):
                    starts[pos] = struct.unpack_from("<Q", body)[0]
            elif (opcode == Opcode.MESSAGE and end <= size and 22 <= length <= self.max_record_bytes
                  and len(body) == _MESSAGE_HEAD.size):
                t = _MESSAGE_HEAD.unpack(body)[2]
                if run is None or pos - run > _RUN_BYTES:
                    run = pos
                    starts[pos] = t
                else:
                    starts[run] = min(starts[run], t)
            elif (opcode == Opcode.DATA_END and length >= 4) or (opcode == Opcode.FOOTER and length >= 20):
                break  # what follows holds no message _scan reads
            if end > size:
                break
            pos = end
        return starts

    def _reset(self) -> None:
        self.issues: list[ReadIssue] = []
        self.truncated_at: int | None = None
        self.unknown_counts: dict[str, int] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.compressions: set[str] = set()
        self.profile: str | None = None
        self.complete = False  # the footer and closing magic were read
        self.reordered = False  # the file's messages were not in log-time order and were sorted
        self._schemas: dict[int, Schema] = {}
        self._channels: dict[int, Channel] = {}
        self._reported_channels: set[int] = set()
        self._assumed_schemas: set[int] = set()  # schemas without text, reported once a pass

    def _issue(self, offset: int, kind: str, detail: str) -> None:
        self.issues.append(ReadIssue(offset, kind, detail))

    def _truncated(self, offset: int, detail: str) -> None:
        zeros = getattr(self, "_zero_start", None)
        if zeros is not None:
            detail += f" (the {self._size - zeros} bytes from byte {zeros} on are zeros: where the written data ends)"
        self.truncated_at = offset
        self._issue(offset, "truncated", detail)

    def _read_at(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(length)

    def _scan(self, wanted: frozenset[str] | None, start_ns: int | None, end_ns: int | None,
              chunks: bool = True) -> Iterator[RawMessage]:
        """Walk the top-level records front to back, yielding the wanted messages.

        `wanted` None means every topic; an empty set means no messages (metadata only). `chunks`
        False skips every indexed chunk unread (the caller reads those through the summary); a chunk
        the index does not list is read here.
        """
        if self._file.closed:  # a raw "seek of closed file" otherwise
            raise LogError(f"log {self.path!r} is closed; open a new LogReader")
        self._reset()
        summary = self._load_summary()
        self.issues.extend(self._summary_issues)
        if summary is not None:  # chunks may be skipped unread: know their channels up front
            self._schemas.update(summary.schemas)
            self._channels.update(summary.channels)
        size = self._size
        zeros = self._zero_fill(summary)  # where an unfinished file's final run of zeros starts (None: none)
        pos = len(MCAP_MAGIC)
        crc = zlib.crc32(MCAP_MAGIC)
        # Every data-section byte goes through `crc` unless the log's DataEnd is known to hold no
        # CRC (most writers store none), which saves a pass over the whole file.
        crc_complete = self._declared_data_crc() != 0
        in_data = True

        chunk_want = _want(wanted)  # None: no messages wanted (chunks not decompressed)

        def want(channel: Channel) -> bool:
            return wanted is None or channel.topic in wanted

        while True:
            if zeros is not None and pos >= zeros:
                self._truncated(pos, f"the written data ends at byte {zeros}")
                return
            if pos + _RECORD_HEAD.size > size:
                self._truncated(pos, f"the file ends at byte {size} before the footer")
                return
            head = self._read_at(pos, _RECORD_HEAD.size)
            if len(head) < _RECORD_HEAD.size:  # the file shrank while being read (another writer)
                self._truncated(pos, f"the file ends at byte {pos + len(head)} (it was {size} bytes when opened)")
                return
            opcode, length = _RECORD_HEAD.unpack(head)
            end = pos + _RECORD_HEAD.size + length
            if end > size:
                detail = (f"{_opname(opcode)} record of {length} bytes at {pos} runs past the end of the file "
                          f"({size} bytes)")
                if opcode == Opcode.CHUNK and in_data and size - pos <= self.max_record_bytes:
                    # the whole messages before the cut are still messages
                    yield from self._cut_chunk(pos, self._file.read(size - pos - _RECORD_HEAD.size),
                                               chunk_want, start_ns, end_ns, detail)
                    return
                self._truncated(pos, detail)
                return
            if length > self.max_record_bytes:
                self._issue(pos, "record_too_large", f"{_opname(opcode)} record of {length} bytes exceeds "
                                                     f"max_record_bytes={self.max_record_bytes}")
                crc_complete = False
                pos = end
                continue
            if opcode == Opcode.CHUNK and ((not chunks and summary is not None and pos in summary.chunks)
                                           or self._skippable_chunk(summary, pos, wanted, start_ns, end_ns)):
                crc_complete = False
                pos = end
                continue
            if not in_data and opcode != Opcode.FOOTER:
                pos = end  # summary section: repeated schemas, indexes, statistics
                continue
            body = self._file.read(length)
            if crc_complete and in_data and opcode != Opcode.DATA_END:
                crc = zlib.crc32(body, zlib.crc32(head, crc))

            if opcode == Opcode.MESSAGE:  # an unchunked log
                if length < 22:
                    self._issue(pos, "record_parse", f"Message record of {length} bytes is shorter than its header")
                else:
                    record = Message.read(_StrictStream(BytesIO(body)), length)
                    channel = self._channel_of(record.channel_id, pos)
                    if channel is not None and want(channel) and _in_range(record.log_time, start_ns, end_ns):
                        yield RawMessage(channel, record, pos)
            elif opcode == Opcode.CHUNK:  # a chunk's messages in log-time order (a writer may interleave them)
                before = len(self.issues)
                chunk = self._chunk_messages(pos, body, chunk_want)
                if zeros is not None and end > zeros and len(self.issues) > before:
                    # the zero fill cut this chunk (its length still fits the file): read it as cut there
                    del self.issues[before:]
                    yield from self._cut_chunk(pos, body[:max(0, zeros - pos - _RECORD_HEAD.size)],
                                               chunk_want, start_ns, end_ns,
                                               f"Chunk record at {pos} is cut by the zeros from byte {zeros}")
                    return
                for channel, record in sorted(chunk, key=lambda item: item[1].log_time):
                    if _in_range(record.log_time, start_ns, end_ns):
                        yield RawMessage(channel, record, pos)
            elif opcode in (Opcode.SCHEMA, Opcode.CHANNEL, Opcode.HEADER, Opcode.METADATA, Opcode.DATA_END,
                            Opcode.FOOTER):
                parsed = self._parse_record(opcode, body, pos)
                if isinstance(parsed, Schema):
                    self._schemas[parsed.id] = parsed
                elif isinstance(parsed, Channel):
                    self._channels[parsed.id] = parsed
                elif isinstance(parsed, Header):
                    self.profile = parsed.profile
                elif isinstance(parsed, Metadata):
                    self.metadata[parsed.name] = parsed.metadata
                elif isinstance(parsed, DataEnd):
                    in_data = False
                    if parsed.data_section_crc and crc_complete and parsed.data_section_crc != crc:
                        self._issue(pos, "data_crc", f"data section CRC is {crc:#010x}, the log says "
                                                     f"{parsed.data_section_crc:#010x}: a record outside the "
                                                     f"CRC-checked chunks before offset {pos} was altered")
                elif isinstance(parsed, Footer):
                    self._check_closing_magic(end)
                    return
            pos = end

    def _check_closing_magic(self, offset: int) -> None:
        tail = self._read_at(offset, len(MCAP_MAGIC))
        if len(tail) < len(MCAP_MAGIC):
            self._truncated(offset, "the file ends inside the closing magic")
        elif tail != MCAP_MAGIC:
            self._issue(offset, "bad_magic", f"closing magic is {tail!r}")
        else:
            self.complete = True

    def _parse_record(self, opcode: int, body: bytes, pos: int) -> Any:
        reader = {Opcode.SCHEMA: Schema.read, Opcode.CHANNEL: Channel.read, Opcode.HEADER: Header.read,
                  Opcode.METADATA: Metadata.read, Opcode.DATA_END: DataEnd.read, Opcode.FOOTER: Footer.read}[opcode]
        try:
            return reader(_StrictStream(BytesIO(body)))
        except (_ShortRead, McapError, struct.error, UnicodeDecodeError) as exc:
            self._issue(pos, "record_parse", f"{_opname(opcode)} record: {exc}")
            return None

    def _channel_of(self, channel_id: int, pos: int) -> Channel | None:
        channel = self._channels.get(channel_id)
        if channel is None and channel_id not in self._reported_channels:
            self._reported_channels.add(channel_id)
            self._issue(pos, "unknown_channel", f"messages on channel id {channel_id}, which no Channel record "
                                                f"defines, are skipped")
        return channel

    # --- chunks ----------------------------------------------------------------------------------

    def _skippable_chunk(self, summary: _Summary | None, pos: int, wanted: frozenset[str] | None,
                         start_ns: int | None, end_ns: int | None) -> bool:
        """With a valid summary, a chunk outside the time range or without wanted topics is skipped
        unread (the summary already defined its schemas and channels)."""
        if summary is None:
            return False
        index = summary.chunks.get(pos)
        if index is None:
            return False
        if not _index_channels_known(summary, index):  # unread, it must define nothing the log needs
            return False
        if (start_ns is not None and index.message_end_time < start_ns) or (
                end_ns is not None and index.message_start_time >= end_ns):
            return True
        return wanted is not None and not ({summary.channels[c].topic for c in index.message_index_offsets} & wanted)

    def _chunk_messages(self, pos: int, body: bytes,
                        want: Callable[[Channel], bool] | None) -> list[tuple[Channel, Message]]:
        """A chunk's wanted messages with their channels, or [] when any part of the chunk is bad.

        The whole chunk is checked (decompression, CRC, framing, schema/channel parses) before any
        of it is used, so a damaged chunk contributes nothing; its schemas and channels are
        registered only then. `want` None: no messages wanted (the chunk is not decompressed).
        """
        try:
            chunk = Chunk.read(_StrictStream(BytesIO(body)))
        except (_ShortRead, McapError, struct.error, UnicodeDecodeError) as exc:
            self._issue(pos, "chunk_parse", f"Chunk record: {exc}")
            return []
        self.compressions.add(chunk.compression or "none")
        if chunk.uncompressed_size > self.max_chunk_bytes:
            self._issue(pos, "chunk_too_large", f"chunk declares {chunk.uncompressed_size} uncompressed bytes, "
                                                f"more than max_chunk_bytes={self.max_chunk_bytes}; not decompressed")
            return []
        if want is None:
            return []
        try:
            data = _decompress(chunk)
        except _ChunkError as exc:
            self._issue(pos, "chunk_decompress", f"{chunk.compression or 'uncompressed'} chunk: {exc}")
            return []
        if chunk.uncompressed_crc and zlib.crc32(data) != chunk.uncompressed_crc:
            self._issue(pos, "chunk_crc", f"chunk CRC is {zlib.crc32(data):#010x}, the chunk says "
                                          f"{chunk.uncompressed_crc:#010x}; its messages are skipped")
            return []
        try:
            return self._chunk_records(pos, data, want)
        except (_ShortRead, McapError, struct.error, UnicodeDecodeError) as exc:
            self._issue(pos, "chunk_parse", f"chunk record: {exc}; the chunk is skipped")
            return []

    def _chunk_records(self, pos: int, data: bytes, want: Callable[[Channel], bool],
                       cut: bool = False) -> list[tuple[Channel, Message]]:
        """The wanted messages of a chunk's decompressed records; its schemas and channels are
        registered once every record parsed. Raises on a damaged record; with `cut` (the chunk the
        file ends in), a record running past the data ends the list instead: the whole records before it."""
        items: list[tuple[Channel, Message]] = []
        schemas = dict(self._schemas)
        channels = dict(self._channels)
        buffer = BytesIO(data)
        stream = _StrictStream(buffer)
        inner = 0
        total = len(data)
        while inner < total:
            if inner + _RECORD_HEAD.size > total:
                if cut:
                    break
                raise _ShortRead(f"record header at {inner} runs past the chunk's {total} bytes")
            opcode, length = _RECORD_HEAD.unpack_from(data, inner)
            start = inner + _RECORD_HEAD.size
            stop = start + length
            if stop > total:
                if cut:
                    break
                raise _ShortRead(f"{_opname(opcode)} record at {inner} ({length} bytes) runs past the chunk")
            if opcode == Opcode.MESSAGE:
                if length < 22:
                    raise _ShortRead(f"Message record at {inner} is {length} bytes, shorter than its header")
                channel_id, _, _ = _MESSAGE_HEAD.unpack_from(data, start)
                channel = channels.get(channel_id)
                if channel is None:
                    self._channel_of(channel_id, pos)
                elif want(channel):
                    buffer.seek(start)
                    items.append((channel, Message.read(stream, length)))
            elif opcode in (Opcode.SCHEMA, Opcode.CHANNEL):
                buffer.seek(start)
                record = (Schema.read if opcode == Opcode.SCHEMA else Channel.read)(stream)
                if buffer.tell() > stop:
                    raise _ShortRead(f"{_opname(opcode)} record at {inner} overruns its length {length}")
                if isinstance(record, Schema):
                    schemas[record.id] = record
                else:
                    channels[record.id] = record
            inner = stop
        self._schemas = schemas
        self._channels = channels
        return items

    def _cut_chunk(self, pos: int, body: bytes, want: Callable[[Channel], bool] | None, start_ns: int | None,
                   end_ns: int | None, detail: str) -> Iterator[RawMessage]:
        """The wanted messages in range of a cut chunk (`_cut_chunk_messages`), in log-time order,
        after the truncation is reported (`detail`, and how many messages were recovered)."""
        recovered = [(channel, record) for channel, record in self._cut_chunk_messages(pos, body, want)
                     if _in_range(record.log_time, start_ns, end_ns)]
        if recovered:
            detail += (f"; {len(recovered)} whole messages read from the cut chunk (a cut chunk has no CRC to "
                       f"check them against)")
        self._truncated(pos, detail)
        for channel, record in sorted(recovered, key=lambda item: item[1].log_time):
            yield RawMessage(channel, record, pos)

    def _cut_chunk_messages(self, pos: int, body: bytes,
                            want: Callable[[Channel], bool] | None) -> list[tuple[Channel, Message]]:
        """The whole message records of the chunk a truncated file ends in (`body`: its bytes up to
        the cut): decompressed as a stream as far as the data goes. No CRC covers a cut chunk."""
        if want is None:
            return []
        stream = _StrictStream(BytesIO(body))
        try:
            stream.read(8 + 8)  # message start and end time
            size, crc = struct.unpack("<QI", stream.read(12))  # uncompressed size and CRC
            compression = stream.read(struct.unpack("<I", stream.read(4))[0]).decode("utf-8")
            records = struct.unpack("<Q", stream.read(8))[0]  # their length: past the end of the file
        except (_ShortRead, McapError, struct.error, UnicodeDecodeError):
            return []  # cut inside the chunk's own header: nothing to recover
        data = body[stream.count:stream.count + records]
        limit = min(size, self.max_chunk_bytes)
        if compression == "zstd":  # the whole blocks before the cut, never more than the declared size
            reader = zstandard.ZstdDecompressor().stream_reader(BytesIO(data), read_across_frames=False)
            parts: list[bytes] = []
            got = 0
            try:
                while got < limit and (part := reader.read(min(limit - got, _MIB))):
                    parts.append(part)
                    got += len(part)
            except zstandard.ZstdError:
                pass  # the cut block: what came before it is kept
            data = b"".join(parts)
        elif compression == "lz4":
            try:
                data = lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=limit)
            except RuntimeError:
                return []
        elif compression != "":
            return []
        data = data[:limit]
        if len(data) == size and crc and zlib.crc32(data) != crc:
            return []  # all of it there (only the record's length was damaged), and it fails its CRC
        try:
            return self._chunk_records(pos, data, want, cut=True)
        except (_ShortRead, McapError, struct.error, UnicodeDecodeError):
            return []

    # --- routes and summary ----------------------------------------------------------------------

    def _route(self, channel: Channel, factory: DecoderFactory, pos: int) -> _Route:
        schema = self._schemas.get(channel.schema_id)
        if schema is None:
            return _Route(channel, "", None, None)
        name = normalize_schema_name(schema.name)
        convert = converter_for(name)
        if (convert is None or channel.message_encoding != MessageEncoding.CDR
                or schema.encoding != SchemaEncoding.ROS2):
            return _Route(channel, name, None, None)
        text, assumed = schema_text(schema, name)
        if assumed:
            if schema.id not in self._assumed_schemas:
                self._assumed_schemas.add(schema.id)
                self._issue(pos, "schema_assumed", f"schema {schema.name!r} of topic {channel.topic!r}: no definition "
                                                   f"stored: the standard one is assumed")
        if not schema_matches(name, text):
            self._issue(pos, "schema", f"schema {schema.name!r} of topic {channel.topic!r} does not lay out the wire "
                                       f"as the standard {name} does (its fields differ): its messages are skipped")
            return _Route(channel, name, None, None)
        codec_text = byte_view_schema(schema.name, text)
        if codec_text.encode() != schema.data:
            schema = Schema(id=schema.id, name=schema.name, encoding=schema.encoding, data=codec_text.encode())
        try:
            decode = factory.decoder_for(channel.message_encoding, schema)
        except _SCHEMA_ERRORS as exc:
            self._issue(pos, "schema", f"schema {schema.name!r} of topic {channel.topic!r} does not parse: {exc}")
            decode = None
        return _Route(channel, name, decode, convert)

    def _zero_fill(self, summary: _Summary | None) -> int | None:
        """Where the final run of zeros of an unfinished file (no summary) starts: space preallocated
        by the recorder, or a tail lost in a power failure; None without one. Those zeros read as
        records of opcode 0, nine bytes at a time (a 10 GB tail took half an hour), and the chunk they
        cut failed as a whole instead of giving its whole messages: `_scan` stops at the first record
        that starts in them and reads a chunk they cut as cut there. Only a run of `_ZERO_TAIL_MIN`
        bytes or more counts; a record whose own last bytes are zeros is still read whole (a chunk is
        read as cut only when it fails as it stands)."""
        if hasattr(self, "_zero_start"):
            return self._zero_start
        self._zero_start: int | None = None
        size = self._size
        if summary is not None or size <= len(MCAP_MAGIC) or self._read_at(size - 1, 1) != b"\0":
            return None
        end = size
        while end > len(MCAP_MAGIC):
            start = max(len(MCAP_MAGIC), end - _MIB)
            kept = len(self._read_at(start, end - start).rstrip(b"\0"))
            if kept:
                end = start + kept
                break
            end = start
        if size - end >= _ZERO_TAIL_MIN:  # a short run can be a record's own zero bytes: read as records
            self._zero_start = end
        return self._zero_start

    def _declared_data_crc(self) -> int | None:
        """The data-section CRC of the DataEnd record found through the footer (None: not found)."""
        tail = self._read_at(self._size - _FOOTER_BYTES, _FOOTER_BYTES) if self._size >= _FOOTER_BYTES else b""
        if len(tail) != _FOOTER_BYTES or tail[-len(MCAP_MAGIC):] != MCAP_MAGIC:
            return None
        opcode, length, summary_start = struct.unpack_from("<BQQ", tail)
        if opcode != Opcode.FOOTER or length != 20:
            return None
        data_end = (summary_start or self._size - _FOOTER_BYTES) - 13  # DataEnd is 9 + 4 bytes
        if data_end < len(MCAP_MAGIC):
            return None
        record = self._read_at(data_end, 13)
        if len(record) != 13 or struct.unpack_from("<BQ", record) != (Opcode.DATA_END, 4):
            return None
        return struct.unpack_from("<I", record, 9)[0]

    def _load_summary(self) -> _Summary | None:
        """Schemas, channels and chunk indexes from a CRC-valid summary section, else None."""
        if self._summary is not False:
            return self._summary  # type: ignore[return-value]
        self._summary = None
        size = self._size
        if size < len(MCAP_MAGIC) + _FOOTER_BYTES:
            return None
        tail = self._read_at(size - _FOOTER_BYTES, _FOOTER_BYTES)
        if len(tail) != _FOOTER_BYTES:  # the file shrank since it was opened: read it without a summary
            return None
        opcode, length = _RECORD_HEAD.unpack_from(tail)
        if tail[-len(MCAP_MAGIC):] != MCAP_MAGIC or opcode != Opcode.FOOTER or length != 20:
            return None  # no footer: a truncated log, read without a summary
        footer_pos = size - _FOOTER_BYTES
        summary_start, summary_offset_start, summary_crc = struct.unpack_from("<QQI", tail, 9)
        if summary_start == 0:
            return None
        if not len(MCAP_MAGIC) <= summary_start <= footer_pos:
            self._summary_issues.append(ReadIssue(footer_pos, "summary", f"footer points at summary offset "
                                                                         f"{summary_start}, outside the file"))
            return None
        if footer_pos - summary_start > self.max_record_bytes:
            self._summary_issues.append(ReadIssue(summary_start, "summary", f"summary section of "
                                                  f"{footer_pos - summary_start} bytes exceeds max_record_bytes"))
            return None
        data = self._read_at(summary_start, footer_pos - summary_start)
        if summary_crc and zlib.crc32(tail[: 9 + 16], zlib.crc32(data)) != summary_crc:
            self._summary_issues.append(ReadIssue(summary_start, "summary",
                                                  "summary section CRC mismatch; reading without it"))
            return None
        summary = _Summary()
        buffer = BytesIO(data)
        stream = _StrictStream(buffer)
        offset = 0
        try:
            while offset < len(data):
                opcode, length = _RECORD_HEAD.unpack_from(data, offset)
                start = offset + _RECORD_HEAD.size
                buffer.seek(start)
                if opcode == Opcode.SCHEMA:
                    record = Schema.read(stream)
                    summary.schemas[record.id] = record
                elif opcode == Opcode.CHANNEL:
                    record = Channel.read(stream)
                    summary.channels[record.id] = record
                elif opcode == Opcode.CHUNK_INDEX:
                    record = ChunkIndex.read(stream)
                    summary.chunks[record.chunk_start_offset] = record
                offset = start + length
        except (_ShortRead, McapError, struct.error, UnicodeDecodeError) as exc:
            self._summary_issues.append(ReadIssue(summary_start, "summary",
                                                  f"summary section does not parse ({exc}); reading without it"))
            return None
        if any(c.schema_id and c.schema_id not in summary.schemas for c in summary.channels.values()):
            return None
        self._summary = summary
        return summary


class _ChunkError(Exception):
    """A chunk's data does not decompress to exactly its declared size."""


def schema_text(schema: Schema, name: str) -> tuple[str, bool]:
    """A ros2msg schema's definition text, and whether it was assumed: rosbag2's mcap plugin stores an
    empty schema when it cannot find a type's definition (nothing differs, the text is missing), and
    for a standard type `name` the standard text is taken (as the .db3 path does)."""
    text = schema.data.decode("utf-8", errors="replace")
    if not text.strip() and name in SCHEMAS:
        return SCHEMAS[name], True
    return text, False


def _want(wanted: frozenset[str] | None) -> Callable[[Channel], bool] | None:
    """Which channels' messages a pass wants (None: no messages, as for `read_metadata`)."""
    if wanted == frozenset():
        return None
    return lambda channel: wanted is None or channel.topic in wanted


def _index_channels_known(summary: _Summary, index: ChunkIndex) -> bool:
    """Whether the summary holds every channel (and its schema) of an indexed chunk, so the chunk
    defines nothing the rest of the log needs (a writer may leave channels out of the summary,
    repeat_channels off: they are then defined only inside the chunks that use them first)."""
    ids = index.message_index_offsets
    return bool(ids) and all(c in summary.channels and (not summary.channels[c].schema_id or
                                                        summary.channels[c].schema_id in summary.schemas)
                             for c in ids)


def _chunks_in_order(summary: _Summary | None) -> bool | None:
    """True when the chunk indexes show chunks in file order that never overlap in time (so sorting
    each chunk puts the whole log in log-time order), False when they overlap, None without indexes."""
    if summary is None or not summary.chunks:
        return None
    last_end = None
    for pos in sorted(summary.chunks):
        index = summary.chunks[pos]
        if last_end is not None and index.message_start_time < last_end:
            return False
        last_end = index.message_end_time if last_end is None else max(last_end, index.message_end_time)
    return True


def _decompress(chunk: Chunk) -> bytes:
    """Decompress a chunk, never producing more than its declared uncompressed size."""
    size = chunk.uncompressed_size
    if chunk.compression == "":
        data = chunk.data
    elif size == 0:
        data = b""
    elif chunk.compression == "zstd":
        try:
            content_size = zstandard.frame_content_size(chunk.data)
            if content_size >= 0 and content_size != size:
                raise _ChunkError(f"zstd frame says {content_size} bytes, the chunk {size}")
            data = zstandard.ZstdDecompressor().decompress(chunk.data, max_output_size=size, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise _ChunkError(str(exc)) from exc
    elif chunk.compression == "lz4":
        try:
            content_size = lz4.frame.get_frame_info(chunk.data)["content_size"]
            if content_size and content_size != size:
                raise _ChunkError(f"lz4 frame says {content_size} bytes, the chunk {size}")
            decompressor = lz4.frame.LZ4FrameDecompressor()
            data = decompressor.decompress(chunk.data, max_length=size)
        except RuntimeError as exc:
            raise _ChunkError(str(exc)) from exc
        if not decompressor.eof:
            raise _ChunkError(f"lz4 frame does not end within the declared {size} bytes")
        if decompressor.unused_data:
            raise _ChunkError(f"{len(decompressor.unused_data)} bytes after the lz4 frame")
    else:
        raise _ChunkError(f"unsupported compression {chunk.compression!r}")
    if len(data) != size:
        raise _ChunkError(f"decompressed to {len(data)} bytes, the chunk declares {size}")
    return data


def _in_range(t: int, start_ns: int | None, end_ns: int | None) -> bool:
    return (start_ns is None or t >= start_ns) and (end_ns is None or t < end_ns)


def _opname(opcode: int) -> str:
    try:
        return Opcode(opcode).name.title().replace("_", "")
    except ValueError:
        return f"unknown (opcode {opcode:#04x})"
