"""`LogWriter`: fusion-rt messages -> an MCAP log with ROS 2 (CDR) messages.

Built on `mcap_ros2.writer.Writer`, so files carry profile ``ros2``, ``ros2msg`` schemas and
``cdr`` messages that Foxglove and ROS tooling open. Output is deterministic: log and publish
times are the messages' own stamps, the sequence number counts messages per topic, and nothing
reads the wall clock, so the same messages in the same order give a byte-identical file.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import IO

from mcap.exceptions import McapError
from mcap.records import Schema
from mcap.writer import CompressionType
from mcap_ros2.writer import Writer as Ros2Writer

from fusion_rt.errors import ConfigError, FusionRTError, LogError
from fusion_rt.logs.convert import COMPRESSED_FORMATS, split_stamp, to_ros
from fusion_rt.logs.schemas import DEFAULT_TOPICS, RAW_IMAGE_TOPIC, SCHEMAS, byte_view_schema
from fusion_rt.messages import CameraFrame, Message
from fusion_rt.outputs import with_tell

__all__ = ["LogWriter", "default_topic", "COMPRESSIONS"]

#: Chunk compression names accepted by `LogWriter`.
COMPRESSIONS: dict[str, CompressionType] = {
    "zstd": CompressionType.ZSTD,
    "lz4": CompressionType.LZ4,
    "none": CompressionType.NONE,
}


def default_topic(message: Message) -> str:
    """The topic a message is written to when `LogWriter.write` is given none."""
    if isinstance(message, CameraFrame) and message.encoding not in COMPRESSED_FORMATS:
        return RAW_IMAGE_TOPIC
    topic = DEFAULT_TOPICS.get(type(message))
    if topic is None:
        raise LogError(f"no default topic for {type(message).__name__}; pass topic=...")
    return topic


class LogWriter:
    """Write fusion-rt messages to an MCAP log (a context manager; `close()` finishes the file).

    compression: chunk compression, "zstd" (default), "lz4" or "none".
    chunk_size: uncompressed bytes per chunk before it is closed (1 MiB, the mcap default; a chunk
        is the unit a reader loses when a byte in it is damaged).
    radar_tensor_dtype: "float16" (default, half the size) or "float32" for radar tensors on disk.
    """

    def __init__(self, path: str | os.PathLike[str], compression: str = "zstd", chunk_size: int = 1 << 20,
                 radar_tensor_dtype: str = "float16") -> None:
        if compression not in COMPRESSIONS:
            raise ConfigError(f"compression must be one of {tuple(COMPRESSIONS)}, got {compression!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ConfigError(f"chunk_size must be a positive number of bytes, got {chunk_size!r}")
        if radar_tensor_dtype not in ("float16", "float32"):
            raise ConfigError(f"radar_tensor_dtype must be 'float16' or 'float32', got {radar_tensor_dtype!r}")
        self.path = os.fspath(path)
        self.radar_tensor_dtype = radar_tensor_dtype
        try:
            self._file: IO[bytes] = with_tell(open(self.path, "wb"))  # noqa: SIM115 (closed in close()); a FIFO too
        except OSError as exc:
            raise LogError(f"cannot create log {self.path!r}: {exc.strerror or exc}") from exc
        self._writer = Ros2Writer(self._file, chunk_size=chunk_size, compression=COMPRESSIONS[compression])
        self._schemas: dict[str, Schema] = {}
        self._topic_schema: dict[str, str] = {}
        self._sequence: dict[str, int] = {}
        self._closed = False

    def write(self, message: Message, topic: str | None = None, log_time_ns: int | None = None) -> None:
        """Append one message; `topic` defaults to `default_topic(message)`.

        Publish time is `message.stamp_ns`; log time too, unless `log_time_ns` gives the time the
        message was received (a late or bursty link). A topic keeps the schema of its first message.
        """
        if self._closed:
            raise LogError(f"log {self.path!r} is closed")
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise LogError(f"topic must be a non-empty string, got {topic!r}")
        try:
            schema_name, ros_message = to_ros(message, radar_tensor_dtype=self.radar_tensor_dtype)
        except FusionRTError:
            raise
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # a field of the wrong type
            raise LogError(f"cannot convert {type(message).__name__} at {getattr(message, 'stamp_ns', None)!r}: "
                           f"{type(exc).__name__}: {exc}") from exc
        topic = default_topic(message) if topic is None else topic
        split_stamp(message.stamp_ns)  # header-less messages (String) are checked here
        known = self._topic_schema.get(topic, schema_name)
        if known != schema_name:
            raise LogError(f"topic {topic!r} already carries {known}; cannot write a {schema_name} to it")
        schema = self._schemas.get(schema_name)
        if schema is None:
            registered = self._writer.register_msgdef(schema_name, SCHEMAS[schema_name])
            # mcap_ros2 builds (and caches by schema id) its encoder from the Schema passed to
            # write_message: hand it the byte-view text, the file keeps the canonical one.
            codec_text = byte_view_schema(schema_name, SCHEMAS[schema_name]).encode()
            schema = Schema(id=registered.id, name=registered.name, encoding=registered.encoding, data=codec_text)
            self._schemas[schema_name] = schema
        sequence = self._sequence.get(topic, 0)
        stamp_ns = int(message.stamp_ns)
        log_time = stamp_ns
        if log_time_ns is not None:
            split_stamp(log_time_ns)  # refused like a stamp when a log cannot hold it
            log_time = int(log_time_ns)
        try:
            self._writer.write_message(topic, schema, ros_message, log_time=log_time, publish_time=stamp_ns,
                                       sequence=sequence)
        except (struct.error, ValueError, TypeError, OverflowError, McapError) as exc:
            raise LogError(f"cannot encode {type(message).__name__} at {stamp_ns} on {topic!r} "
                           f"as {schema_name}: {exc}") from exc
        self._topic_schema[topic] = schema_name
        self._sequence[topic] = (sequence + 1) & 0xFFFFFFFF

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        """Store a named string map in the log (e.g. the rig as JSON, the simulator config)."""
        if self._closed:
            raise LogError(f"log {self.path!r} is closed")
        if not isinstance(name, str) or not isinstance(data, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise LogError(f"metadata {name!r} must map str to str (serialize values, e.g. as JSON)")
        self._writer.add_metadata(name, dict(data))

    def close(self) -> None:
        """Write the summary and footer and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()
        finally:
            self._file.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
