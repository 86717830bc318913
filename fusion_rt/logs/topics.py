"""Topic -> modality mapping for replay: by option, else simulator defaults, else by schema.

A log names its streams by topic; a model consumes modalities. `resolve_topics` decides which
topic feeds each modality, in this order (the first that applies wins, per modality):

1. the user's mapping (``--topics camera=/x,radar=/y``): the topic must exist in the log;
2. the simulator's default topic for that modality, when the log has it;
3. the schema: ``CompressedImage`` / ``Image`` is camera, ``fusion_rt_msgs/RadarTensor`` or a
   ``PointCloud2`` with a velocity field is radar, ``OccupancyGrid`` is map, ``String`` is text,
   ``fusion_rt_msgs/GroundTruth`` is ground truth. More than one candidate is an error that lists
   them all (the user settles it with ``--topics``; the example it gives is never a depth or
   infrared stream); none leaves the modality unmapped (the runtime then flags outputs degraded),
   and `TopicMap.passed_over` says which PointCloud2 topics were not taken as radar and why.

Pure functions over `TopicInfo` records, so the policy is testable without a log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fusion_rt.errors import ConfigError
from fusion_rt.logs import schemas as S

__all__ = ["TopicInfo", "TopicMap", "AmbiguousTopicError", "UnknownTopicError", "parse_topic_option",
           "resolve_topics", "DEFAULT_MODALITY_TOPICS", "MAPPABLE", "VELOCITY_FIELDS"]

#: What a topic can feed: the four model modalities plus ground truth (for metrics).
MAPPABLE: tuple[str, ...] = ("camera", "radar", "map", "text", "ground_truth")

#: Simulator topics per modality, in order of preference (a radar tensor before its detections:
#: the runtime's radar encoder consumes tensors natively).
DEFAULT_MODALITY_TOPICS: dict[str, tuple[str, ...]] = {
    "camera": ("/camera/front/image/compressed", S.RAW_IMAGE_TOPIC),
    "radar": ("/radar/front/tensor", "/radar/front/detections"),
    "map": ("/map/local",),
    "text": ("/context/text",),
    "ground_truth": ("/ground_truth",),
}

_SCHEMA_MODALITY: dict[str, str] = {
    S.COMPRESSED_IMAGE: "camera",
    S.IMAGE: "camera",
    S.RADAR_TENSOR: "radar",
    S.POINT_CLOUD2: "radar",  # only with a velocity field, see `_is_radar_cloud`
    S.OCCUPANCY_GRID: "map",
    S.STRING: "text",
    S.GROUND_TRUTH: "ground_truth",
}

#: PointCloud2 field names that make a cloud a radar cloud (a radial velocity or a velocity component).
VELOCITY_FIELDS: frozenset[str] = frozenset({"radial_velocity", "v_r", "vr", "doppler", "v_radial", "radial_speed",
                                             "range_rate", "vx", "vy", "vx_comp", "vy_comp"})


#: The schema of a fusion-rt results log's outputs (fusion_rt.replay.FUSION_OUTPUT; not imported: replay imports logs).
_RESULTS_SCHEMA = "fusion_rt_msgs/msg/FusionOutput"


class AmbiguousTopicError(ConfigError):
    """Several topics could feed one modality; the message lists them and how to choose."""


class UnknownTopicError(ConfigError):
    """A topic given by the user is not in the log, or a modality name is not known."""


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a log: its schema (normalized ``pkg/msg/Type``) and, for point clouds, field names."""

    topic: str
    schema_name: str
    # PointCloud2 only: the field names of the topic's first message that declares any; None when
    # unknown (no message seen, none decoded, or every message probed had an empty field list)
    point_fields: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TopicMap:
    """The resolved mapping: modality -> topic, and how each was chosen ("option", "default", "schema").

    `passed_over` holds, per modality left unmapped, the topics of its type the schema rule did not
    take and why ({"radar": {"/radar/points": "no x/y fields (it has range, azimuth, ...)"}}); see `note`.
    """

    topics: dict[str, str]
    how: dict[str, str]
    passed_over: dict[str, dict[str, str]] = field(default_factory=dict)

    def modality_of(self) -> dict[str, str]:
        """topic -> modality (the inverse mapping, for routing messages)."""
        return {t: m for m, t in self.topics.items()}

    def note(self, modality: str) -> str | None:
        """Why `modality` has no topic although the log has topics of its type, in one line
        ("PointCloud2 topics not taken as radar: /radar/points: no x/y fields (...)"), or None."""
        skipped = self.passed_over.get(modality)
        if modality in self.topics or not skipped:
            return None
        listed = "; ".join(f"{t}: {why}" for t, why in sorted(skipped.items())[:8])
        if len(skipped) > 8:
            listed += f"; and {len(skipped) - 8} more"
        return f"PointCloud2 topics not taken as {modality}: {listed}"


