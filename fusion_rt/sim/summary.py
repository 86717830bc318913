"""A drive's summary, accumulated from its messages as they stream past (no second pass)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fusion_rt.messages import GroundTruth, Message

__all__ = ["DriveSummary"]


@dataclass
class DriveSummary:
    """Counts and figures of one simulated drive; `add` every message, then read `to_dict()`."""

    counts: Counter = field(default_factory=Counter)  # message type name -> count
    first_ns: int | None = None
    last_ns: int | None = None
    condition_frames: Counter = field(default_factory=Counter)  # condition -> camera frames
    scene_frames: Counter = field(default_factory=Counter)  # scene type -> camera frames
    label_frames: Counter = field(default_factory=Counter)  # scene label -> frames where it is 1
    agent_ids: dict[str, set] = field(default_factory=lambda: defaultdict(set))  # class -> ids seen
    # condition -> [radar-visible agents, of which camera-visible]: the camera's share of what radar sees.
    seen_by_radar: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    detections: int = 0

    def add(self, msg: Message) -> None:
        kind = type(msg).__name__
        self.counts[kind] += 1
        stamp = msg.stamp_ns
        self.first_ns = stamp if self.first_ns is None else min(self.first_ns, stamp)
        self.last_ns = stamp if self.last_ns is None else max(self.last_ns, stamp)
        if kind == "RadarDetections":
            self.detections += len(msg.points)
        if isinstance(msg, GroundTruth):
            self.condition_frames[msg.condition] += 1
            self.scene_frames[msg.scene_type] += 1
            for name, value in msg.labels.items():
                self.label_frames[name] += int(bool(value))
            pair = self.seen_by_radar[msg.condition]
            for agent in msg.agents:
                self.agent_ids[agent.class_name].add(agent.id)
                if agent.visible_radar:
                    pair[0] += 1
                    pair[1] += int(agent.visible_camera)

    @property
    def duration_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    def to_dict(self) -> dict:
        frames = self.counts.get("GroundTruth", 0)
        return {
            "duration_s": round(self.duration_s, 3),
            "first_stamp_ns": self.first_ns,
            "last_stamp_ns": self.last_ns,
            "messages": dict(sorted(self.counts.items())),
            "camera_frames": self.counts.get("CameraFrame", 0),
            "radar_detections_per_scan": round(self.detections / max(1, self.counts.get("RadarDetections", 0)), 2),
            "conditions": dict(sorted(self.condition_frames.items())),
            "scene_types": dict(sorted(self.scene_frames.items())),
            "label_rate": {k: round(v / max(1, frames), 3) for k, v in sorted(self.label_frames.items())},
            "agents": {k: len(v) for k, v in sorted(self.agent_ids.items())},
            "camera_sees_of_radar_visible": {
                cond: round(cam / radar, 3) if radar else None
                for cond, (radar, cam) in sorted(self.seen_by_radar.items())
            },
        }
