"""Sensor logs: MCAP files with ROS 2 messages, written deterministically and read defensively.

- `LogWriter` writes `fusion_rt.messages` as ROS 2 (CDR) messages that Foxglove and ROS open.
- `LogReader` reads them back, skipping and reporting damaged records (`ReadIssue`); `open_log`
  opens any recorded drive (an MCAP file or a ROS 2 bag) as one message source.
- `log_info` / `format_info` summarize a log like ``ros2 bag info``.
- `LogDataset` turns logs into camera-triggered training `Sample`s.
- `schemas` holds the message definitions and default topics; `convert` the mappings.
"""

from fusion_rt.logs.bags import open_log
from fusion_rt.logs.dataset import DEFAULT_MAX_AGE_NS, LogDataset, Sample
from fusion_rt.logs.info import format_info, log_info
from fusion_rt.logs.reader import LogMessage, LogReader, RawMessage, ReadIssue
from fusion_rt.logs.schemas import DEFAULT_TOPICS, RAW_IMAGE_TOPIC, SCHEMA_MODALITY, SCHEMAS
from fusion_rt.logs.writer import LogWriter, default_topic

__all__ = [
    "LogWriter",
    "LogReader",
    "open_log",
    "LogMessage",
    "RawMessage",
    "ReadIssue",
    "LogDataset",
    "Sample",
    "DEFAULT_MAX_AGE_NS",
    "log_info",
    "format_info",
    "default_topic",
    "DEFAULT_TOPICS",
    "RAW_IMAGE_TOPIC",
    "SCHEMAS",
    "SCHEMA_MODALITY",
]
