"""Offline replay of a recorded drive through a model package, and deployment comparison (DESIGN.md §6).

`replay(log, package, config)` feeds a log's messages to a `FusionRuntime` and returns a
`ReplayResult`: a JSON summary (counts, latency percentiles per stage, task metrics against the
log's ground truth overall and per condition, what reading skipped), per-frame records for the
report, and the worst frames. With `config.out` it also writes a results MCAP that Foxglove opens:

=========================  ========================================  ===============================
topic                      schema                                    content
=========================  ========================================  ===============================
/fusion/outputs            fusion_rt_msgs/msg/FusionOutput           fused output (deterministic)
/fusion/timings            fusion_rt_msgs/msg/FusionTimings          per-stage timings, deadline misses
/fusion/bev/compressed     sensor_msgs/msg/CompressedImage (PNG)     BEV occupancy, colour per class
/fusion/camera/compressed  sensor_msgs/msg/CompressedImage (JPEG)    camera frame with the output drawn
=========================  ========================================  ===============================

Modes (`ReplayMode`):

- lockstep: every message in log order, one thread; the same log and package give byte-identical
  `/fusion/outputs` (timings, which vary by nature, and the timing-based `deadline_miss:*` flags
  live on `/fusion/timings`), whatever the ONNX Runtime thread count.
- burst: as fast as possible; a prefetch thread reads the log and decodes JPEGs (OpenCV releases
  the GIL) into a small bounded queue while the runtime infers. The decode is the runtime's own
  (same reduced-resolution JPEG decode), so outputs equal lockstep's.
- realtime: messages are released at their log times; when the runtime falls behind, a newer
  message of a modality supersedes the waiting one (latest wins), which is counted as dropped.

`compare(log, package_a, package_b)` replays both in lockstep side by side (the same messages,
interleaved, so latencies are measured under the same load) and reports output divergence,
decision agreement, the metric of each and latency ratios.
"""

from __future__ import annotations

import enum
import heapq
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from fusion_rt.errors import ConfigError, DecodeError, LogError, PackageError, UnsupportedMessageError
from fusion_rt.logs.bags import LogSource, open_log
from fusion_rt.logs.reader import NOTE_KINDS, ReadIssue
from fusion_rt.logs.schemas import COMPRESSED_IMAGE, SCHEMAS
from fusion_rt.logs.topics import TopicMap, resolve_topics
from fusion_rt.messages import CameraFrame, GroundTruth, RadarDetections
from fusion_rt.outputs import check_outputs, destination, partial_path, with_tell
from fusion_rt.package import ModelPackage, bev_grid_text, load_package
from fusion_rt.preprocess import (  # noqa: F401 (EGO_FRAMES, detections_to_tensor re-exported)
    EGO_FRAMES,
    PreprocessConfig,
    detections_to_tensor,
    is_ego_frame,
    is_radar_frame,
)
from fusion_rt.rig import BevGrid, Radar, log_bev_grid
from fusion_rt.runtime import FusionOutput, FusionRuntime
from fusion_rt.sync import JUMP_THRESHOLD_NS

__all__ = [
    "ReplayMode",
    "ReplayConfig",
    "ReplayResult",
    "FrameRecord",
    "WorstFrame",
    "CompareResult",
    "replay",
    "compare",
    "detections_to_tensor",
    "annotate_frame",
    "bev_image",
    "FUSION_OUTPUT",
    "FUSION_TIMINGS",
    "RESULT_SCHEMAS",
    "RESULT_TOPICS",
    "STAT_KEYS",
]

Progress = Callable[[float, float | None], None]  # (log seconds done, log seconds in all or None)

#: Percentiles every latency entry of the summary carries.
STAT_KEYS: tuple[str, ...] = ("p50", "p90", "p99", "max")

FUSION_OUTPUT = "fusion_rt_msgs/msg/FusionOutput"
FUSION_TIMINGS = "fusion_rt_msgs/msg/FusionTimings"

_SEPARATOR = "=" * 80
_TIME = "int32 sec\nuint32 nanosec\n"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"

_FUSION_OUTPUT = """\
# One fused output of the fusion-rt runtime for a trigger (camera) frame. Deterministic in
# lockstep replay: timings and deadline misses are on /fusion/timings instead.
std_msgs/Header header            # stamp: the trigger frame's stamp
string status                     # ok | degraded
string[] flags                    # degraded:<modality>_missing, stale:<modality>
string[] scene_labels
float32[] scene_probabilities     # parallel to scene_labels
string[] modalities
float32[] attention_share         # parallel to modalities: mean share over the head's attention rows
string[] source_modalities        # modalities whose features were used (the trigger included)
builtin_interfaces/Time[] source_stamps
int64[] source_ages_ns            # output stamp - source stamp
string[] bev_classes
float32[] bev_occupied_fraction   # share of BEV cells with occupancy >= 0.5, per class
"""

_FUSION_TIMINGS = """\
# Per-stage timings of one fused output (wall clock: they differ run to run).
std_msgs/Header header            # stamp: the output's stamp
string[] stages                   # e.g. camera_preprocess, camera_encoder, head, overhead, end_to_end
float64[] milliseconds            # parallel to stages
string[] deadline_misses          # stages over their latency budget
string mode                       # lockstep | burst | realtime
"""

#: Schema name -> ros2msg text of the result types (registered into the results log).
RESULT_SCHEMAS: dict[str, str] = {
    FUSION_OUTPUT: f"{_FUSION_OUTPUT}{_SEPARATOR}\nMSG: std_msgs/Header\n{_HEADER}"
                   f"{_SEPARATOR}\nMSG: builtin_interfaces/Time\n{_TIME}",
    FUSION_TIMINGS: f"{_FUSION_TIMINGS}{_SEPARATOR}\nMSG: std_msgs/Header\n{_HEADER}"
                    f"{_SEPARATOR}\nMSG: builtin_interfaces/Time\n{_TIME}",
}

#: Topics of the results log.
RESULT_TOPICS: dict[str, str] = {
    "outputs": "/fusion/outputs",
    "timings": "/fusion/timings",
    "bev": "/fusion/bev/compressed",
    "camera": "/fusion/camera/compressed",
}

# BGR colour per BEV class (unknown classes cycle through the tail).
_CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "car": (60, 80, 240), "truck": (40, 160, 255), "pedestrian": (80, 230, 80), "cyclist": (240, 200, 60),
}
_EXTRA_COLOURS = ((200, 80, 200), (200, 200, 200), (120, 120, 255))
_THRESHOLD = 0.5  # decision threshold of scene labels and BEV cells (metrics, agreement, drawings)
# A frame is scored against the ground truth of its exact stamp, and a log's ground truth is read
# in stamp order: a frame output more than this before the newest ground truth read is never scored,
# so its output (and replay's camera frame for the worst-frames thumbnails) is let go. The margin
# keeps the scores exact for ground truth up to 1 s out of stamp order in the file.
_TRUTH_REORDER_NS = 1_000_000_000
# Ground truth is taken as progress only up to _TRUTH_REORDER_NS past the _OUTPUT_RANK-th newest
# frame output: one ground truth (or output) with a wrong stamp far ahead does not end the scoring.
_OUTPUT_RANK = 3
# Once ground truth has stopped coming for this long (log time, measured on the _OUTPUT_RANK-th
# newest output), outputs older than this are let go: after a log's last ground truth (labels on
# the first minutes of a drive only) every later output was held to the end, ~16 KB each (an hour
# at 20 Hz: over 1 GB). Ground truth that keeps coming, however late behind its frames, stops nothing.
_OUTPUT_HOLD_NS = 10_000_000_000


