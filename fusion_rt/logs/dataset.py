"""`LogDataset`: camera-triggered training samples from logs, streamed in one pass per log.

Each camera frame becomes a `Sample` holding the ground truth with the same stamp (if any) and,
per other stream, the latest message with ``stamp <= camera stamp`` that is no older than that
stream's max age (the `LatestWithin` policy of DESIGN.md section 3), else None.

Streaming: a camera frame is emitted once a message stamped later than the frame (plus
`reorder_window_ns`) has been read, or at the end of the log, so that messages with the same
stamp written after the frame (its ground truth, a radar scan) are still matched. Only the
messages a pending or future frame can still use are kept: each stream back to its max age
behind the emitted frames (ground truth and streams without a limit: the longest limit), so a
camera frame recorded late after its stamp (encode and transport latency, the usual case in a
vehicle log, whose file order is receive order) still finds the radar scans stamped before it.
Output is deterministic: frames come out in stamp order (file order among equal stamps).

A log is anything `fusion_rt.logs.bags.open_log` opens: an MCAP file, or a ROS 2 bag directory
(MCAP or sqlite3 storage) or ``.db3`` file, so training, evaluation and calibration read bags too.

Topics are chosen per log as replay chooses them (`fusion_rt.logs.topics.resolve_topics`: the
`topics` option, else the simulator's topics, else the one topic of the right schema): a log with
two cameras is refused as ambiguous until `topics={"camera": ...}` names one, instead of mixing
both into one stream. Radar tensors and radar detections are two streams of a sample: the radar
topic resolved for the log feeds its own type, and the other type takes its simulator topic or
its only topic, if any. Camera info comes from the CameraInfo topic nearest the camera's.
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusion_rt.errors import ConfigError
from fusion_rt.logs import schemas as S
from fusion_rt.logs.bags import open_log
from fusion_rt.logs.reader import ReadIssue
from fusion_rt.logs.topics import AmbiguousTopicError, TopicInfo, UnknownTopicError, resolve_topics
from fusion_rt.messages import (
    CameraFrame,
    CameraInfo,
    GroundTruth,
    MapRaster,
    RadarDetections,
    RadarTensor,
    TextContext,
)

__all__ = ["LogDataset", "Sample", "DEFAULT_MAX_AGE_NS", "dataset_topics"]

#: Max age per stream: "radar" covers the tensor and the detections ("radar_tensor" /
#: "radar_detections" override it), "map" and "text" change slowly. None = no limit.
DEFAULT_MAX_AGE_NS: dict[str, int | None] = {"radar": 100_000_000, "map": 2_000_000_000, "text": 2_000_000_000}
_AGE_KEYS = ("radar", "radar_tensor", "radar_detections", "map", "text")

# message type -> Sample field (camera info has no age limit: calibration holds until replaced)
_SLOTS: dict[type, str] = {RadarTensor: "radar_tensor", RadarDetections: "radar_detections", MapRaster: "map",
                           TextContext: "text", CameraInfo: "camera_info"}


def dataset_topics(infos: Sequence[TopicInfo], option: Mapping[str, str] | None = None) -> dict[str, str]:
    """The topic of each stream a `Sample` takes (keys: camera, ground_truth, radar_tensor,
    radar_detections, map, text, camera_info; a stream the log lacks is left out). See the module
    docstring; UnknownTopicError / AmbiguousTopicError as `resolve_topics` raises them."""
    option = dict(option or {})
    routes = dict(resolve_topics(infos, ("camera", "radar", "map", "text", "ground_truth"), option).topics)
    radar = routes.pop("radar", None)
    for slot, schema in (("radar_tensor", S.RADAR_TENSOR), ("radar_detections", S.POINT_CLOUD2)):
        typed = [i for i in infos if S.normalize_schema_name(i.schema_name) == schema]
        if radar is not None and radar in {i.topic for i in typed}:
            routes[slot] = radar
        elif "radar" not in option and typed:  # the other radar type: its default or only topic
            try:
                found = resolve_topics(typed, ("radar",)).topics.get("radar")
            except AmbiguousTopicError:
                found = None  # the resolved radar topic is the one that counts; this stream stays empty
            if found is not None:
                routes[slot] = found
    infos_topics = sorted(i.topic for i in infos if S.normalize_schema_name(i.schema_name) == S.CAMERA_INFO)
    if infos_topics and "camera" in routes:
        camera = routes["camera"]
        routes["camera_info"] = max(infos_topics, key=lambda t: (len(os.path.commonprefix([t, camera])), t))
    return routes


@dataclass(frozen=True, eq=False)
class Sample:
    """One camera frame with the context a model sees at its stamp.

    `ages_ns` gives, per stream (radar_tensor, radar_detections, map, text), camera stamp minus
    the chosen message's stamp, or None when none qualified.
    """

    source: str
    stamp_ns: int
    camera: CameraFrame
    ground_truth: GroundTruth | None
    radar_tensor: RadarTensor | None
    radar_detections: RadarDetections | None
    map: MapRaster | None
    text: TextContext | None
    camera_info: CameraInfo | None
    ages_ns: dict[str, int | None] = field(default_factory=dict)
    # The log's radar is its detections (no radar tensor topic), as replay reads it: a model's input
    # bins them (fusion_rt.preprocess.detections_to_tensor); beside a tensor topic they are not the radar.
    radar_from_detections: bool = False

    @property
    def labels(self) -> dict[str, int] | None:
        """Scene labels of the matching ground truth, None when the log has none for this frame."""
        return None if self.ground_truth is None else self.ground_truth.labels


class _History:
    """Messages of one stream sorted by stamp, pruned to what pending frames can still use."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.items: list[Any] = []

    def add(self, message: Any) -> None:
        i = bisect.bisect_right(self.stamps, message.stamp_ns)
        self.stamps.insert(i, message.stamp_ns)
        self.items.insert(i, message)

    def latest_at(self, stamp_ns: int) -> Any | None:
        i = bisect.bisect_right(self.stamps, stamp_ns) - 1
        return self.items[i] if i >= 0 else None

    def prune(self, floor_ns: int) -> None:
        """Keep the latest message at or before `floor_ns` and everything after it."""
        i = bisect.bisect_right(self.stamps, floor_ns) - 1
        if i > 0:
            del self.stamps[:i]
            del self.items[:i]


