"""Message definitions: standard ones match ROS 2 Humble, custom ones parse, topics are complete."""

from __future__ import annotations

import re

import pytest
from mcap_ros2._dynamic import generate_dynamic, serialize_dynamic

from fusion_rt.logs import schemas as S
from fusion_rt.messages import (
    CameraFrame,
    CameraInfo,
    GroundTruth,
    MapRaster,
    RadarDetections,
    RadarTensor,
    TextContext,
)

rosbags_typesys = pytest.importorskip("rosbags.typesys")

STANDARD = [S.COMPRESSED_IMAGE, S.IMAGE, S.CAMERA_INFO, S.POINT_CLOUD2, S.OCCUPANCY_GRID, S.STRING]


def _fields(text: str, main_name: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """ros2msg text -> {type name: [(type, field, constant value)]}, ignoring comments and defaults."""
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for block in re.split(r"^={3,}$", text, flags=re.MULTILINE):
        lines = [ln.split("#", 1)[0].strip() for ln in block.strip().splitlines()]
        lines = [ln for ln in lines if ln]
        name = main_name
        if lines and lines[0].startswith("MSG:"):
            name = lines.pop(0).split()[1]
        entries = []
        for ln in lines:
            if "=" in ln:  # constant: TYPE NAME=VALUE (spaces allowed around '=')
                left, value = ln.split("=", 1)
                typ, fname = left.split()
                entries.append((typ, fname, value.strip()))
            else:
                typ, fname = ln.split()[:2]  # a trailing default value is ignored
                entries.append((typ, fname, None))
        out[S.normalize_schema_name(name)] = entries
    return out


@pytest.mark.parametrize("name", STANDARD)
def test_standard_definitions_match_ros2_humble(name: str) -> None:
    store = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_HUMBLE)
    canonical, _ = store.generate_msgdef(name, ros_version=2)
    assert _fields(S.SCHEMAS[name], name) == _fields(canonical, name)


@pytest.mark.parametrize("name", sorted(S.SCHEMAS))
def test_every_schema_parses_for_encoding_and_decoding(name: str) -> None:
    text = S.SCHEMAS[name]
    assert name in generate_dynamic(name, text)
    assert name in serialize_dynamic(name, text)
    for block in text.split("=" * 80)[1:]:
        assert block.startswith("\nMSG: ")


def test_custom_ground_truth_covers_every_agent_field() -> None:
    from dataclasses import fields

    from fusion_rt.messages import Agent

    agent = dict((f, t) for t, f, _ in _fields(S.SCHEMAS[S.GROUND_TRUTH], S.GROUND_TRUTH)["fusion_rt_msgs/msg/Agent"])
    assert set(agent) == {f.name for f in fields(Agent)}


def test_default_topics_cover_every_message_type() -> None:
    assert set(S.DEFAULT_TOPICS) == {CameraFrame, CameraInfo, RadarTensor, RadarDetections, MapRaster,
                                     TextContext, GroundTruth}
    assert len(set(S.DEFAULT_TOPICS.values())) == len(S.DEFAULT_TOPICS)
    assert set(S.SCHEMA_MODALITY) == set(S.SCHEMAS)


def test_byte_view_changes_only_the_occupancy_grid_cells() -> None:
    grid = S.byte_view_schema(S.OCCUPANCY_GRID, S.SCHEMAS[S.OCCUPANCY_GRID])
    assert "uint8[] data" in grid and "\nint8[] data" not in grid
    assert S.byte_view_schema("nav_msgs/OccupancyGrid", "int8[] data\n") == "uint8[] data\n"
    assert S.byte_view_schema(S.STRING, S.SCHEMAS[S.STRING]) == S.SCHEMAS[S.STRING]


@pytest.mark.parametrize("name", STANDARD)
def test_a_real_bags_definitions_match_and_a_substituted_one_does_not(name: str) -> None:
    """What rosbag2 writes for a standard type (ROS 2 Humble's definition, comments and constants
    included) lays out the wire as fusion-rt's; a field retyped or added does not."""
    store = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_HUMBLE)
    canonical, _ = store.generate_msgdef(name, ros_version=2)
    assert S.schema_matches(name, canonical) and S.schema_matches(name, S.SCHEMAS[name])
    assert not S.schema_matches(name, "Z[] data\n" + "=" * 80 + "\nMSG: std_msgs/Z\n")
    assert not S.schema_matches(name, S.SCHEMAS[name].replace("\n", "\nuint8 extra\n", 1))


def test_a_log_cannot_decode_a_known_type_with_its_own_layout(tmp_path) -> None:
    """A log may carry any schema text under a name fusion-rt decodes: std_msgs/String as a sequence
    of an empty type made mcap_ros2 build one Python object per payload byte (a 1.4 kB file, 2.4 GB).
    Such a channel is skipped with a schema issue, before anything is decoded."""
    import struct
    import tracemalloc

    from mcap.writer import CompressionType, Writer

    from fusion_rt.logs import LogReader

    path = tmp_path / "substituted.mcap"
    with open(path, "wb") as f:
        writer = Writer(f, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library="test")
        schema = writer.register_schema(S.STRING, "ros2msg", ("Z[] data\n" + "=" * 80 + "\nMSG: std_msgs/Z\n").encode())
        channel = writer.register_channel("/context/text", "cdr", schema)
        n = 2_000_000
        payload = b"\x00\x01\x00\x00" + struct.pack("<I", n) + bytes(n)  # CDR header, n empty elements
        writer.add_message(channel, log_time=1, publish_time=1, data=payload)
        writer.finish()
    tracemalloc.start()
    with LogReader(path) as reader:
        messages = list(reader.messages())
        issues = [i for i in reader.issues if i.kind == "schema"]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert messages == [] and len(issues) == 1 and "/context/text" in issues[0].detail
    assert peak < 50_000_000, peak  # decoded with the log's layout: ~230 MB of objects
