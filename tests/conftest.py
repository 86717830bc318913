"""Shared fixtures: small real artefacts (logs, images) generated on the fly."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 120.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m fusion_rt ARGS` in a subprocess, as a user would from the shell."""
    return subprocess.run([sys.executable, "-m", "fusion_rt", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def record_test_drive(tmp_path_factory, name: str, seconds: float, seed: int, conditions: str = "mixed") -> Path:
    """Record a simulated drive as `<tmp>/<name>.mcap` (the one helper every log fixture uses)."""
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    path = tmp_path_factory.mktemp("logs") / f"{name}.mcap"
    record_drive(DriveConfig(seconds=seconds, seed=seed, conditions=conditions), path)
    return path


@pytest.fixture(scope="session")
def short_drive(tmp_path_factory) -> Path:
    """A 4 s mixed-condition simulated drive recorded as MCAP (shared by the session's tests)."""
    return record_test_drive(tmp_path_factory, "short_drive", 4.0, seed=3)


@pytest.fixture(scope="session")
def camera_only_bag(tmp_path_factory):
    """A rosbag2 with sqlite3 storage: 10 JPEG frames (640x360, the default rig's camera; brighter each
    frame) on a camera topic and nothing else, as a vehicle recording without labels might be."""
    rosbags = pytest.importorskip("rosbags.rosbag2")
    import cv2
    import numpy as np
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    image_t = store.types["sensor_msgs/msg/CompressedImage"]
    header_t, time_t = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    bag = tmp_path_factory.mktemp("bags") / "db3bag"
    t0 = 1_600_000_000_000_000_000
    with rosbags.Writer(bag, version=8) as writer:
        conn = writer.add_connection("/cam/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        for i in range(10):
            _, jpeg = cv2.imencode(".jpg", np.full((360, 640, 3), 20 * i, np.uint8))
            stamp = t0 + i * 50_000_000
            msg = image_t(header=header_t(stamp=time_t(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"),
                          format="jpeg", data=np.frombuffer(jpeg.tobytes(), np.uint8))
            writer.write(conn, stamp, store.serialize_cdr(msg, conn.msgtype))
    return bag


def whole_messages_before(data: bytes, cut: int) -> int:
    """How many Message records of an uncompressed-chunk MCAP end at or before byte `cut`, walking
    the records (inside chunks too) by their lengths from the intact file."""
    count, pos = 0, 8  # the magic
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode == 0x06:  # Chunk: start, end, size, CRC, compression "", records length, then the records
            inner = pos + 9 + 8 + 8 + 8 + 4
            inner += 4 + struct.unpack_from("<I", data, inner)[0] + 8
            while inner < pos + 9 + length:
                op, size = struct.unpack_from("<BQ", data, inner)
                if op == 0x05 and inner + 9 + size <= cut:
                    count += 1
                inner += 9 + size
        elif opcode == 0x05 and pos + 9 + length <= cut:
            count += 1
        if opcode == 0x0F:  # the footer
            break
        pos += 9 + length
    return count


def copy_log(src, dst, keep):
    """`src` rewritten to `dst` with the messages `keep(item)` accepts (a `LogMessage`), topics and
    log times as they were: a log with a sensor, or some labels, taken away."""
    from fusion_rt.logs import LogReader, LogWriter

    with LogReader(src) as reader, LogWriter(dst) as writer:
        for item in reader.messages():
            if keep(item):
                writer.write(item.message, item.topic, log_time_ns=item.log_time_ns)
    return dst