class LogDataset:
    """Iterate `Sample`s over one or more logs (each log matched on its own, in the given order).

    max_age_ns: per-stream limits (see `DEFAULT_MAX_AGE_NS`); keys not given have no limit.
    topics: topic per modality (as replay's --topics: camera, radar, map, text, ground_truth);
        the rest is resolved per log (`dataset_topics`). camera_topic: the same as topics["camera"].
    reorder_window_ns: how far out of stamp order messages may arrive in the file (0: in order).
    After iterating, `issues` maps each log path to what its reader skipped.
    """

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 max_age_ns: Mapping[str, int | None] | None = None, camera_topic: str | None = None,
                 reorder_window_ns: int = 0, topics: Mapping[str, str] | None = None) -> None:
        self.paths = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
        ages = dict(DEFAULT_MAX_AGE_NS if max_age_ns is None else max_age_ns)
        for key, value in ages.items():
            if key not in _AGE_KEYS:
                raise ConfigError(f"max_age_ns key {key!r} is not one of {_AGE_KEYS}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"max_age_ns[{key!r}] must be a non-negative integer or None, got {value!r}")
        if isinstance(reorder_window_ns, bool) or not isinstance(reorder_window_ns, int) or reorder_window_ns < 0:
            raise ConfigError(f"reorder_window_ns must be a non-negative integer, got {reorder_window_ns!r}")
        radar = ages.get("radar")
        self.max_age_ns: dict[str, int | None] = {
            "radar_tensor": ages.get("radar_tensor", radar), "radar_detections": ages.get("radar_detections", radar),
            "map": ages.get("map"), "text": ages.get("text"), "camera_info": None,
        }
        # How far behind the emitted frames each stream is kept, for frames that arrive late: its max
        # age (what a frame may still take from it); streams without a limit, and the ground truth, the longest.
        longest = max((v for v in self.max_age_ns.values() if v is not None), default=0)
        self._keep_ns = {slot: longest if age is None else age for slot, age in self.max_age_ns.items()}
        self._keep_ns["ground_truth"] = longest
        self.topics = dict(topics or {})
        if camera_topic is not None:
            self.topics["camera"] = camera_topic
        self.reorder_window_ns = reorder_window_ns
        self.issues: dict[str, list[ReadIssue]] = {}

    def __iter__(self) -> Iterator[Sample]:
        for path in self.paths:
            yield from self._samples(path)

    def _samples(self, path: str) -> Iterator[Sample]:
        histories = {slot: _History() for slot in _SLOTS.values()}
        truths: dict[int, GroundTruth] = {}
        pending: list[tuple[int, int, CameraFrame]] = []  # heap of (stamp, arrival, frame)
        arrival = 0
        watermark: int | None = None
        with open_log(path) as reader:  # an MCAP file or a ROS 2 bag (directory, .mcap or .db3 storage)
            try:
                routes = dataset_topics(reader.topics(), self.topics)
            except (UnknownTopicError, AmbiguousTopicError) as exc:
                raise type(exc)(f"{path!r}: {exc}") from exc
            slot_of = {topic: slot for slot, topic in routes.items()}
            from_detections = "radar_tensor" not in routes and "radar_detections" in routes
            try:
                for item in reader.messages(topics=sorted(slot_of)):
                    message = item.message
                    slot = slot_of[item.topic]
                    if slot == "camera":
                        if isinstance(message, CameraFrame):
                            heapq.heappush(pending, (message.stamp_ns, arrival, message))
                            arrival += 1
                    elif slot == "ground_truth":
                        if isinstance(message, GroundTruth):
                            truths.setdefault(message.stamp_ns, message)
                    elif _SLOTS.get(type(message)) == slot:
                        histories[slot].add(message)
                    watermark = message.stamp_ns if watermark is None else max(watermark, message.stamp_ns)
                    ready = watermark - self.reorder_window_ns
                    while pending and pending[0][0] < ready:
                        yield self._sample(path, heapq.heappop(pending)[2], histories, truths, from_detections)
                    floor = min(ready, pending[0][0]) if pending else ready
                    for slot, history in histories.items():
                        history.prune(floor - self._keep_ns[slot])
                    for stamp in [s for s in truths if s < floor - self._keep_ns["ground_truth"]]:
                        del truths[stamp]
                while pending:
                    yield self._sample(path, heapq.heappop(pending)[2], histories, truths, from_detections)
            finally:
                self.issues[path] = list(reader.issues)

    def _sample(self, path: str, frame: CameraFrame, histories: dict[str, _History],
                truths: dict[int, GroundTruth], from_detections: bool = False) -> Sample:
        chosen: dict[str, Any] = {}
        ages: dict[str, int | None] = {}
        for slot, history in histories.items():
            message = history.latest_at(frame.stamp_ns)
            age = None if message is None else frame.stamp_ns - message.stamp_ns
            limit = self.max_age_ns[slot]
            if age is not None and limit is not None and age > limit:
                message, age = None, None
            chosen[slot] = message
            if slot != "camera_info":
                ages[slot] = age
        return Sample(source=path, stamp_ns=frame.stamp_ns, camera=frame, ground_truth=truths.get(frame.stamp_ns),
                      radar_from_detections=from_detections,
                      ages_ns=ages, **chosen)
