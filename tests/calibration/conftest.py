"""Fixtures of the calibration tests: a tiny package and a short mixed-condition drive."""

from __future__ import annotations

import pytest

from ..conftest import record_test_drive
from ._fixtures import make_calibration_package


@pytest.fixture(scope="session")
def calib_package(tmp_path_factory):
    return make_calibration_package(tmp_path_factory.mktemp("pkg") / "tiny")


@pytest.fixture(scope="session")
def calib_log(tmp_path_factory):
    """A 3 s mixed-condition drive (several conditions, so stratification has something to do)."""
    return record_test_drive(tmp_path_factory, "calib", 3.0, seed=5)


@pytest.fixture(scope="session")
def night_log(tmp_path_factory):
    """A 1 s night drive: a minority condition next to calib_log."""
    return record_test_drive(tmp_path_factory, "night", 1.0, seed=7, conditions="night")


@pytest.fixture(scope="session")
def camera_only_bag(tmp_path_factory):
    """A rosbag2 with sqlite3 storage: 10 JPEG frames (36x64, brighter each frame) on a camera topic
    and nothing else, as a vehicle recording without labels might be."""
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
            _, jpeg = cv2.imencode(".jpg", np.full((36, 64, 3), 20 * i, np.uint8))
            stamp = t0 + i * 50_000_000
            msg = image_t(header=header_t(stamp=time_t(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"),
                          format="jpeg", data=np.frombuffer(jpeg.tobytes(), np.uint8))
            writer.write(conn, stamp, store.serialize_cdr(msg, conn.msgtype))
    return bag
