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