def parse_topic_option(text: str | None) -> dict[str, str]:
    """``camera=/x,radar=/y`` -> {"camera": "/x", "radar": "/y"}; refuses unknown modalities."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        modality, sep, topic = item.partition("=")
        modality, topic = modality.strip(), topic.strip()
        if not sep or not topic:
            raise ConfigError(f"--topics entry {item!r} must look like modality=/topic")
        if modality not in MAPPABLE:
            raise UnknownTopicError(f"--topics names modality {modality!r}; known: {list(MAPPABLE)}")
        if modality in out:
            raise ConfigError(f"--topics maps {modality!r} twice ({out[modality]!r} and {topic!r})")
        out[modality] = topic
    return out


def _radar_cloud_problem(info: TopicInfo) -> str | None:
    """Why a PointCloud2 topic is not a radar cloud (None: it is one, or its fields are unknown)."""
    if not info.point_fields:
        return None  # no fields seen: the schema is the only evidence
    names = {f.lower() for f in info.point_fields}
    shown = ", ".join(sorted(info.point_fields)[:12]) + (", ..." if len(info.point_fields) > 12 else "")
    if not {"x", "y"} <= names:
        return f"no x/y fields (it has {shown})"
    if not names & VELOCITY_FIELDS:
        return f"no velocity field, one of {', '.join(sorted(VELOCITY_FIELDS))} (it has {shown})"
    return None


def _is_radar_cloud(info: TopicInfo) -> bool:
    return _radar_cloud_problem(info) is None


#: Words in a topic name that mark an image stream that is not a colour camera (an RGB-D camera's
#: depth or infrared images): never offered as the example in an ambiguity error.
_NOT_A_CAMERA_WORDS: tuple[str, ...] = ("depth", "disparity", "infra", "confidence", "thermal")


def _not_a_camera(topic: str) -> bool:
    name = topic.lower()
    return any(w in name for w in _NOT_A_CAMERA_WORDS) or bool({"ir", "ir1", "ir2"} & set(name.split("/")))


def _schema_candidates(modality: str, infos: Iterable[TopicInfo]) -> list[TopicInfo]:
    out = []
    for info in infos:
        if _SCHEMA_MODALITY.get(S.normalize_schema_name(info.schema_name)) != modality:
            continue
        if S.normalize_schema_name(info.schema_name) == S.POINT_CLOUD2 and not _is_radar_cloud(info):
            continue
        out.append(info)
    return out


def resolve_topics(infos: Iterable[TopicInfo], modalities: Iterable[str] = MAPPABLE,
                   option: Mapping[str, str] | None = None) -> TopicMap:
    """Which topic feeds each of `modalities` (see the module docstring for the order of rules).

    Raises `UnknownTopicError` for an option topic the log lacks and `AmbiguousTopicError` when the
    schema rule finds several candidates. Modalities without any topic are left out of the map.
    """
    infos = list(infos)
    by_topic = {i.topic: i for i in infos}
    option = dict(option or {})
    topics: dict[str, str] = {}
    how: dict[str, str] = {}
    passed_over: dict[str, dict[str, str]] = {}
    for modality, topic in option.items():
        if modality not in MAPPABLE:
            raise UnknownTopicError(f"cannot map modality {modality!r}; known: {list(MAPPABLE)}")
        if topic not in by_topic:
            raise UnknownTopicError(f"topic {topic!r} (given for {modality}) is not in the log; it has "
                                    f"{sorted(by_topic)}")
        carried = _SCHEMA_MODALITY.get(S.normalize_schema_name(by_topic[topic].schema_name))
        if carried != modality:
            can = sorted(s for s, m in _SCHEMA_MODALITY.items() if m == modality)
            raise UnknownTopicError(f"topic {topic!r} carries {by_topic[topic].schema_name or 'no schema'}, which "
                                    f"cannot feed {modality} (that takes {can})")
        topics[modality], how[modality] = topic, "option"
    taken = set(topics.values())
    for modality in modalities:
        if modality in topics:
            continue
        default = next((t for t in DEFAULT_MODALITY_TOPICS.get(modality, ())
                        if t in by_topic and t not in taken
                        and _SCHEMA_MODALITY.get(S.normalize_schema_name(by_topic[t].schema_name)) == modality), None)
        if default is not None:
            topics[modality], how[modality] = default, "default"
            taken.add(default)
            continue
        candidates = [c for c in _schema_candidates(modality, infos) if c.topic not in taken]
        if len(candidates) > 1 and any(S.normalize_schema_name(i.schema_name) == _RESULTS_SCHEMA for i in infos):
            # its BEV render and camera copy are both images: "choose --topics camera=/fusion/bev/..." misled
            raise UnknownTopicError("the log is a fusion-rt results log (replay --out: /fusion/outputs), not a sensor "
                                    "log: pass the sensor log it was replayed from")
        if len(candidates) > 1:
            # every candidate is listed; the example is one that looks like a camera (not depth, IR)
            ordered = sorted(candidates, key=lambda c: (modality == "camera" and _not_a_camera(c.topic), c.topic))
            listed = ", ".join(f"{c.topic} ({c.schema_name})" for c in ordered)
            example = ordered[0].topic
            if modality == "camera" and _not_a_camera(example):
                example = "TOPIC"  # every candidate is a depth or infrared stream: no example
            raise AmbiguousTopicError(f"{len(candidates)} topics could be the {modality}: {listed}; choose one with "
                                      f"--topics {modality}={example}")
        if candidates:
            topics[modality], how[modality] = candidates[0].topic, "schema"
            taken.add(candidates[0].topic)
        elif modality == "radar":
            skipped = {i.topic: why for i in infos if i.topic not in taken
                       and S.normalize_schema_name(i.schema_name) == S.POINT_CLOUD2
                       and (why := _radar_cloud_problem(i)) is not None}
            if skipped:
                passed_over[modality] = skipped
    return TopicMap(topics, how, passed_over)
