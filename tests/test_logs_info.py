"""`log_info` / `format_info`: per-topic counts, rates and spans, also for damaged logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusion_rt.logs import LogWriter, format_info, log_info
from fusion_rt.messages import CameraFrame, RadarDetections, TextContext


def _log(path: Path) -> None:
    with LogWriter(path, compression="lz4", chunk_size=512) as writer:
        writer.add_metadata("rig", {"json": "{}"})
        for i in range(21):  # camera at 10 Hz for 2 s
            t = 5_000_000_000 + i * 100_000_000
            writer.write(CameraFrame(stamp_ns=t, data=b"\xff\xd8" + bytes(100)))
            if i % 2 == 0:  # radar at 5 Hz
                writer.write(RadarDetections(stamp_ns=t + 1_000_000, points=np.ones((3, 5), np.float32)))
        writer.write(TextContext(stamp_ns=5_000_000_000, text="urban"))


def test_info_counts_rates_and_spans(tmp_path: Path) -> None:
    _log(tmp_path / "a.mcap")
    info = log_info(tmp_path / "a.mcap")
    json.dumps(info)  # machine-readable as is
    cam = info["topics"]["/camera/front/image/compressed"]
    assert cam == {"schema": "sensor_msgs/msg/CompressedImage", "count": 21, "first_ns": 5_000_000_000,
                   "last_ns": 7_000_000_000, "rate_hz": 10.0}
    radar = info["topics"]["/radar/front/detections"]
    assert radar["count"] == 11 and abs(radar["rate_hz"] - 5.0) < 1e-9
    assert info["topics"]["/context/text"]["rate_hz"] is None
    assert info["message_count"] == 33 and info["duration_ns"] == 2_001_000_000
    assert info["compression"] == "lz4" and info["profile"] == "ros2" and info["metadata"] == ["rig"]
    assert info["issues"] == [] and info["truncated_at"] is None and info["complete"]
    assert info["file_size"] == (tmp_path / "a.mcap").stat().st_size
    text = format_info(info)
    assert "/camera/front/image/compressed" in text and "10.00" in text and "Issues:       none" in text


def test_info_of_a_truncated_log(tmp_path: Path) -> None:
    _log(tmp_path / "a.mcap")
    data = (tmp_path / "a.mcap").read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: len(data) // 2])
    info = log_info(tmp_path / "cut.mcap")
    assert 0 < info["message_count"] < 33
    assert info["truncated_at"] is not None and not info["complete"]
    assert info["issues"][-1]["kind"] == "truncated"
    assert f"Truncated at: byte {info['truncated_at']}" in format_info(info)


def test_info_of_an_empty_log(tmp_path: Path) -> None:
    with LogWriter(tmp_path / "e.mcap"):
        pass
    info = log_info(tmp_path / "e.mcap")
    assert info["message_count"] == 0 and info["duration_ns"] is None and info["topics"] == {}
    assert "Messages:     0" in format_info(info)


def test_info_of_a_ros2_bag(camera_only_bag) -> None:
    """A rosbag2 directory (sqlite3 storage here) is described like an MCAP file."""
    info = log_info(camera_only_bag)
    assert info["message_count"] == 10 and info["profile"] == "ros2"
    assert info["topics"]["/cam/compressed"]["count"] == 10
    assert info["topics"]["/cam/compressed"]["rate_hz"] == pytest.approx(20.0)
    assert info["duration_ns"] == 9 * 50_000_000 and info["file_size"] > 0
    assert "/cam/compressed" in format_info(info)


@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
@pytest.mark.parametrize("compression", ["MESSAGE", "FILE", None])
def test_info_of_a_rosbag2_compressed_bag_names_storage_and_compression(tmp_path: Path, storage, compression) -> None:
    # The .mcap.zstd / .db3.zstd of a file-compressed bag counted as 0 bytes, and every bag not read
    # as MCAP (all compressed ones, mcap storage too) said "sqlite3 storage", its zstd never shown.
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    from rosbags.rosbag2 import writer as rw
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    bag = tmp_path / "bag"
    writer = rosbag2.Writer(bag, version=8, storage_plugin=rosbag2.StoragePlugin[storage])
    if compression:
        writer.set_compression(rw.CompressionMode[compression], rw.CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/context/text", "std_msgs/msg/String", typestore=store)
        for k in range(5):
            text = store.types["std_msgs/msg/String"](data=f"rain {k} " * 50)
            writer.write(conn, (k + 1) * 10**9, store.serialize_cdr(text, "std_msgs/msg/String"))
    info = log_info(bag)
    files = [f for f in bag.iterdir() if f.name != "metadata.yaml"]
    assert info["file_size"] == sum(f.stat().st_size for f in files) > 0
    want = {"MESSAGE": ", zstd per message", "FILE": ", zstd per file", None: ""}[compression]
    assert info["compression"] == f"{storage.lower()} storage{want}"
    assert info["message_count"] == 5 and f"Compression:  {storage.lower()} storage" in format_info(info)