class ReplayMode(str, enum.Enum):
    """How messages are paced (see the module docstring)."""

    LOCKSTEP = "lockstep"
    REALTIME = "realtime"
    BURST = "burst"


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay. Validated up front; the offending value is named in the error."""

    backend: str = "onnxruntime"  # or "tensorrt" (a package with engines/)
    mode: ReplayMode | str = ReplayMode.LOCKSTEP
    topics: Mapping[str, str] = field(default_factory=dict)  # modality -> topic overrides (--topics)
    drop: tuple[str, ...] = ()  # modalities masked for the whole replay (sensor ablation)
    threads: int | None = None  # ONNX Runtime intra-op threads per graph (None: its default)
    out: str | os.PathLike | None = None  # results MCAP
    worst_frames: int = 6  # frames kept (with their images) for the report
    prefetch: int = 8  # burst/realtime read-ahead queue: 8 messages is ~0.1 s of a 20 Hz rig, bounded memory
    realtime_speed: float = 1.0  # realtime mode: log seconds per wall second
    keep_frames: bool = True  # per-frame records (the report's timelines); off saves memory on long logs

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", ReplayMode(self.mode))
        except ValueError:
            modes = [m.value for m in ReplayMode]
            raise ConfigError(f"replay mode must be one of {modes}, got {self.mode!r}") from None
        object.__setattr__(self, "drop", tuple(dict.fromkeys(self.drop)))  # "radar,radar" once
        object.__setattr__(self, "topics", dict(self.topics))
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")
        for name in ("worst_frames", "prefetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "worst_frames" else 1):
                raise ConfigError(f"{name} must be a {'non-negative' if name == 'worst_frames' else 'positive'} "
                                  f"integer, got {value!r}")
        if not (isinstance(self.realtime_speed, (int, float)) and math.isfinite(self.realtime_speed)
                and self.realtime_speed > 0):
            raise ConfigError(f"realtime_speed must be a positive number, got {self.realtime_speed!r}")


@dataclass(frozen=True)
class FrameRecord:
    """What happened to one camera frame: an output, or why there was none."""

    stamp_ns: int
    status: str  # ok | degraded | rejected | dropped
    flags: tuple[str, ...] = ()
    scene: tuple[float, ...] = ()  # probabilities, in the package's scene_labels order
    share: tuple[float, ...] = ()  # attention share, in the package's modality order
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class WorstFrame:
    """A frame the report shows: its stamp, why it is bad, and a JPEG thumbnail with the output drawn."""

    stamp_ns: int
    score: float
    reason: str  # "scene error" (mean |p - label|) or "latency" (end-to-end ms, logs without ground truth)
    condition: str | None
    thumbnail_jpeg: bytes


@dataclass
class ReplayResult:
    """A replay's outcome: `summary` is the JSON summary; `frames` and `worst` feed the report."""

    summary: dict
    frames: list[FrameRecord]
    worst: list[WorstFrame]
    conditions: dict[int, str]  # stamp -> condition, for frames with ground truth
    scene_labels: tuple[str, ...]
    modalities: tuple[str, ...]

    @property
    def warnings(self) -> list[str]:
        """User-facing warnings (a truncated log, skipped records, unmapped modalities)."""
        return list(self.summary.get("warnings", []))


@dataclass
class CompareResult:
    """A comparison of two deployments on one log; `summary` is the JSON."""

    summary: dict


# ------------------------------------------------------------------------------------- converters

def _predecode(frame: CameraFrame, config: PreprocessConfig) -> CameraFrame:
    """A JPEG/PNG frame decoded exactly as the runtime would (reduced-resolution JPEG decode), as bgr8.

    The runtime then only resizes and normalizes it, so outputs equal those of the compressed frame.
    A frame that does not decode is passed on unchanged, for the runtime to reject with its reason.
    """
    from fusion_rt.preprocess import decode_compressed_bgr  # the runtime's own decode: same pixels

    fmt = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}.get(frame.encoding.lower())
    if fmt is None:
        return frame
    try:
        bgr = decode_compressed_bgr(frame, fmt, config)
    except DecodeError:
        return frame
    h, w = bgr.shape[:2]
    return CameraFrame(stamp_ns=frame.stamp_ns, data=np.ascontiguousarray(bgr).tobytes(), encoding="bgr8",
                       frame_id=frame.frame_id, width=w, height=h)


def _frame_bgr(frame: CameraFrame) -> np.ndarray | None:
    """Full-resolution BGR pixels of a camera frame for drawing (None when it does not decode)."""
    enc = frame.encoding.lower()
    if enc in ("jpeg", "jpg", "png"):
        image = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        return image
    channels = {"bgr8": 3, "rgb8": 3, "mono8": 1}.get(enc)
    if channels is None or len(frame.data) != frame.width * frame.height * channels:
        return None
    image = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, channels)
    if enc == "rgb8":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if enc == "mono8":
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image.copy()


def annotate_frame(bgr: np.ndarray, status: str, flags: tuple[str, ...], scene: Mapping[str, float]) -> np.ndarray:
    """Draw an output onto a camera image (in place, and returned): status, flags, one bar per label."""
    h, w = bgr.shape[:2]
    scale = max(0.35, w / 1280)
    thick = 1 if w < 900 else 2
    colour = (80, 220, 80) if status == "ok" else (0, 165, 255) if status == "degraded" else (60, 60, 240)
    panel_w = int(min(w, 330 * scale / 0.5))
    rows = len(scene) + 1 + (1 if flags else 0)
    line = int(26 * scale / 0.5)
    overlay = bgr.copy()
    cv2.rectangle(overlay, (0, 0), (panel_w, line * rows + 8), (20, 20, 20), -1)
    cv2.addWeighted(overlay, 0.6, bgr, 0.4, 0, dst=bgr)
    y = line - 6
    cv2.putText(bgr, status.upper(), (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    if flags:
        y += line
        text = ", ".join(f.split(":", 1)[-1] for f in flags)[:60]
        cv2.putText(bgr, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, (0, 165, 255), thick, cv2.LINE_AA)
    bar_x = int(panel_w * 0.45)
    bar_w = panel_w - bar_x - 8
    for label, p in scene.items():
        y += line
        cv2.putText(bgr, f"{label} {p:.2f}", (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, (230, 230, 230), thick,
                    cv2.LINE_AA)
        top = y - int(line * 0.55)
        cv2.rectangle(bgr, (bar_x, top), (bar_x + bar_w, y), (90, 90, 90), 1)
        fill = (80, 220, 80) if p >= _THRESHOLD else (200, 200, 200)
        cv2.rectangle(bgr, (bar_x, top), (bar_x + int(bar_w * min(max(p, 0.0), 1.0)), y), fill, -1)
    return bgr


def bev_image(bev: np.ndarray, classes: tuple[str, ...], cell_px: int = 4) -> np.ndarray:
    """BEV occupancy [C, rows, cols] -> a BGR image: each cell takes the colour of its most likely
    class, blended by that probability over a dark background, ego at the bottom centre."""
    probs = np.asarray(bev, dtype=np.float32)
    best = probs.argmax(axis=0)  # [rows, cols]
    p = probs.max(axis=0)
    palette = np.array([_CLASS_COLOURS.get(c, _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)])
                        for i, c in enumerate(classes)], dtype=np.float32)
    background = np.array((30, 30, 30), dtype=np.float32)
    alpha = np.clip((p - 0.2) / 0.6, 0.0, 1.0)[..., None]  # below 0.2: background; above 0.8: full colour
    image = (background * (1 - alpha) + palette[best] * alpha).astype(np.uint8)
    image = cv2.resize(image, (image.shape[1] * cell_px, image.shape[0] * cell_px), interpolation=cv2.INTER_NEAREST)
    rows, cols = image.shape[:2]
    cv2.drawMarker(image, (cols // 2, rows - 4), (255, 255, 255), cv2.MARKER_TRIANGLE_UP, 10, 2)
    return image


# ---------------------------------------------------------------------------------- results writer

class _ResultsWriter:
    """The results MCAP: ROS 2 (CDR) messages through `mcap_ros2`, like `LogWriter`, plus the result types.

    (`LogWriter` writes `fusion_rt.messages` only; the result types are registered here.) It is
    written beside `path` and renamed into place by `close(complete=True)`: a failed or interrupted
    replay leaves whatever was at `path` before, never a partial results log. A symlink's target is
    replaced (the link kept); a device or FIFO is written in place (`fusion_rt.outputs.destination`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from mcap.writer import CompressionType
        from mcap_ros2.writer import Writer as Ros2Writer

        self.path = os.fspath(path)
        self._final, self._in_place = destination(self.path)
        self._tmp = self._final if self._in_place else partial_path(self._final)
        try:
            self._file = with_tell(open(self._tmp, "wb"))  # noqa: SIM115 (closed in close()); a FIFO too
        except OSError as exc:
            raise LogError(f"cannot create results log {self.path!r}: {exc.strerror or exc}") from exc
        self._writer = Ros2Writer(self._file, compression=CompressionType.ZSTD)
        self._schemas = {}
        self._sequence: dict[str, int] = {}

    def _schema(self, name: str):
        schema = self._schemas.get(name)
        if schema is None:
            text = RESULT_SCHEMAS.get(name) or SCHEMAS[name]
            schema = self._schemas[name] = self._writer.register_msgdef(name, text)
        return schema

    def write(self, topic: str, schema_name: str, message: dict, stamp_ns: int) -> None:
        sequence = self._sequence.get(topic, 0)
        self._writer.write_message(topic, self._schema(schema_name), message, log_time=stamp_ns,
                                   publish_time=stamp_ns, sequence=sequence)
        self._sequence[topic] = sequence + 1

    def close(self, complete: bool = True) -> None:
        """Finish the log; in place at `path` when `complete`, else removed."""
        if self._file.closed:
            return
        try:
            try:
                self._writer.finish()
            finally:
                self._file.close()  # may fail too (a full disk while flushing): the partial file still goes
            if complete and not self._in_place:
                os.replace(self._tmp, self._final)
        except BrokenPipeError:  # a pipe's reader went away: the CLI exits 141
            if complete:
                raise
        except OSError as exc:
            if complete:  # else the log is dropped anyway: the error that stopped the replay is the one to say
                raise LogError(f"cannot write results log {self.path!r}: {exc.strerror or exc}") from exc
        finally:
            if not self._in_place and self._tmp.exists():
                self._tmp.unlink()


def _time(stamp_ns: int) -> dict:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return {"sec": sec, "nanosec": nanosec}


def _output_message(out: FusionOutput, package: ModelPackage) -> dict:
    """A FusionOutput as a fusion_rt_msgs/msg/FusionOutput dict (no timing-dependent field)."""
    occupied = (out.bev >= _THRESHOLD).reshape(out.bev.shape[0], -1).mean(axis=1)
    sources = sorted(out.sources.items(), key=lambda kv: package.modalities.index(kv[0]))
    return {
        "header": {"stamp": _time(out.stamp_ns), "frame_id": "base_link"},
        "status": out.status,
        "flags": [f for f in out.flags if not f.startswith("deadline_miss:")],
        "scene_labels": list(out.scene),
        "scene_probabilities": [float(v) for v in out.scene.values()],
        "modalities": list(out.modality_share),
        "attention_share": [float(v) for v in out.modality_share.values()],
        "source_modalities": [m for m, _ in sources],
        "source_stamps": [_time(s.stamp_ns) for _, s in sources],
        "source_ages_ns": [int(s.age_ns) for _, s in sources],
        "bev_classes": list(package.bev_classes),
        "bev_occupied_fraction": [float(v) for v in occupied],
    }


# ------------------------------------------------------------------------------------------ metrics

def _nan_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


class _Metrics:
    """Scene AUC/F1 and BEV IoU against ground truth, overall and per condition, joined by stamp.

    Memory stays bounded when ground truth covers only some frames (labelled keyframes) or none:
    an output waits for its ground truth until one stamped more than `_TRUTH_REORDER_NS` later has
    been read (then `on_expire` is called with its stamp), and with `scored=False` (a log without a
    ground truth topic) outputs are not kept at all.

    Ground truth counts as progress only up to `_TRUTH_REORDER_NS` past the frames output so far
    (the `_OUTPUT_RANK`-th newest output stamp, so that one output with a wrong stamp does not move it
    either): one ground truth with a wrong stamp (far ahead) would otherwise let every later frame go
    unscored and have the good ground truth after it counted late. An order statistic of the ground
    truth stamps themselves would lag by whole label intervals on labelled keyframes (memory).
    """

    def __init__(self, scene_labels: tuple[str, ...], bev_classes: tuple[str, ...], scored: bool = True) -> None:
        self.scene_labels = scene_labels
        self.bev_classes = bev_classes
        self.scored = scored
        self._outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # stamp -> (scene probs, bev >= 0.5)
        self._expiry: list[int] = []  # min-heap of the stamps put in _outputs (stale ones skipped when popped)
        self._newest_truth: int | None = None
        self._newest_outputs: list[int] = []  # min-heap of the _OUTPUT_RANK newest distinct output stamps
        self.late_truths = 0  # ground truth read more than _TRUTH_REORDER_NS behind a newer one
        self.truths_after_hold = 0  # ground truth read after its frame's output was let go (_OUTPUT_HOLD_NS)
        self._truth_seen = False
        self._truth_stamps: list[int] = []  # min-heap of the stamps put in _truth (stale ones skipped when popped)
        self.unmatched_truths = 0  # ground truth whose frame had passed without it: another clock, or no frame
        self._released: tuple[int, int] | None = None  # oldest, newest output let go while ground truth had stopped
        self._truth_mark: int | None = None  # the _OUTPUT_RANK-th newest output stamp when ground truth was last read
        self.on_expire: Callable[[int], None] | None = None  # (stamp) an output let go unscored
        self._truth: dict[int, GroundTruth] = {}
        self._no_output: set[int] = set()  # frames dropped or rejected before their ground truth came
        self.rows: list[tuple[np.ndarray, np.ndarray, str]] = []  # (probs [K], labels [K] (-1: absent), condition)
        self.bev: dict[str, list[np.ndarray]] = {}  # condition -> [intersection [C], union [C]]
        self.bev_unfit: dict[tuple[int, ...], int] = {}  # truth BEV shape -> frames whose truth is not on our grid
        self.truth_labels: set[str] = set()  # scene labels and BEV classes the joined ground truth holds
        self.truth_bev_classes: set[str] = set()
        self.conditions: dict[int, str] = {}
        self.on_join: Callable[[int, float, str], None] | None = None  # (stamp, scene error, condition)

    def output(self, out: FusionOutput) -> None:
        stamp = out.stamp_ns
        if self.scored and stamp not in self._newest_outputs:
            if len(self._newest_outputs) < _OUTPUT_RANK:
                heapq.heappush(self._newest_outputs, stamp)
            elif stamp > self._newest_outputs[0]:
                heapq.heapreplace(self._newest_outputs, stamp)
        if not self.scored or (stamp not in self._truth and self._expired(stamp)):
            if self.on_expire is not None:
                self.on_expire(stamp)
            return
        probs = np.fromiter(out.scene.values(), dtype=np.float64, count=len(out.scene))
        if stamp not in self._outputs:
            heapq.heappush(self._expiry, stamp)
        self._outputs[stamp] = (probs, out.bev >= _THRESHOLD)
        self._join(stamp)
        if len(self._newest_outputs) >= _OUTPUT_RANK:  # ground truth whose frame has passed: it matches nothing
            passed = self._newest_outputs[0] - _TRUTH_REORDER_NS
            while self._truth_stamps and self._truth_stamps[0] < passed:
                old = heapq.heappop(self._truth_stamps)
                if self._truth.pop(old, None) is not None:
                    self.unmatched_truths += 1
        held = self._held_since()
        while self._expiry and held is not None and self._expiry[0] < held:  # ground truth stopped: let go
            old = heapq.heappop(self._expiry)
            if self._outputs.pop(old, None) is not None:
                self._released = (old, old) if self._released is None else (min(self._released[0], old),
                                                                           max(self._released[1], old))
                if self.on_expire is not None:
                    self.on_expire(old)

    def _held_since(self) -> int | None:
        """With no ground truth read for _OUTPUT_HOLD_NS of outputs (and some read before), outputs
        stamped before this are let go; None while ground truth keeps coming."""
        if not self._truth_seen or len(self._newest_outputs) < _OUTPUT_RANK:
            return None
        now = self._newest_outputs[0]
        if self._truth_mark is None:  # ground truth came before _OUTPUT_RANK outputs: counted from now
            self._truth_mark = now
        return now - _OUTPUT_HOLD_NS if now - self._truth_mark > _OUTPUT_HOLD_NS else None

    def _progress(self) -> int | None:
        """The newest ground truth stamp read, but no more than _TRUTH_REORDER_NS past the frames
        output so far (with fewer than _OUTPUT_RANK outputs, the oldest of them; with none, not bounded)."""
        if self._newest_truth is None or not self._newest_outputs:
            return self._newest_truth
        return min(self._newest_truth, self._newest_outputs[0] + _TRUTH_REORDER_NS)

    def _expired(self, stamp: int) -> bool:
        """Whether ground truth for `stamp` can no longer come (one far later has been read)."""
        progress = self._progress()
        return progress is not None and stamp < progress - _TRUTH_REORDER_NS

    def truth(self, gt: GroundTruth) -> None:
        stamp = gt.stamp_ns
        self._truth_seen = True
        newest = self._newest_outputs[0] if len(self._newest_outputs) >= _OUTPUT_RANK else None
        if stamp in self._outputs or ((not self._expiry or stamp >= self._expiry[0])
                                      and (newest is None or stamp <= newest + _OUTPUT_HOLD_NS)):
            self._truth_mark = newest  # ground truth that can still label a frame is coming: outputs wait
        if (self._released is not None and self._released[0] <= stamp <= self._released[1]
                and stamp not in self._outputs and stamp not in self._no_output):
            self.truths_after_hold += 1  # its frame's output was let go while ground truth had stopped
            return
        if self._expired(stamp):
            self.late_truths += 1
        elif self._newest_truth is None or stamp > self._newest_truth:
            self._newest_truth = stamp
        while self._expiry and self._expired(self._expiry[0]):  # outputs no ground truth will join
            old = heapq.heappop(self._expiry)
            if self._outputs.pop(old, None) is not None and self.on_expire is not None:
                self.on_expire(old)
        if gt.stamp_ns in self._no_output:
            self._no_output.discard(gt.stamp_ns)
            return
        if stamp not in self._truth:
            heapq.heappush(self._truth_stamps, stamp)
        self._truth[stamp] = gt
        self._join(stamp)

    def no_output(self, stamp: int) -> None:
        """The frame at `stamp` was dropped or rejected: its ground truth will join nothing, so it is
        not kept (a long realtime replay with drops held every such frame's BEV to the end)."""
        if not self.scored or stamp in self._outputs:  # a duplicate of a frame that did produce an output
            return
        if self._truth.pop(stamp, None) is None:
            self._no_output.add(stamp)

    def _join(self, stamp: int) -> None:
        if stamp not in self._outputs or stamp not in self._truth:
            return
        probs, bev = self._outputs.pop(stamp)
        gt = self._truth.pop(stamp)
        self.truth_labels.update(gt.labels)
        self.truth_bev_classes.update(gt.bev_classes)
        labels = np.array([int(gt.labels[k]) if k in gt.labels else -1 for k in self.scene_labels], dtype=np.int64)
        self.rows.append((probs, labels, gt.condition))
        self.conditions[stamp] = gt.condition
        known = labels >= 0
        error = float(np.abs(probs[known] - labels[known]).mean()) if known.any() else 0.0
        truth = np.asarray(gt.bev)
        index = [gt.bev_classes.index(c) if c in gt.bev_classes else -1 for c in self.bev_classes]
        if truth.ndim == 3 and truth.shape[1:] == bev.shape[1:]:
            counts = self.bev.setdefault(gt.condition, [np.zeros(len(index)), np.zeros(len(index))])
            for c, g in enumerate(index):
                if g < 0:
                    continue
                t = truth[g] > 0
                counts[0][c] += np.count_nonzero(t & bev[c])
                counts[1][c] += np.count_nonzero(t | bev[c])
        else:
            shape = tuple(truth.shape[1:]) if truth.ndim == 3 else tuple(truth.shape)
            self.bev_unfit[shape] = self.bev_unfit.get(shape, 0) + 1
        if self.on_join is not None:
            self.on_join(stamp, error, gt.condition)

    def _block(self, rows: list, counts: list[list[np.ndarray]]) -> dict:
        from fusion_rt.export.metrics import f1_per_class, roc_auc_per_class  # numpy only

        probs = np.stack([r[0] for r in rows])  # [N, K]
        labels = np.stack([r[1] for r in rows])
        auc, f1 = {}, {}
        for k, name in enumerate(self.scene_labels):
            known = labels[:, k] >= 0
            if not known.any():
                continue
            auc[name] = _nan_none(roc_auc_per_class(labels[known, k:k + 1], probs[known, k:k + 1])[0])
            f1[name] = _nan_none(f1_per_class(labels[known, k:k + 1], probs[known, k:k + 1], _THRESHOLD)[0])
        block = {"frames": len(rows), "scene_auc": auc, "scene_f1": f1,
                 "mean_scene_auc": _mean(auc.values()), "mean_scene_f1": _mean(f1.values())}
        if counts:
            inter = sum(c[0] for c in counts)
            union = sum(c[1] for c in counts)
            iou = {name: _nan_none(inter[i] / union[i]) if union[i] > 0 else None
                   for i, name in enumerate(self.bev_classes)}
            block["bev_iou"] = iou
            block["mean_bev_iou"] = _mean(iou.values())
        return block

    def result(self) -> dict | None:
        if not self.rows:
            return None
        conditions = sorted({r[2] for r in self.rows})
        return {
            "threshold": _THRESHOLD,
            "overall": self._block(self.rows, list(self.bev.values())),
            "per_condition": {c: self._block([r for r in self.rows if r[2] == c],
                                             [self.bev[c]] if c in self.bev else []) for c in conditions},
        }


def _log_bev_grid(source: LogSource) -> tuple[BevGrid | None, str]:
    """`log_bev_grid` of the log's MCAP files (a .db3 bag has no metadata records). Read after the
    message pass, which parses the metadata records (`LogReader.read_metadata` would start a pass of
    its own and forget that pass's issues)."""
    return log_bev_grid(reader.metadata for reader in getattr(source, "readers", ()))


def _check_bev_grid(source: LogSource, package: ModelPackage, metrics: list[_Metrics]) -> list[str]:
    """BEV IoU compares the package's BEV with the log's truth cell by cell, so it is not reported
    when the log's rig puts its truth on another grid than the package's (`rig.bev`); a log without a
    rig record (a bag, a log written without one) is scored where the shapes match, with a warning
    that the extents are assumed; whenever frames could not be scored a warning names both grids.
    Empties `bev` of each of `metrics` when it is not to be scored."""
    if not any(m.rows for m in metrics):  # no ground truth joined: no metrics at all
        return []
    ours = f"the package's rig.bev is {bev_grid_text(package.rig.bev)}"
    grid, why = _log_bev_grid(source)
    warnings = []
    if grid is None:
        grid = package.rig.bev
        warnings.append(f"BEV IoU assumes the log's ground truth is on the package's grid: the log's grid is "
                        f"unknown ({why}), {ours}")
    elif grid != package.rig.bev:
        for m in metrics:
            m.bev.clear()
        return [f"BEV IoU not scored: the log's ground truth BEV grid is {bev_grid_text(grid)} (its fusion_rt.rig "
                f"metadata), {ours}"]
    first = metrics[0]
    if first.bev_unfit:
        unfit = sum(first.bev_unfit.values())
        shapes = ", ".join("x".join(map(str, s)) for s in sorted(first.bev_unfit))
        scored = "BEV IoU not scored" if not first.bev else f"BEV IoU skips {unfit} of {len(first.rows)} frames"
        warnings.append(f"{scored}: their ground truth BEV is {shapes}, not on the grid {bev_grid_text(grid)}; {ours}")
    return warnings


def _name_warnings(metrics: _Metrics) -> list[str]:
    """Package scene labels and BEV classes that no scored frame's ground truth holds: left out of the
    metrics (matched by name), which would otherwise say nothing of a model labelled in other words."""
    if not metrics.rows:
        return []
    warnings = []
    for what, ours, theirs in (("scene labels", metrics.scene_labels, metrics.truth_labels),
                               ("BEV classes", metrics.bev_classes, metrics.truth_bev_classes)):
        missing = [name for name in ours if name not in theirs]
        if missing:
            warnings.append(f"the package's {what} {missing} are not in the log's ground truth, which has "
                            f"{sorted(theirs)}: they are not scored (names must match)")
    return warnings


def _late_truth_warnings(metrics: _Metrics) -> list[str]:
    warnings = []
    if metrics.late_truths:
        warnings.append(f"{metrics.late_truths} ground truth messages were stamped more than "
                        f"{_TRUTH_REORDER_NS / 1e9:g} s before one read earlier in the log: a frame they label that "
                        "was output before them is not scored")
    if metrics.unmatched_truths:
        warnings.append(f"{metrics.unmatched_truths} ground truth messages matched no camera frame: a frame takes the "
                        "ground truth of its exact stamp (are they stamped on the camera's clock?)")
    if metrics.truths_after_hold:
        warnings.append(f"{metrics.truths_after_hold} ground truth messages came after {_OUTPUT_HOLD_NS / 1e9:g} s of "
                        "log without any: their frames' outputs had been let go, not scored")
    return warnings


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


# ------------------------------------------------------------------------------------------ session

class _Worst:
    """The N worst frames by a score, with the camera frame and output kept for a thumbnail."""

    def __init__(self, n: int) -> None:
        self.n = n
        # (score, -stamp, offer number, reason, frame, record): the offer number settles ties before the
        # frames are compared (a stamp seen twice: split files covering the same time)
        self._heap: list[tuple[float, int, int, str, CameraFrame, FrameRecord]] = []
        self._offers = 0

    def offer(self, score: float, stamp: int, reason: str, frame: CameraFrame, record: FrameRecord) -> None:
        if self.n <= 0:
            return
        self._offers += 1
        item = (score, -stamp, self._offers, reason, frame, record)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif item[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, item)

    def frames(self, labels: tuple[str, ...], conditions: dict[int, str]) -> list[WorstFrame]:
        out = []
        for score, neg_stamp, _, reason, frame, record in sorted(self._heap, key=lambda i: (-i[0], -i[1], i[2])):
            bgr = _frame_bgr(frame)
            if bgr is None:
                continue
            annotate_frame(bgr, record.status, record.flags, dict(zip(labels, record.scene, strict=False)))
            scale = 320 / bgr.shape[1]
            thumb = cv2.resize(bgr, (320, max(1, round(bgr.shape[0] * scale))), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
            out.append(WorstFrame(-neg_stamp, round(score, 4), reason, conditions.get(-neg_stamp),
                                  jpeg.tobytes() if ok else b""))
        return out


class _Session:
    """One runtime being fed a log, with everything a summary needs accumulated on the way."""

    def __init__(self, package: ModelPackage, config: ReplayConfig, backend: str, has_truth: bool,
                 writer: _ResultsWriter | None) -> None:
        self.package = package
        self.config = config
        self.backend = backend
        # window=None: every stage's percentiles over the whole log (a ring would keep the last 4096
        # samples of the radar, map and text stages only, beside whole-run counts)
        # the runtime's camera size check too: a camera of another size (another field of view) squashed
        # into the model's input gave outputs here that the deployed runtime refuses (wrong_size)
        self.runtime = FusionRuntime(package, backend, threads=config.threads, window=None)
        self.writer = writer
        self.frames: list[FrameRecord] = []
        self.camera_frames = 0
        self.metrics = _Metrics(package.scene_labels, package.bev_classes, scored=has_truth)
        self.worst = _Worst(config.worst_frames)
        self.has_truth = has_truth
        self._pending: dict[int, tuple[CameraFrame, FrameRecord]] = {}  # awaiting ground truth (worst frames)
        if has_truth:
            self.metrics.on_join = self._joined
            self.metrics.on_expire = self._unscored

    def _joined(self, stamp: int, error: float, condition: str) -> None:
        pending = self._pending.pop(stamp, None)
        if pending is not None:
            self.worst.offer(error, stamp, "scene error", *pending)

    def _unscored(self, stamp: int) -> None:
        """No ground truth will come for the frame at `stamp`: its camera frame is not kept."""
        self._pending.pop(stamp, None)

    def push(self, modality: str, message, original) -> list[FusionOutput]:
        """Feed one routed message; `original` is the camera frame as logged (for drawings)."""
        outputs = self.runtime.push(message)
        if modality != "camera":
            return outputs
        self.camera_frames += 1
        if not outputs:
            self._record(FrameRecord(message.stamp_ns, "rejected"))
            self.metrics.no_output(message.stamp_ns)
            return outputs
        for out in outputs:
            self._output(out, original)
        return outputs

    def dropped(self, modality: str, message) -> None:
        """A message superseded before it was processed (realtime mode)."""
        outcome = self.runtime.note_dropped(message, "superseded")
        if modality == "camera":
            self.camera_frames += 1
            self._record(FrameRecord(message.stamp_ns, outcome))
            self.metrics.no_output(message.stamp_ns)

    def truth(self, gt: GroundTruth) -> None:
        self.metrics.truth(gt)

    def _record(self, record: FrameRecord) -> None:
        if self.config.keep_frames:
            self.frames.append(record)

    def _output(self, out: FusionOutput, original: CameraFrame) -> None:
        record = FrameRecord(out.stamp_ns, out.status, out.flags, tuple(out.scene.values()),
                             tuple(out.modality_share.get(m, 0.0) for m in self.package.modalities), out.timings_ms)
        self._record(record)
        if self.has_truth:
            if self.config.worst_frames:
                self._pending[out.stamp_ns] = (original, record)
        else:
            self.worst.offer(out.timings_ms.get("end_to_end", 0.0), out.stamp_ns, "latency", original, record)
        self.metrics.output(out)
        if self.writer is not None:
            self._write(out, original)

    def _write(self, out: FusionOutput, original: CameraFrame) -> None:
        w = self.writer
        stamp = out.stamp_ns
        w.write(RESULT_TOPICS["outputs"], FUSION_OUTPUT, _output_message(out, self.package), stamp)
        misses = [f.split(":", 1)[1] for f in out.flags if f.startswith("deadline_miss:")]
        w.write(RESULT_TOPICS["timings"], FUSION_TIMINGS, {
            "header": {"stamp": _time(stamp), "frame_id": "base_link"}, "stages": list(out.timings_ms),
            "milliseconds": [float(v) for v in out.timings_ms.values()], "deadline_misses": misses,
            "mode": self.config.mode.value}, stamp)
        ok, png = cv2.imencode(".png", bev_image(out.bev, self.package.bev_classes))
        if ok:
            w.write(RESULT_TOPICS["bev"], COMPRESSED_IMAGE, {"header": {"stamp": _time(stamp), "frame_id": "base_link"},
                                                             "format": "png", "data": png.tobytes()}, stamp)
        bgr = _frame_bgr(original)
        if bgr is not None:
            annotate_frame(bgr, out.status, tuple(f for f in out.flags if not f.startswith("deadline_miss:")),
                           out.scene)
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                w.write(RESULT_TOPICS["camera"], COMPRESSED_IMAGE,
                        {"header": {"stamp": _time(stamp), "frame_id": original.frame_id}, "format": "jpeg",
                         "data": jpeg.tobytes()}, stamp)

    def latency(self) -> dict:
        stats = self.runtime.stats()["latency_ms"]
        return {stage: {k: v if k == "count" or v is None else round(v, 4) for k, v in s.items()
                        if k in ("count", *STAT_KEYS, "mean")} for stage, s in stats.items()}

    def summary(self) -> dict:
        stats = self.runtime.stats()
        reasons: dict[str, dict[str, int]] = {"rejected": {}, "degraded": {}, "dropped": {}}
        for m, counts in stats["messages"].items():
            for outcome, bucket in counts["reasons"].items():
                for reason, n in bucket.items():
                    key = f"{m}:{reason}"
                    reasons[outcome][key] = reasons[outcome].get(key, 0) + n
        return {
            "frames": self.camera_frames,
            "outputs": stats["outputs"]["total"],
            "ok": stats["outputs"]["ok"],
            "degraded": stats["outputs"]["degraded"],
            # camera frames without an output (frames = outputs + rejected + dropped); every sensor's
            # messages in messages_rejected / messages_dropped, per modality and reason below
            "rejected": stats["messages"][self.runtime.trigger]["rejected"],
            "dropped": stats["messages"][self.runtime.trigger]["dropped"],
            "messages_rejected": sum(c["rejected"] for c in stats["messages"].values()),
            "messages_dropped": stats["dropped"],
            "deadline_misses": int(sum(stats["deadline_misses"].values())),
            "deadline_misses_by_stage": stats["deadline_misses"],
            "latency_ms": self.latency(),
            "metrics": self.metrics.result(),
            "messages": {m: {k: c[k] for k in ("received", "ok", "degraded", "rejected", "dropped")}
                         for m, c in stats["messages"].items()},
            "reasons": reasons,
            "encoder_runs": stats["encoder_runs"],
            "package": {"name": self.package.name, "precision": self.package.precision, "sha256": self.package.sha256,
                        "path": str(self.package.root), "backend": self.backend},
        }

    def close(self) -> None:
        self.runtime.close()


# ------------------------------------------------------------------------------------------ reading

@dataclass(frozen=True)
class _Item:
    """A routed log message: its modality, log time, what the runtime gets, and the message as logged."""

    modality: str
    log_time_ns: int
    message: object
    original: object


class _Stamps:
    """What replay saw of each modality's stamps, for the clock warnings (`_stamp_warnings`); it only
    watches: nothing routed or pushed depends on it."""

    SAMPLE = 5  # stamp - log time of the first few non-zero stamps: their median is the modality's offset

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.zero: dict[str, int] = {}
        self.offsets: dict[str, list[int]] = {}

    def see(self, modality: str, stamp_ns: int, log_time_ns: int) -> None:
        self.count[modality] = self.count.get(modality, 0) + 1
        if stamp_ns == 0:
            self.zero[modality] = self.zero.get(modality, 0) + 1
            return
        offsets = self.offsets.setdefault(modality, [])
        if len(offsets) < self.SAMPLE:
            offsets.append(stamp_ns - log_time_ns)

    def offset(self, modality: str) -> int | None:
        """The modality's stamps minus their log times (median of the first few), None without stamps."""
        offsets = sorted(self.offsets.get(modality, ()))
        return offsets[len(offsets) // 2] if offsets else None


class _Reader:
    """Opens the log, maps its topics and yields routed `_Item`s (the only place that reads)."""

    def __init__(self, log: str | os.PathLike, modalities: tuple[str, ...], config: ReplayConfig,
                 preprocess: PreprocessConfig, radar: Radar) -> None:
        self.source: LogSource = open_log(log)
        try:
            infos = self.source.topics()
            if not infos:
                raise LogError(f"{self.source.path!r} holds no messages that can be read")
            # A modality masked for the whole replay is not read (the camera still triggers), so its
            # topic need not be found or unambiguous.
            wanted = tuple(m for m in modalities if m not in config.drop or m == "camera")
            self.topic_map: TopicMap = resolve_topics(infos, (*wanted, "ground_truth"), config.topics)
        except BaseException:
            self.source.close()
            raise
        self.schemas = {i.topic: i.schema_name for i in infos}
        self.config = config
        self.preprocess = preprocess
        self.radar = radar
        self.radar_from_detections = False
        self.stamps = _Stamps()
        self.issues: list[ReadIssue] = []  # messages read whole but not replayed (radar detections not placed)
        self.foreign_radar_frames: set[str] = set()  # detection frames taken as the radar's, not the rig's name

    def items(self, predecode: bool) -> Iterator[_Item]:
        modality_of = {t: m for m, t in self.topic_map.topics.items() if m not in self.config.drop or m == "camera"}
        for lm in self.source.messages(topics=list(modality_of)):
            modality = modality_of[lm.topic]
            msg = original = lm.message
            if modality != "ground_truth":
                self.stamps.see(modality, original.stamp_ns, lm.log_time_ns)
            if modality == "radar" and isinstance(msg, RadarDetections):
                self.radar_from_detections = True
                try:
                    tensor = detections_to_tensor(msg, self.radar, self.preprocess)
                except DecodeError as exc:  # this scan cannot be placed (a world-fixed frame): skipped, said
                    self.issues.append(ReadIssue(0, "decode", f"RadarDetections on {lm.topic!r} at log time "
                                                              f"{lm.log_time_ns}: {type(exc).__name__}: {exc}"))
                    continue
                except ConfigError as exc:
                    raise ConfigError(f"radar detections on {lm.topic!r} cannot be binned onto the package's radar "
                                      f"grid: {exc}") from exc
                frame = msg.frame_id if isinstance(msg.frame_id, str) else ""
                if frame.strip() and not is_ego_frame(frame) and not is_radar_frame(frame, self.radar):
                    self.foreign_radar_frames.add(frame)  # placed as the radar's own: said once
                msg = tensor
            elif modality == "camera" and predecode and isinstance(msg, CameraFrame):
                msg = _predecode(msg, self.preprocess)
            yield _Item(modality, lm.log_time_ns, msg, original)

    def close(self) -> None:
        self.source.close()


_END = object()


def _prefetched(items: Iterator[_Item], depth: int) -> Iterator[_Item]:
    """`items` produced by a background thread into a bounded queue (order kept; errors re-raised here)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    thread = threading.Thread(target=produce, name="fusion-rt-replay-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _paced(items: Iterator[_Item], speed: float, on_drop: Callable[[_Item], None]) -> Iterator[_Item]:
    """Release items at their log times (scaled by `speed`); a waiting item whose modality has a newer
    due item is superseded (latest wins) and handed to `on_drop`. Ground truth is never dropped."""
    source = iter(items)
    try:
        yield from _paced_from(source, speed, on_drop)
    finally:
        close = getattr(source, "close", None)
        if close is not None:  # a prefetching source stops its thread
            close()


def _paced_from(source: Iterator[_Item], speed: float, on_drop: Callable[[_Item], None]) -> Iterator[_Item]:
    nxt = next(source, None)
    if nxt is None:
        return
    first, start = nxt.log_time_ns, time.perf_counter_ns()
    mailbox: dict[str, _Item] = {}
    while True:
        now = time.perf_counter_ns()
        while nxt is not None and start + (nxt.log_time_ns - first) / speed <= now:
            if nxt.modality == "ground_truth":
                yield nxt
            else:
                old = mailbox.get(nxt.modality)
                if old is not None:
                    on_drop(old)
                mailbox[nxt.modality] = nxt
            nxt = next(source, None)
        if mailbox:
            modality = min(mailbox, key=lambda m: mailbox[m].log_time_ns)
            yield mailbox.pop(modality)
            continue
        if nxt is None:
            return
        wait = (start + (nxt.log_time_ns - first) / speed - time.perf_counter_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)


# ------------------------------------------------------------------------------------------- replay

def _load(package: ModelPackage | str | os.PathLike) -> ModelPackage:
    return package if isinstance(package, ModelPackage) else load_package(package)


def _load_side(package: ModelPackage | str | os.PathLike, side: str) -> ModelPackage:
    """`_load` for one side of a comparison: a package it refuses is named by its side (both may
    hold a head.onnx)."""
    try:
        return _load(package)
    except PackageError as exc:
        raise type(exc)(f"package {side} ({os.fspath(package)!r}): {exc}") from exc


def _check_drop(config: ReplayConfig, package: ModelPackage) -> None:
    for m in config.drop:
        if m not in package.modalities:
            raise ConfigError(f"--drop {m!r}: not a modality of package {package.name!r} ({list(package.modalities)})")
        if m == "camera":
            raise ConfigError("cannot drop 'camera': it triggers every output; drop the other modalities instead")


# ReadIssue kinds that are damage to the file itself (checksums, framing, compression)
_DAMAGE_KINDS = frozenset({"chunk_crc", "chunk_decompress", "chunk_too_large", "chunk_parse", "record_parse",
                           "record_too_large", "data_crc", "summary", "bad_magic"})
# a `decode` issue's detail, from LogReader and the bag reader: "... on '/topic' at log time T: Error: reason"
_DECODE_DETAIL = re.compile(r"""on (?P<topic>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") at log time -?\d+: """
                            r"(?P<error>\w+): (?P<reason>.*)", re.S)
_SKIP_LINES = 5  # groups of skipped messages said one per warning line, the rest counted
_REASON_CHARS = 240


def _skipped_warnings(issues: list[ReadIssue]) -> list[str]:
    """What reading skipped and why, grouped by topic and error (by kind for damage), counted: a valid
    message in a form fusion-rt does not read (`UnsupportedMessageError`: a depth camera, h264, a
    rotated map) is "unsupported", damage to the file is "damaged", anything else "skipped"."""
    groups: dict[tuple, list] = {}  # key -> [count, first detail]
    for issue in issues:
        if issue.kind == "truncated" or issue.kind in NOTE_KINDS:
            continue
        match = _DECODE_DETAIL.search(issue.detail) if issue.kind == "decode" else None
        if match is not None:
            unsupported = match["error"] == UnsupportedMessageError.__name__
            key = ("unsupported" if unsupported else "undecodable", match["topic"], match["error"])
            detail = match["reason"] if unsupported else f"{match['error']}: {match['reason']}"
        else:
            key = ("damaged" if issue.kind in _DAMAGE_KINDS else "skipped", issue.kind)
            detail = issue.detail
        group = groups.setdefault(key, [0, detail])
        group[0] += 1
    lines = []
    for key, (n, detail) in list(groups.items())[:_SKIP_LINES]:
        detail = _clip(detail)
        what = key[0]
        if what == "unsupported":
            lines.append(f"{_count(n, 'message')} on {key[1]} skipped as unsupported (valid, in a form fusion-rt "
                         f"does not read): {detail}")
        elif what == "undecodable":
            lines.append(f"{_count(n, 'message')} on {key[1]} skipped, they do not decode: {detail}")
        elif what == "damaged":
            lines.append(f"{_count(n, 'damaged record')} skipped ({key[1]}), the first: {detail}")
        else:
            lines.append(f"{n} records or messages skipped ({key[1]}), the first: {detail}")
    if len(groups) > _SKIP_LINES:
        rest = sum(n for n, _ in list(groups.values())[_SKIP_LINES:])
        lines.append(f"{rest} more records or messages skipped, on {len(groups) - _SKIP_LINES} more topics or "
                     f"reasons (the first 50 issues are in the --json summary's log.issue_list)")
    return lines


def _rejected_warnings(stats: dict) -> list[str]:
    """Messages the runtime refused with a reason of its own (`FusionRuntime.stats()`): per modality
    and reason, counted, with the runtime's `last_detail` of that reason (a ROS map in a world-fixed
    frame was only counted `map:malformed`). Refused stamps are left to `_stamp_warnings`."""
    lines = []
    for m, counts in stats["messages"].items():
        for reason, n in counts["reasons"]["rejected"].items():
            detail = counts["last_detail"].get(reason)
            if not n or not detail or reason.startswith("stamp_"):
                continue
            detail = _clip(detail)
            lines.append(f"{_count(n, f'{m} message')} rejected by the runtime ({m}:{reason}), the last: {detail}")
    return lines


def _clip(detail: str) -> str:
    """A reason cut to `_REASON_CHARS` for a warning line."""
    return detail if len(detail) <= _REASON_CHARS else detail[:_REASON_CHARS - 3] + "..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _format_offset(ns: int) -> str:
    return f"{abs(ns) / 1e9:.3g} s {'ahead of' if ns > 0 else 'behind'}"


def _stamp_warnings(stamps: _Stamps, summary: dict) -> list[str]:
    """Header stamps never set (all 0), or a modality's stamps on another clock than the trigger's
    (compared against each one's log times), said when they cost messages or outputs."""
    rejected, degraded = summary["reasons"]["rejected"], summary["reasons"]["degraded"]
    warnings = []
    for m, n in stamps.count.items():
        zero = stamps.zero.get(m, 0)
        if zero >= 2:
            dup = rejected.get(f"{m}:stamp_duplicate", 0)
            warnings.append(f"{zero} of {n} {m} messages have header stamp 0: the driver does not set header stamps"
                            + (f" ({dup} rejected as stamp_duplicate)" if dup else ""))
    trigger = "camera"  # replay's trigger
    ref = stamps.offset(trigger)
    if ref is None:
        return warnings
    for m in stamps.count:
        offset = stamps.offset(m)
        if m == trigger or offset is None or abs(offset - ref) <= JUMP_THRESHOLD_NS:
            continue
        costs = [f"{k.split(':', 1)[1]} {v}" for k, v in rejected.items() if k.startswith(f"{m}:stamp_")]
        missing = degraded.get(f"{trigger}:{m}_missing", 0)
        if missing:
            costs.append(f"outputs degraded {m}_missing {missing}")
        if not costs:
            continue
        stamps_of = (f"{m} stamps (publish times: std_msgs/String has no header)" if m == "text"
                     else f"{m} header stamps")
        warnings.append(f"{stamps_of} are {_format_offset(offset - ref)} the {trigger}'s, each taken "
                        f"against its log time: {m} runs on another clock than the {trigger} (sim, device or "
                        f"boot time?) and is not fused with it ({', '.join(costs)})")
    return warnings


def _log_block(reader: _Reader, first: int | None, last: int | None) -> tuple[dict, list[str]]:
    source = reader.source
    issues: list[ReadIssue] = [*source.issues, *reader.issues]
    warnings = []
    if source.truncated_at is not None:
        warnings.append(f"log {source.path} is truncated at byte {source.truncated_at}: replayed up to the last "
                        f"complete message")
    warnings += _skipped_warnings(issues)
    for frame in sorted(reader.foreign_radar_frames):
        warnings.append(f"radar detections in frame {frame!r} were taken as the radar's own (the package rig's radar "
                        f"frame is {reader.radar.frame_id!r}): if {frame!r} is another sensor's frame they landed in "
                        f"the wrong cells (publish them in base_link, or name the frame in the manifest's "
                        f"rig.radar.frame_id)")
    assumed = [i for i in issues if i.kind == "schema_assumed"]
    if assumed:  # nothing skipped: a schema without text, decoded as the standard type
        warnings.append(f"{len(assumed)} schemas store no definition: the standard ones were assumed "
                        f"(see log.issue_list)")
    warnings += [f"messages came out of log-time order: {i.detail}" for i in issues if i.kind == "order"]
    block = {
        "path": str(source.path),
        "truncated_at": source.truncated_at,
        "issues": len(issues),
        "issue_list": [{"offset": i.offset, "kind": i.kind, "detail": i.detail} for i in issues[:50]],
        "duration_s": None if first is None else round((last - first) / 1e9, 3),
        "topics": dict(reader.topic_map.topics),
        "topics_how": dict(reader.topic_map.how),
    }
    return block, warnings


def replay(log: str | os.PathLike, package: ModelPackage | str | os.PathLike,
           config: ReplayConfig | None = None, progress: Progress | None = None) -> ReplayResult:
    """Replay `log` (MCAP file or ROS 2 bag) through `package`; see the module docstring."""
    config = config or ReplayConfig()
    pkg = _load(package)
    _check_drop(config, pkg)
    check_outputs(files={"results log": config.out}, inputs=[log, pkg.root])
    preprocess = PreprocessConfig.from_dict(pkg.preprocess)
    reader = _Reader(log, pkg.modalities, config, preprocess, pkg.rig.radar)
    writer: _ResultsWriter | None = None
    session: _Session | None = None
    result: ReplayResult | None = None
    items: Iterator[_Item] | None = None
    try:
        has_truth = "ground_truth" in reader.topic_map.topics
        writer = _ResultsWriter(config.out) if config.out is not None else None
        session = _Session(pkg, config, config.backend, has_truth, writer)
        total_s = reader.source.duration_ns / 1e9 if reader.source.duration_ns else None
        mode = config.mode
        items = reader.items(predecode=mode is ReplayMode.BURST)
        if mode is not ReplayMode.LOCKSTEP:
            items = _prefetched(items, config.prefetch)
        if mode is ReplayMode.REALTIME:
            items = _paced(items, config.realtime_speed, lambda it: session.dropped(it.modality, it.message))
        first = last = None
        start = time.perf_counter()
        for item in items:
            if first is None:
                first = item.log_time_ns
            last = item.log_time_ns if last is None else max(last, item.log_time_ns)
            if item.modality == "ground_truth":
                if isinstance(item.message, GroundTruth):
                    session.truth(item.message)
            else:
                session.push(item.modality, item.message, item.original)
            if progress is not None:
                progress((last - first) / 1e9, total_s)
        wall = time.perf_counter() - start
        bev_warnings = _check_bev_grid(reader.source, pkg, [session.metrics])
        summary = session.summary()
        log_block, warnings = _log_block(reader, first, last)
        warnings += _stamp_warnings(reader.stamps, summary)
        warnings += _rejected_warnings(session.runtime.stats())
        warnings += bev_warnings + _late_truth_warnings(session.metrics) + _name_warnings(session.metrics)
        missing = [m for m in pkg.modalities if m not in reader.topic_map.topics and m not in config.drop]
        if missing:
            warnings.append(f"the log has no topic for {missing}: outputs are degraded without them "
                            f"(map topics with --topics)")
            warnings += [note for m in missing if (note := reader.topic_map.note(m))]
        if summary["frames"] == 0:
            warnings.append("no camera frames were replayed: no outputs")
        if mode is ReplayMode.BURST:  # said in the summary, so no one compares it with lockstep figures
            summary["timing_note"] = ("burst: JPEG decode runs ahead in the prefetch thread; camera_preprocess "
                                      "and end_to_end exclude it")
        span = log_block["duration_s"] or 0.0
        summary.update({
            "mode": mode.value, "speed": config.realtime_speed if mode is ReplayMode.REALTIME else None,
            "threads": config.threads, "drop": list(config.drop),
            "radar_from_detections": reader.radar_from_detections,
            "wall_s": round(wall, 3), "realtime_factor": round(span / wall, 2) if wall > 0 and span else None,
            "log": log_block, "warnings": warnings, "results": None if config.out is None else os.fspath(config.out),
        })
        result = ReplayResult(summary=summary, frames=session.frames,
                              worst=session.worst.frames(pkg.scene_labels, session.metrics.conditions),
                              conditions=session.metrics.conditions, scene_labels=pkg.scene_labels,
                              modalities=pkg.modalities)
    finally:
        if items is not None:  # stops (and joins) the prefetch thread before its log is closed
            items.close()
        if session is not None:
            session.close()
        if writer is not None:
            writer.close(complete=result is not None)
        reader.close()
    return result


# ------------------------------------------------------------------------------------------ compare

class _Divergence:
    """Running divergence of one output between two deployments: abs error, cosine, decisions."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.dot = self.aa = self.bb = 0.0
        self.min_cos = 1.0
        self.agree = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        diff = np.abs(a - b)
        worst = float(diff.max()) if diff.size else 0.0
        self.max_abs = max(self.max_abs, worst)
        self.sum_abs += float(diff.sum())
        self.count += a.size
        dot, aa, bb = float(a @ b), float(a @ a), float(b @ b)
        self.dot, self.aa, self.bb = self.dot + dot, self.aa + aa, self.bb + bb
        self.min_cos = min(self.min_cos, _cosine(dot, aa, bb))
        if self.threshold is not None:
            self.agree += int(np.count_nonzero((a >= self.threshold) == (b >= self.threshold)))
        return worst

    def result(self) -> dict:
        mean = round(self.sum_abs / self.count, 8) if self.count else None
        out = {"max_abs": round(self.max_abs, 8), "mean_abs": mean,
               "cosine": round(_cosine(self.dot, self.aa, self.bb), 8), "min_frame_cosine": round(self.min_cos, 8),
               "values": self.count}
        if self.threshold is not None:
            out["agreement"] = round(self.agree / self.count, 6) if self.count else None
        return out


def _cosine(dot: float, aa: float, bb: float) -> float:
    if aa == 0.0 and bb == 0.0:
        return 1.0
    if aa == 0.0 or bb == 0.0:
        return 0.0
    return dot / math.sqrt(aa * bb)


def compare(log: str | os.PathLike, package_a: ModelPackage | str | os.PathLike,
            package_b: ModelPackage | str | os.PathLike, *, backend_a: str = "onnxruntime",
            backend_b: str = "onnxruntime", threads: int | None = None, topics: Mapping[str, str] | None = None,
            worst: int = 5, progress: Progress | None = None) -> CompareResult:
    """Replay `log` through two deployments in lockstep, message by message, and compare them."""
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ConfigError(f"worst must be a non-negative integer of frames, got {worst!r}")
    pkg_a, pkg_b = _load_side(package_a, "A"), _load_side(package_b, "B")
    if pkg_a.modalities != pkg_b.modalities or pkg_a.scene_labels != pkg_b.scene_labels:
        raise ConfigError(f"packages differ in modalities or scene labels and cannot be compared: "
                          f"{pkg_a.name} {list(pkg_a.modalities)} {list(pkg_a.scene_labels)} vs "
                          f"{pkg_b.name} {list(pkg_b.modalities)} {list(pkg_b.scene_labels)}")
    if pkg_a.bev_classes != pkg_b.bev_classes or pkg_a.rig.bev != pkg_b.rig.bev:
        raise ConfigError(f"packages differ in their BEV output and cannot be compared cell by cell: "
                          f"{pkg_a.name} {list(pkg_a.bev_classes)} on {pkg_a.rig.bev} vs "
                          f"{pkg_b.name} {list(pkg_b.bev_classes)} on {pkg_b.rig.bev}")
    config = ReplayConfig(topics=dict(topics or {}), threads=threads, worst_frames=0, keep_frames=False)
    preprocess = PreprocessConfig.from_dict(pkg_a.preprocess)
    reader = _Reader(log, pkg_a.modalities, config, preprocess, pkg_a.rig.radar)
    # Radar detections are binned by the reader with A's radar and normalization; B bins its own when
    # they differ (two trained packages fit their own radar scale: one binning made up divergence)
    preprocess_b = PreprocessConfig.from_dict(pkg_b.preprocess)
    own_radar_b = preprocess_b != preprocess or pkg_b.rig.radar != pkg_a.rig.radar
    sessions: list[_Session] = []
    try:
        has_truth = "ground_truth" in reader.topic_map.topics
        sessions.append(_Session(pkg_a, config, backend_a, has_truth, None))
        sessions.append(_Session(pkg_b, config, backend_b, has_truth, None))
        a, b = sessions
        div = {"scene": _Divergence(_THRESHOLD), "bev": _Divergence(_THRESHOLD), "modality_share": _Divergence(None)}
        frames: list[tuple[float, int, float]] = []  # (scene max abs, stamp, bev max abs)
        # each side's metrics over the frames both sides output (metrics_delta compares like with like)
        common = [_Metrics(pkg_a.scene_labels, pkg_a.bev_classes, scored=has_truth),
                  _Metrics(pkg_b.scene_labels, pkg_b.bev_classes, scored=has_truth)]
        same_status = camera_frames = compared = 0
        one_side: dict[str, list[int]] = {"a": [], "b": []}  # stamps of frames only that side output
        total_s = reader.source.duration_ns / 1e9 if reader.source.duration_ns else None
        first = last = None
        for item in reader.items(predecode=False):
            first = item.log_time_ns if first is None else first
            last = item.log_time_ns if last is None else max(last, item.log_time_ns)
            if item.modality == "ground_truth":
                if isinstance(item.message, GroundTruth):
                    for side in (a, b, *common):
                        side.truth(item.message)
                continue
            message_b = item.message
            if own_radar_b and isinstance(item.original, RadarDetections):
                try:
                    message_b = detections_to_tensor(item.original, pkg_b.rig.radar, preprocess_b)
                except DecodeError:  # this scan cannot be placed on B's radar: B does without it
                    message_b = None
            # Alternate who goes first, frame by frame: the second runner of a message finds warm caches.
            if (a.camera_frames + b.camera_frames) % 4 < 2:
                outs_a = a.push(item.modality, item.message, item.original)
                outs_b = b.push(item.modality, message_b, item.original) if message_b is not None else []
            else:
                outs_b = b.push(item.modality, message_b, item.original) if message_b is not None else []
                outs_a = a.push(item.modality, item.message, item.original)
            if item.modality == "camera":
                # a frame without an output has the status "no output": one side's rejection is a disagreement
                camera_frames += 1
                same_status += (outs_a[0].status if outs_a else None) == (outs_b[0].status if outs_b else None)
                if bool(outs_a) != bool(outs_b):
                    one_side["a" if outs_a else "b"].append(item.message.stamp_ns)
                for oa, ob in zip(outs_a, outs_b, strict=False):
                    compared += 1
                    common[0].output(oa)
                    common[1].output(ob)
                    scene_worst = div["scene"].add(list(oa.scene.values()), list(ob.scene.values()))
                    bev_worst = div["bev"].add(oa.bev, ob.bev)
                    if oa.modality_share and ob.modality_share:
                        div["modality_share"].add(list(oa.modality_share.values()), list(ob.modality_share.values()))
                    frames.append((scene_worst, oa.stamp_ns, bev_worst))
                if not (outs_a and outs_b):
                    for metrics in common:
                        metrics.no_output(item.message.stamp_ns)
            if progress is not None:
                progress((last - first) / 1e9, total_s)
        bev_warnings = _check_bev_grid(reader.source, pkg_a, [a.metrics, b.metrics, *common])
        sa, sb = a.summary(), b.summary()
        log_block, warnings = _log_block(reader, first, last)
        warnings += _stamp_warnings(reader.stamps, sa)
        rejected_a, rejected_b = _rejected_warnings(a.runtime.stats()), _rejected_warnings(b.runtime.stats())
        warnings += [w if w in rejected_b else f"A: {w}" for w in rejected_a]  # said once when both sides agree
        warnings += [f"B: {w}" for w in rejected_b if w not in rejected_a]
        warnings += bev_warnings + _late_truth_warnings(a.metrics) + _name_warnings(a.metrics)
    finally:
        for s in sessions:
            s.close()
        reader.close()

    def headline(s: dict) -> dict:
        m = (s["metrics"] or {}).get("overall", {})
        e2e = s["latency_ms"].get("end_to_end", {})
        return {"package": s["package"], "outputs": s["outputs"], "degraded": s["degraded"], "rejected": s["rejected"],
                "metrics": {k: m.get(k) for k in ("mean_scene_auc", "mean_scene_f1", "mean_bev_iou")},
                "latency_ms": {k: s["latency_ms"][k] for k in s["latency_ms"]
                               if k in ("end_to_end", "camera_preprocess", "camera_encoder", "head")},
                "end_to_end_p50": e2e.get("p50"), "end_to_end_p99": e2e.get("p99")}

    ha, hb = headline(sa), headline(sb)
    ca, cb = ((m.result() or {}).get("overall", {}) for m in common)
    # each side on the frames both output (what metrics_delta compares), beside its whole-run metrics
    ha["metrics_common"], hb["metrics_common"] = ({k: c.get(k) for k in ha["metrics"]} for c in (ca, cb))
    delta = {k: None if ca.get(k) is None or cb.get(k) is None else round(cb[k] - ca[k], 6) for k in ha["metrics"]}
    unmatched = len(one_side["a"]) + len(one_side["b"])
    if unmatched:
        warnings.append(f"{unmatched} camera frames have an output from one side only (A only {len(one_side['a'])}, "
                        f"B only {len(one_side['b'])}; see one_side_only): they count as status disagreements, "
                        f"and metrics_delta compares both sides on the {compared} frames both output")
    ratio = {}
    for k in ("p50", "p99"):
        va, vb = ha[f"end_to_end_{k}"], hb[f"end_to_end_{k}"]
        ratio[k] = round(vb / va, 3) if va and vb else None
    frames.sort(key=lambda f: (-f[0], f[1]))
    summary = {
        # status agreement over every camera frame (no output is a status of its own); divergence,
        # worst frames and metrics_delta over the frames both sides output
        "camera_frames": camera_frames, "frames_compared": compared, "unmatched": unmatched,
        "one_side_only": {side: {"frames": len(stamps), "first_stamps_ns": stamps[:worst]}
                          for side, stamps in one_side.items()},
        "status_agreement": round(same_status / camera_frames, 6) if camera_frames else None,
        "divergence": {name: d.result() for name, d in div.items() if d.count},
        "a": ha, "b": hb, "metrics_delta": delta, "latency_ratio_b_over_a": ratio,
        "worst_frames": [{"stamp_ns": stamp, "scene_max_abs": round(sw, 8), "bev_max_abs": round(bw, 8)}
                         for sw, stamp, bw in frames if sw or bw][:worst],  # identical frames are no one's worst
        "log": log_block, "warnings": warnings,
    }
    return CompareResult(summary)

