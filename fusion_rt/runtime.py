"""FusionRuntime: multi-rate encoders, a feature cache, the fusion head, deadlines (DESIGN.md §2, §7, §8).

Data flow of `push(message)`:

1. Per-stream stamp checks (`StreamChecker`): a bad stamp is rejected with its reason; a clock jump
   empties the feature cache and the message is then processed.
2. Non-trigger modality (radar, map, text by default): preprocess into a preallocated buffer, run
   that modality's encoder now, and store its tokens with their stamp in the feature cache (a
   small ring of token slots per modality, indexed through `LatestWithin`). Map and text are
   re-encoded only when their content changes (hash of the raster / the token ids); unchanged
   content re-stamps the cached tokens.
3. Trigger modality (camera by default): preprocess + encoder + head on the freshest cached
   features of each other modality within its max age; the rest are masked through the head's
   `present` input and named in the output's flags. Only these three stages are on the critical
   path, and the output's `timings_ms` shows them plus the runtime's own `overhead`.

Every message ends as exactly one of ok / degraded / rejected(reason) / dropped(reason), and
`stats()` counts them per modality (received = ok + degraded + rejected + dropped). Messages of
kinds the package does not consume (CameraInfo, GroundTruth, a modality the model lacks) are
counted as `ignored`. Nothing non-finite reaches a graph or leaves the runtime: non-finite radar
cells are masked (up to the preprocessing limit) or the frame is rejected; non-finite tokens or
head outputs reject the message.

Overload: `push` is synchronous and the runtime holds no queue, so nothing piles up inside it. A
real-time caller passes `deadline_ns` (on the `time.monotonic_ns()` clock): a message that
arrives after its deadline is dropped and counted, and a caller that drops messages itself
(latest-wins mailbox) reports them with `note_dropped` so every drop lands in `stats()`.
Threads: `push`, `note_dropped`, `reset`, `stats` and `close` take one lock, so each sees and leaves
whole counts (received = ok + degraded + rejected + dropped in every `stats()` snapshot) and `close`
waits for a push in progress before it releases the sessions. Pushes from several threads (a
subscriber per sensor) are therefore safe but run one at a time, in the order they take the lock:
the stamp checks then judge each sensor's stamps in that order. `health()` never waits: a
supervising thread may poll it while `push` runs, and it reports "failing" while a stage has been
busy longer than `stall_after_ns` (a stalled graph or decoder: polled once a period, detected within
two), and once the runtime is closed. Given the supervisor's time on the sensors' clock
(`health(now_ns=...)`), it also reports "failing" once no sensor message at all was accepted for
`trigger_timeout_ns`: a dead feed or pushing thread, which the stamps alone cannot show.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from threading import Lock  # (not `import threading`: __init__ has a `threading` argument)

import numpy as np

from fusion_rt.backends import BACKENDS, OrtConfig, Runner, RunnerError, create_runner
from fusion_rt.backends.onnxruntime import OrtThreading
from fusion_rt.errors import ConfigError, DecodeError, GraphMismatchError, ManifestError
from fusion_rt.messages import CameraFrame, MapRaster, Message, RadarTensor, TextContext
from fusion_rt.package import GraphSpec, ModelPackage, encoder_input, load_package, stage_names
from fusion_rt.preprocess import (
    CameraSize,
    PreprocessConfig,
    Vocabulary,
    decode_camera,
    map_input,
    radar_tensor_input,
)
from fusion_rt.sync import LatestWithin, StreamChecker
from fusion_rt.telemetry import Health, Telemetry

__all__ = ["FusionRuntime", "FusionOutput", "SourceInfo", "RunnerFactory", "OUTCOMES"]

#: What can happen to an input message; `stats()["messages"][modality]` counts each.
OUTCOMES: tuple[str, ...] = ("ok", "degraded", "rejected", "dropped")

#: Builds the runner of one package graph: (package, graph name) -> inactive Runner.
RunnerFactory = Callable[[ModelPackage, str], Runner]

_INPUT_TYPES = {"camera": CameraFrame, "radar": RadarTensor, "map": MapRaster, "text": TextContext}
# Every fusion-rt message kind: the ones a package does not consume are counted as ignored; anything
# else pushed (None, a dict, a ROS message straight from a subscriber) is a caller's mistake, refused.
_MESSAGE_TYPES = typing.get_args(Message)


@dataclass(frozen=True)
class SourceInfo:
    """A modality's features used by an output: the stamp of the message they came from and its age."""

    stamp_ns: int
    age_ns: int  # output stamp - source stamp


@dataclass(frozen=True, eq=False)
class FusionOutput:
    """One fused output for a trigger message (arrays are owned by the output).

    `status` is "degraded" when some modality was masked (flags `degraded:<m>_missing`, plus
    `stale:<m>` when it had features that aged out); flags `deadline_miss:<stage>` are
    informational and do not change the status.
    """

    stamp_ns: int
    status: str  # "ok" | "degraded"
    flags: tuple[str, ...]
    scene: dict[str, float]  # scene label -> probability (sigmoid of the head's scene logits)
    bev: np.ndarray  # [classes, rows, cols] float32 occupancy probabilities
    modality_share: dict[str, float]  # modality -> attention share, mean over the matrix's rows
    modality_share_matrix: np.ndarray | None  # [labels + 1, modalities]: rows scene labels then BEV
    sources: dict[str, SourceInfo]  # modalities used (trigger included) with their stamps and ages
    timings_ms: dict[str, float] = field(default_factory=dict)  # <trigger>_preprocess, <trigger>_encoder,
    #                                                            head, end_to_end, overhead


class _Counter:
    """Outcome counts of one modality, with reasons."""

    def __init__(self) -> None:
        self.received = 0
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.reasons: dict[str, dict[str, int]] = {o: {} for o in OUTCOMES if o != "ok"}
        self.last_detail: dict[str, str] = {}

    def add(self, outcome: str, reasons: tuple[str, ...] = (), detail: str = "") -> None:
        self.counts[outcome] += 1
        bucket = self.reasons.get(outcome)
        if bucket is not None:
            for reason in reasons:
                bucket[reason] = bucket.get(reason, 0) + 1
                if detail:
                    self.last_detail[reason] = detail

    def as_dict(self) -> dict:
        return {"received": self.received, **self.counts, "reasons": {k: dict(v) for k, v in self.reasons.items()},
                "last_detail": dict(self.last_detail)}


class _Encoder:
    """One modality: its runner, preallocated input buffer and (non-trigger) ring of token slots."""

    def __init__(self, modality: str, runner: Runner, input_name: str, buffer: np.ndarray, tokens_name: str,
                 tokens_shape: tuple[int, ...], history: int, is_trigger: bool,
                 tokens_dtype: type[np.generic] = np.float32) -> None:
        self.modality = modality
        self.runner = runner
        self.input_name = input_name
        self.buffer = buffer  # [1, ...]: preprocessing writes buffer[0] in place
        self.feed = {input_name: buffer}  # the same dict and array every call: I/O binding binds once
        self.tokens_name = tokens_name
        self.tokens_dtype = tokens_dtype  # the encoder's token output dtype, which the head takes too
        self.slots = None if is_trigger else np.zeros((history, *tokens_shape), dtype=tokens_dtype)
        self.accepted = 0  # encoded messages so far; slot of the next one = accepted % history
        self.content_key: bytes | None = None  # map/text: content of the cached features
        self.runs = 0
        self.reused = 0
        self.stage_pre = f"{modality}_preprocess"
        self.stage_enc = f"{modality}_encoder"

    def forget(self) -> None:
        self.content_key = None


def _decode_reason(exc: Exception) -> str:
    """A short counter key for a preprocessing failure (the full message is kept as detail)."""
    text = str(exc).lower()
    if "geometry" in text:
        return "bad_geometry"
    if "truncated" in text:
        return "truncated"
    if "non-finite" in text:
        return "nonfinite"
    if "out-of-range" in text:
        return "out_of_range"
    if "lacks channels" in text or "names" in text and "channels" in text:
        return "wrong_channels"
    if any(w in text for w in ("size", "shape", "grid", "larger than", "header says")):
        return "wrong_size"
    if "encoding" in text:
        return "wrong_encoding"
    if any(w in text for w in ("corrupt", "not a jpeg", "could not decode")):
        return "corrupt"
    return "malformed"


def _all_finite(x: np.ndarray) -> bool:
    """Whether every value is finite (measured: ~10 us for 16k floats, faster than a float64 sum)."""
    return bool(np.isfinite(x).all())


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) written as 0.5 * tanh(x / 2) + 0.5: no overflow, 30% faster than exp here.
    In float32 its step near 0 is ~3e-8 (0 below a logit of ~-17): right for the BEV grid, where
    only the 0.5 decision matters; scores that are ranked (AUC) use `_sigmoid_exact`."""
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def _sigmoid_exact(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (scene scores: a very negative logit keeps its rank)."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def _check_message(message) -> None:
    """ConfigError unless `message` is a fusion-rt message (kinds a package does not consume are
    counted as ignored by the caller): None, a dict or a ROS message from a subscriber callback were
    counted as ignored too, so a host feeding the wrong objects got no output and health "ok"."""
    if not isinstance(message, _MESSAGE_TYPES):
        raise ConfigError(f"push takes fusion_rt.messages objects ({', '.join(t.__name__ for t in _MESSAGE_TYPES)}), "
                          f"got {type(message).__module__}.{type(message).__name__}: convert ROS messages first "
                          f"(fusion_rt.logs.convert.converter_for(type name))")


def _check_clock_arg(name: str, value, clock: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
        raise ConfigError(f"{name} must be integer nanoseconds on the {clock} clock or None, "
                          f"got {value!r} ({type(value).__name__})")


def _batch1(spec_shape: tuple, fallback: tuple[int, ...]) -> tuple[int, ...]:
    """A graph tensor's shape with its dynamic batch axis set to 1 (other dynamic axes from `fallback`)."""
    dims = []
    for i, d in enumerate(spec_shape):
        if isinstance(d, int):
            dims.append(d)
        elif i == 0:
            dims.append(1)
        else:
            dims.append(fallback[i] if i < len(fallback) else -1)
    return tuple(dims)


#: Manifest dtype name -> numpy type, for every dtype a graph's input or output may have (bfloat16 has none).
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_,
             "uint8": np.uint8, "int8": np.int8, "float64": np.float64}
#: What an encoder's tokens (and the head's `<modality>_tokens` inputs, the same dtype) may be.
_TOKEN_DTYPES = ("float32", "float16")


class FusionRuntime:
    """Runs a model package on a stream of sensor messages (see the module docstring).

    Arguments:
        package: a loaded `ModelPackage` or its directory.
        backend: "onnxruntime", "tensorrt", or a `RunnerFactory` (package, graph) -> Runner, e.g. to
            wrap runners (tests inject a slow runner this way).
        max_age_ns: per-modality overrides of the manifest's max ages.
        threads: intra-op threads per ONNX Runtime session (None: ONNX Runtime's default).
        trigger: the modality whose messages produce outputs.
        threading / providers: ONNX Runtime options (`OrtConfig`).
        history: token slots kept per non-trigger modality (messages within max age to choose from).
        check_camera_size: reject images whose size differs from the rig's camera intrinsics (the rig's
            size reduced 2, 4 or 8 times is the same camera: a driver's downscaled stream, or a JPEG
            decoded at reduced resolution as replay's burst mode does ahead of time).
        budgets_ms: per-stage overrides of the manifest's `latency_budget_ms`.
        window: samples kept per stage for percentiles (None: every one, for an offline replay).
        stall_after_ns: a stage busy longer than this is reported as stalled by `health()`
            (default: the end_to_end budget, else 1 s).
        trigger_timeout_ns: while another sensor's stamps run more than this past the last output
            (on that sensor's own clock: an offset between clocks is no silence; before any output,
            past its first message), `health()` reads degraded with `degraded:<trigger>_missing`:
            no output comes while the trigger is silent, so nothing else would say so.
    """

    def __init__(
        self,
        package: ModelPackage | str | os.PathLike,
        backend: str | RunnerFactory = "onnxruntime",
        *,
        max_age_ns: Mapping[str, int] | None = None,
        threads: int | None = None,
        trigger: str = "camera",
        threading: OrtThreading | str = OrtThreading.NO_SPIN,
        providers: tuple[str, ...] = ("cpu",),
        # 16 x 50 ms radar = 800 ms: a camera frame delivered up to the 500 ms future margin late
        # still finds the radar within its 150 ms max age
        history: int = 16,
        check_camera_size: bool = True,
        budgets_ms: Mapping[str, float] | None = None,
        window: int | None = 4096,
        stream_checker: StreamChecker | None = None,  # per-stream stamp checks; default: 500 ms future margin
        stall_after_ns: int | None = None,
        trigger_timeout_ns: int = 500_000_000,  # 10 camera frames at 20 Hz
    ) -> None:
        self.package = package if isinstance(package, ModelPackage) else load_package(package)
        pkg = self.package
        if trigger not in pkg.modalities:
            raise ConfigError(f"trigger {trigger!r} is not a modality of package {pkg.name!r}: {list(pkg.modalities)}")
        if isinstance(history, bool) or not isinstance(history, Integral) or history < 2:
            raise ConfigError(f"history must be an integer >= 2, got {history!r}")
        if not isinstance(check_camera_size, bool):
            raise ConfigError(f"check_camera_size must be True or False, got {check_camera_size!r}")
        if stream_checker is not None and not isinstance(stream_checker, StreamChecker):
            raise ConfigError(f"stream_checker must be a fusion_rt.sync.StreamChecker, "
                              f"got {type(stream_checker).__name__}")
        self.trigger = trigger
        self.history = int(history)
        self.check_camera_size = check_camera_size
        try:
            self.preprocess = PreprocessConfig.from_dict(pkg.preprocess)
        except ConfigError as exc:
            raise ManifestError(f"manifest.preprocess of {str(pkg.root)!r}: {exc}") from exc
        if self.preprocess.radar_use_detections and "radar" in pkg.modalities:
            raise ConfigError("manifest.preprocess.radar_use_detections is true, but the runtime feeds the radar "
                              "encoder from RadarTensor messages only; export the model without detections")
        # parsed and checked by load_package (a text modality needs one there)
        self.vocabulary: Vocabulary | None = pkg.vocabulary if "text" in pkg.modalities else None

        ages = {m: a for m, a in pkg.max_age_ns.items() if m in pkg.modalities and m != trigger}
        for m, age in dict(max_age_ns or {}).items():
            if m not in pkg.modalities or m == trigger:
                raise ConfigError(f"max_age_ns override for {m!r}: not a non-trigger modality of the package "
                                  f"({[x for x in pkg.modalities if x != trigger]})")
            if isinstance(age, bool) or not isinstance(age, Integral) or age <= 0:
                raise ConfigError(f"max_age_ns[{m!r}] must be a positive integer of nanoseconds, got {age!r}")
            ages[m] = int(age)
        missing_age = [m for m in pkg.modalities if m != trigger and m not in ages]
        if missing_age:
            raise ManifestError(f"manifest.max_age_ns lacks {missing_age}; pass max_age_ns={{...}} to set them")
        self.max_age_ns = ages
        self._sync = LatestWithin(trigger, ages, history=self.history)
        # Without a receive clock the reference is the newest accepted stamp (StreamChecker), so the
        # margin must exceed the period of the fastest stream: 500 ms serves rigs down to 2 Hz, and
        # bounds what one corrupted future stamp can block (that stream's messages for 0.5 s).
        self._checker = stream_checker or StreamChecker(future_margin_ns=500_000_000)

        stages = stage_names(pkg.modalities)
        for name, value in dict(budgets_ms or {}).items():  # a misspelt stage would be timed, never checked
            if name not in stages:
                raise ConfigError(f"budgets_ms[{name!r}]: not a stage of this package; choose from {list(stages)}")
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"budgets_ms[{name!r}] must be a positive number of milliseconds, got {value!r}")
        budgets = {**pkg.latency_budget_ms, **{k: float(v) for k, v in dict(budgets_ms or {}).items()}}
        self.telemetry = Telemetry(budgets, window=window)
        if stall_after_ns is None:  # a stage still busy when the whole frame's budget is spent has stalled
            stall_after_ns = int(budgets["end_to_end"] * 1e6) if budgets.get("end_to_end") else 1_000_000_000
        if isinstance(stall_after_ns, bool) or not isinstance(stall_after_ns, Integral) or stall_after_ns <= 0:
            raise ConfigError(f"stall_after_ns must be a positive integer of nanoseconds, got {stall_after_ns!r}")
        self.stall_after_ns = int(stall_after_ns)
        if (isinstance(trigger_timeout_ns, bool) or not isinstance(trigger_timeout_ns, Integral)
                or trigger_timeout_ns <= 0):
            raise ConfigError(f"trigger_timeout_ns must be a positive integer of nanoseconds, "
                              f"got {trigger_timeout_ns!r}")
        self.trigger_timeout_ns = int(trigger_timeout_ns)
        # Trigger silence, per other stream: how far its latest accepted stamp ran past the last
        # output's stamp, or past its own latest at that output where that was later (a sensor clock
        # ahead of the camera's, or one stamp far ahead on a stream that publishes once, is not
        # silence); before any output since the start or a clock reset, past its first stamp.
        self._latest: dict[str, int] = {}
        self._at_output: dict[str, int] = {}
        self._output_stamp: int | None = None
        self._newest: int | None = None  # newest accepted stamp of any stream (the trigger's too) since a reset
        self._busy: tuple[str, int] | None = None  # (stage, perf_counter_ns at its start) while push() is in it

        if callable(backend):
            factory: RunnerFactory = backend
        elif backend in BACKENDS:
            ort_config = OrtConfig(providers=providers, threads=threads, threading=threading)

            def factory(p: ModelPackage, g: str) -> Runner:
                return create_runner(p, g, backend, ort_config)
        else:
            raise ConfigError(f"backend must be one of {list(BACKENDS)} or a runner factory, got {backend!r}")
        self._runners: list[Runner] = []
        self._closed = False
        self._lock = Lock()  # push / note_dropped / reset / stats / close; health() never takes it
        try:
            self._build(factory)
        except BaseException:
            self.close()
            raise

        self._counters = {m: _Counter() for m in pkg.modalities}
        self._ignored: dict[str, int] = {}
        self._outputs = dict.fromkeys(("total", "ok", "degraded"), 0)
        self._clock_resets = 0
        self._last_flags: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------- setup
    def _input_buffer(self, modality: str, spec: GraphSpec) -> tuple[str, np.ndarray]:
        inp, shape, dtype = encoder_input(spec, modality, self.preprocess, self.vocabulary)  # load_package's check
        return inp.name, np.zeros(shape, dtype=dtype)

    def _build(self, factory: RunnerFactory) -> None:
        pkg = self.package
        self._encoders: dict[str, _Encoder] = {}
        for m in pkg.modalities:
            spec = pkg.encoder(m)
            input_name, buffer = self._input_buffer(m, spec)
            tokens_name = spec.tokens_output
            if tokens_name is None:
                raise GraphMismatchError(f"graph {spec.name!r}: expected a 'tokens' output, "
                                         f"got {[t.name for t in spec.outputs]}")
            tok_spec = next(t for t in spec.outputs if t.name == tokens_name)
            tokens_shape = _batch1(tok_spec.shape, ())
            if any(d < 0 for d in tokens_shape):
                raise GraphMismatchError(f"graph {spec.name!r}.outputs[{tokens_name!r}]: the runtime needs static "
                                         f"token and feature sizes, got {list(tok_spec.shape)}")
            if tok_spec.dtype not in _TOKEN_DTYPES:
                raise GraphMismatchError(f"graph {spec.name!r}.outputs[{tokens_name!r}].dtype is {tok_spec.dtype}; "
                                         f"tokens must be one of {list(_TOKEN_DTYPES)}")
            runner = factory(pkg, m)
            self._runners.append(runner)
            runner.activate()
            self._encoders[m] = _Encoder(m, runner, input_name, buffer, tokens_name, tokens_shape, self.history,
                                         m == self.trigger, NP_DTYPES[tok_spec.dtype])

        head = pkg.head
        head_inputs = {t.name: t for t in head.inputs}
        fed = {*(f"{m}_tokens" for m in pkg.modalities), "present"}
        unfed = [name for name in head_inputs if name not in fed]
        if unfed:
            raise GraphMismatchError(f"graph 'head': inputs {unfed} are fed by nothing; the head takes only "
                                     f"{sorted(fed)} (manifest.modalities {list(pkg.modalities)})")
        self._head_feed: dict[str, np.ndarray] = {}
        for m in pkg.modalities:
            name = f"{m}_tokens"
            if name not in head_inputs:
                raise GraphMismatchError(f"graph 'head': missing input {name!r}; it has {sorted(head_inputs)}")
            shape = _batch1(head_inputs[name].shape, ())
            enc = self._encoders[m]
            enc_shape = enc.slots.shape[1:] if enc.slots is not None else None
            if enc_shape is not None and tuple(enc_shape) != shape:
                raise GraphMismatchError(f"graph 'head'.inputs[{name!r}] shape {list(head_inputs[name].shape)} differs "
                                         f"from encoder {m!r} tokens {list(enc_shape)}")
            enc_dtype = np.dtype(enc.tokens_dtype).name
            if head_inputs[name].dtype != enc_dtype:
                raise GraphMismatchError(f"graph 'head'.inputs[{name!r}].dtype is {head_inputs[name].dtype}, encoder "
                                         f"{m!r} outputs {enc.tokens_name!r} as {enc_dtype}: they must be the same")
            if m != self.trigger:
                self._head_feed[name] = np.zeros(shape, dtype=enc.tokens_dtype)
        if "present" not in head_inputs:
            raise GraphMismatchError(f"graph 'head': missing input 'present'; it has {sorted(head_inputs)}")
        present_dtype = NP_DTYPES.get(head_inputs["present"].dtype)
        if present_dtype is None:
            raise GraphMismatchError(f"graph 'head'.inputs['present'].dtype {head_inputs['present'].dtype} unsupported")
        present_shape = _batch1(head_inputs["present"].shape, (1, len(pkg.modalities)))
        if present_shape != (1, len(pkg.modalities)):
            raise GraphMismatchError(f"graph 'head'.inputs['present'] shape {list(head_inputs['present'].shape)} "
                                     f"does not hold one column per modality {list(pkg.modalities)}")
        self._present = np.zeros((1, len(pkg.modalities)), dtype=present_dtype)
        self._present_index = {m: i for i, m in enumerate(pkg.modalities)}
        self._head_feed["present"] = self._present
        head_outputs = [t.name for t in head.outputs]
        for name in ("scene_logits", "bev_logits"):
            if name not in head_outputs:
                raise GraphMismatchError(f"graph 'head': missing output {name!r}; it has {head_outputs}")
        scene_width = _batch1(next(t for t in head.outputs if t.name == "scene_logits").shape, ())[-1]
        if scene_width != len(pkg.scene_labels):
            raise GraphMismatchError(f"graph 'head'.outputs['scene_logits'] has {scene_width} labels, "
                                     f"manifest.outputs.scene_labels has {len(pkg.scene_labels)}")
        self._has_share = "modality_share" in head_outputs
        if self._has_share:  # [batch, labels + 1, modalities]: the output's share is read by modality name
            share_spec = next(t for t in head.outputs if t.name == "modality_share")
            want = (1, len(pkg.scene_labels) + 1, len(pkg.modalities))
            if _batch1(share_spec.shape, ()) != want:
                raise GraphMismatchError(f"graph 'head'.outputs['modality_share'] shape {list(share_spec.shape)} is "
                                         f"not [batch, {want[1]}, {want[2]}] (rows: scene labels then BEV; columns: "
                                         f"manifest.modalities {list(pkg.modalities)}, static)")
        self._head = factory(pkg, "head")
        self._runners.append(self._head)
        self._head.activate()
        self._trigger_tokens_name = f"{self.trigger}_tokens"
        self._others = [m for m in pkg.modalities if m != self.trigger]
        self._camera_size = CameraSize(pkg.rig.camera.intrinsics)

    # -------------------------------------------------------------------------------------- API
    def push(self, message, deadline_ns: int | None = None, now_ns: int | None = None) -> list[FusionOutput]:
        """Process one message; returns the outputs it produced (one for an accepted trigger, else none).

        `deadline_ns` (time.monotonic_ns clock): drop the message, counted, if it is already late.
        `now_ns`: the receive time on the stamps' clock, when the caller has one; it is the reference
        of the future-stamp check (else the newest accepted stamp: see `StreamChecker`).
        Safe to call from several threads: pushes run one at a time (see the module's docstring).
        """
        with self._lock:
            return self._push(message, deadline_ns, now_ns)

    def _push(self, message, deadline_ns: int | None, now_ns: int | None) -> list[FusionOutput]:
        t0 = time.perf_counter_ns()
        self._refuse_closed()
        _check_clock_arg("deadline_ns", deadline_ns, "time.monotonic_ns()")
        _check_clock_arg("now_ns", now_ns, "sensors' stamp")
        _check_message(message)
        modality = getattr(type(message), "modality", None)
        enc = self._encoders.get(modality)
        if enc is None or not isinstance(message, _INPUT_TYPES[modality]):
            kind = type(message).__name__
            self._ignored[kind] = self._ignored.get(kind, 0) + 1
            return []
        counter = self._counters[modality]
        counter.received += 1
        if deadline_ns is not None and time.monotonic_ns() > deadline_ns:
            if self._checked_stamp(modality, message, counter, now_ns) is not None:
                counter.add("dropped", ("deadline_passed",))
            return []
        stamp = self._checked_stamp(modality, message, counter, now_ns)
        if stamp is None:
            return []
        if self._newest is None or stamp > self._newest:
            self._newest = stamp
        if modality != self.trigger:  # accepted stamps increase per stream between resets
            # replaced, not mutated: health() may read them from another thread
            self._latest = {**self._latest, modality: stamp}
            if modality not in self._at_output:
                self._at_output = {**self._at_output, modality: stamp}
        try:
            if modality == self.trigger:
                outputs = self._fire(enc, message, stamp, counter, t0)
                if outputs:  # a trigger that only brings rejected frames is as good as silent
                    self._at_output, self._output_stamp = self._latest, stamp
                return outputs
            self._update(enc, message, stamp, counter)
            return []
        except RunnerError as exc:  # a failing backend: raised, and the message still has its one outcome
            counter.add("rejected", ("runner_error",), str(exc))
            raise
        finally:
            self._busy = None

    def note_dropped(self, message, reason: str = "superseded", now_ns: int | None = None) -> str:
        """Count a message the caller dropped before pushing it (e.g. a latest-wins mailbox); returns
        its outcome: "dropped", "rejected" or "ignored".

        Its stamp still goes through the stamp checks, as in `push`: a dropped message is evidence
        of the sensors' clock (without it, a runtime that falls behind in a latest-wins replay would
        refuse the next message it does take as "future", its clock being the last one processed).
        A message whose stamp the checks refuse is counted as rejected, not dropped."""
        with self._lock:
            return self._note_dropped(message, reason, now_ns)

    def _note_dropped(self, message, reason: str, now_ns: int | None) -> str:
        self._refuse_closed()
        _check_message(message)
        modality = getattr(type(message), "modality", None)
        counter = self._counters.get(modality)
        if counter is None or not isinstance(message, _INPUT_TYPES[modality]):
            kind = type(message).__name__
            self._ignored[kind] = self._ignored.get(kind, 0) + 1
            return "ignored"
        counter.received += 1
        if self._checked_stamp(modality, message, counter, now_ns) is None:
            return "rejected"
        counter.add("dropped", (reason,))
        return "dropped"

    def reset(self) -> None:
        """Start a new stream: another log through the same runtime, or a restarted recording. The
        stamp checks, the feature cache and the trigger-silence tracking forget the old stream (its
        last stamps would refuse the new one's first message as backwards, and a map published once
        at its start would be lost for the whole drive); counters and latency statistics are kept."""
        with self._lock:
            self._refuse_closed()
            self._checker.forget()
            self._forget_stream()

    def _refuse_closed(self) -> None:
        if self._closed:
            raise RunnerError("FusionRuntime is closed; create a new one")

    def _checked_stamp(self, modality: str, message, counter, now_ns: int | None) -> int | None:
        """The message's stamp once the stream checks accept it (resetting the cache on a confirmed
        clock jump); None, counted as rejected with its reason, when they refuse it."""
        stamp = message.stamp_ns
        if isinstance(stamp, bool) or not isinstance(stamp, Integral) or stamp < 0:
            counter.add("rejected", ("bad_stamp",), f"stamp_ns must be a non-negative integer, got {stamp!r}")
            return None
        stamp = int(stamp)
        try:
            verdict = self._checker.check(modality, stamp, now_ns)
        except ConfigError as exc:
            counter.add("rejected", ("bad_stamp",), str(exc))
            return None
        if not verdict.feed:
            counter.add("rejected", (f"stamp_{verdict.reason.value}",), verdict.detail)
            return None
        if verdict.reset:
            self._clock_resets += 1
            self._forget_stream()
        return stamp

    def stats(self) -> dict:
        """Counters and latencies (a snapshot, taken between pushes; plain JSON-compatible values)."""
        with self._lock:
            return self._stats()

    def _stats(self) -> dict:
        messages = {m: c.as_dict() for m, c in self._counters.items()}
        return {
            "messages": messages,
            "received": sum(c["received"] for c in messages.values()),
            "dropped": sum(c["dropped"] for c in messages.values()),
            "ignored": dict(self._ignored),
            "outputs": dict(self._outputs),
            "clock_resets": self._clock_resets,
            "encoder_runs": {m: e.runs for m, e in self._encoders.items()},
            "encoder_reused": {m: e.reused for m, e in self._encoders.items()},
            # features pushed out of a modality's `history` slots while a later trigger could still
            # have chosen them (a late trigger frame then finds none fresh: raise `history` if this grows)
            "history_evicted": self._sync.drops(),
            "deadline_misses": self.telemetry.deadline_misses(),
            "latency_ms": self.telemetry.summary(),
            "health": self.health().state,
        }

    def health(self, now_ns: int | None = None) -> Health:
        """Telemetry health, at least "degraded" while the latest output had masked modalities or the
        trigger has been silent for `trigger_timeout_ns` of the other sensors' time, and "failing"
        while a stage has been busy longer than `stall_after_ns` (safe to poll from a supervising
        thread while another pushes; never waits for it). A closed runtime reads "failing".

        `now_ns`: the supervisor's time on the sensors' stamp clock (as `push`'s), when it has one.
        Then "failing" also while no message of any sensor has been accepted for more than
        `trigger_timeout_ns` before it (every sensor silent, or the pushing thread gone: without it
        the stamps alone cannot tell). Nothing is judged before the first message of a stream.
        """
        _check_clock_arg("now_ns", now_ns, "sensors' stamp")
        if self._closed:
            return Health("failing", ("closed: the runtime's sessions are released",))
        busy = self._busy  # read once: push() replaces it meanwhile
        newest = self._newest
        health = self.telemetry.health()
        degraded = tuple(f for f in self._last_flags if f.startswith("degraded:"))
        latest, at_output, since = self._latest, self._at_output, self._output_stamp  # replaced, never mutated
        silent = max((t - (at_output.get(m, t) if since is None else max(at_output.get(m, t), since))
                      for m, t in latest.items()), default=0)
        if silent > self.trigger_timeout_ns:
            degraded = (f"degraded:{self.trigger}_missing (none for {silent / 1e6:.0f} ms of sensor time)", *degraded)
        if busy is not None:
            busy_ns = time.perf_counter_ns() - busy[1]
            if busy_ns > self.stall_after_ns:
                stalled = f"stalled: {busy[0]} busy for {busy_ns / 1e6:.0f} ms (limit {self.stall_after_ns / 1e6:g} ms)"
                return Health("failing", (stalled, *health.reasons, *degraded))
        if now_ns is not None and newest is not None and now_ns - newest > self.trigger_timeout_ns:
            silence = (f"silent: no sensor message accepted for {(now_ns - newest) / 1e6:.0f} ms before now_ns "
                       f"(limit {self.trigger_timeout_ns / 1e6:g} ms)")
            return Health("failing", (silence, *health.reasons, *degraded))
        if degraded and health.state == "ok":
            return Health("degraded", degraded)
        return Health(health.state, health.reasons + degraded)

    def close(self) -> None:
        """Release every backend session (idempotent); waits for a push in progress on another thread,
        and every later call but `health()` and `stats()` is refused."""
        self._closed = True  # pushes waiting for the lock are refused once they take it
        with self._lock:
            for runner in self._runners:
                runner.deactivate()

    def __enter__(self) -> FusionRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def runners(self) -> dict[str, Runner]:
        """The runner of every graph (encoders by modality, and 'head')."""
        return {**{m: e.runner for m, e in self._encoders.items()}, "head": self._head}

    # --------------------------------------------------------------------------------- internals
    def _forget_stream(self) -> None:
        """Forget the cached features and the trigger-silence tracking: a new stream (`reset`) or a
        confirmed clock jump (the stamp checks forget their own state then)."""
        self._sync.reset()
        for enc in self._encoders.values():
            enc.forget()
        self._latest, self._at_output, self._output_stamp, self._newest = {}, {}, None, None

    def _preprocess(self, enc: _Encoder, message) -> tuple[bytes | None, tuple[str, ...]]:
        """Fill enc.buffer[0] from the message; returns (content key, degraded reasons). Raises DecodeError."""
        m = enc.modality
        if m == "camera":
            if self.check_camera_size:
                self._camera_size.check(message)
            decode_camera(message, self.preprocess, out=enc.buffer[0])
            return None, ()
        if m == "radar":
            counts: dict[str, int] = {}  # what radar_tensor_input masked (it rejects the frame above a share)
            radar_tensor_input(message, self.preprocess, out=enc.buffer[0], masked=counts, radar=self.package.rig.radar)
            return None, tuple(f"{kind}_masked" for kind in ("nonfinite", "out_of_range") if kind in counts)
        if m == "map":
            grid = np.asarray(message.grid)
            digest = hashlib.blake2b(digest_size=16)
            digest.update(str((grid.dtype.str, grid.shape)).encode())
            digest.update(np.ascontiguousarray(grid).data)
            digest.update(struct.pack("<ddd", float(message.cell_m), float(message.x_max_m), float(message.y_max_m)))
            key = digest.digest()
            if key != enc.content_key:
                map_input(message, self.preprocess, out=enc.buffer[0])
            return key, ()
        if m == "text":
            self.vocabulary.text_input(message, out=enc.buffer[0])
            return enc.buffer.tobytes(), ()
        raise AssertionError(m)

    def _run_preprocess(self, enc: _Encoder, message, counter: _Counter) -> tuple[bytes | None, tuple[str, ...]] | None:
        try:
            return self._preprocess(enc, message)
        except DecodeError as exc:
            counter.add("rejected", (_decode_reason(exc),), str(exc))
        except ConfigError:
            raise  # our own misconfiguration, not bad input
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # a malformed message object
            counter.add("rejected", ("malformed",), f"{type(exc).__name__}: {exc}")
        return None

    def _update(self, enc: _Encoder, message, stamp: int, counter: _Counter) -> None:
        t0 = time.perf_counter_ns()
        self._busy = (enc.stage_pre, t0)
        result = self._run_preprocess(enc, message, counter)
        if result is None:
            return
        key, degraded = result
        t1 = time.perf_counter_ns()
        self._busy = (enc.stage_enc, t1)
        self.telemetry.record(enc.stage_pre, t1 - t0)
        slot = enc.accepted % self.history
        if key is not None and key == enc.content_key:
            # Same content as the cached features: re-stamp them, no encoder run.
            np.copyto(enc.slots[slot], enc.slots[(enc.accepted - 1) % self.history])
            enc.reused += 1
        else:
            tokens = enc.runner.infer(enc.feed)[enc.tokens_name]
            self.telemetry.record(enc.stage_enc, time.perf_counter_ns() - t1)
            enc.runs += 1
            if not _all_finite(tokens):
                enc.content_key = None
                counter.add("rejected", ("nonfinite_tokens",), f"{enc.modality} encoder produced non-finite tokens")
                return
            np.copyto(enc.slots[slot], tokens)
            enc.content_key = key
        enc.accepted += 1
        self._sync.add(enc.modality, stamp, slot)
        counter.add("degraded" if degraded else "ok", degraded)

    def _fire(self, enc: _Encoder, message, stamp: int, counter: _Counter, t0: int) -> list[FusionOutput]:
        tp = time.perf_counter_ns()
        self._busy = (enc.stage_pre, tp)
        if self._run_preprocess(enc, message, counter) is None:
            return []
        t1 = time.perf_counter_ns()
        self._busy = (enc.stage_enc, t1)
        tokens = enc.runner.infer(enc.feed)[enc.tokens_name]
        t2 = time.perf_counter_ns()
        enc.runs += 1
        if not _all_finite(tokens):
            counter.add("rejected", ("nonfinite_tokens",), f"{enc.modality} encoder produced non-finite tokens")
            return []
        (fused,) = self._sync.add(self.trigger, stamp, None)
        feed = self._head_feed
        feed[self._trigger_tokens_name] = tokens
        present = self._present
        present[0, self._present_index[self.trigger]] = 1
        sources = {self.trigger: SourceInfo(stamp, 0)}
        flags: list[str] = []
        for m in self._others:
            chosen = fused.messages[m]
            buf = feed[f"{m}_tokens"]
            if chosen is None:
                present[0, self._present_index[m]] = 0
                buf.fill(0.0)
                flags.append(f"degraded:{m}_missing")
                if m in fused.stale:  # it had a message before the frame, too old to use
                    flags.append(f"stale:{m}")
            else:
                present[0, self._present_index[m]] = 1
                np.copyto(buf, self._encoders[m].slots[chosen[1]])
                sources[m] = SourceInfo(chosen[0], fused.ages_ns[m])
        self._busy = ("head", t2)  # t2 also starts the head stage in `timings_ms`
        outputs = self._head.infer(feed)
        t3 = time.perf_counter_ns()
        for name, value in outputs.items():
            if not _all_finite(value):
                counter.add("rejected", ("nonfinite_output",), f"head output {name!r} is not finite")
                return []
        pkg = self.package
        scene = dict(zip(pkg.scene_labels, _sigmoid_exact(outputs["scene_logits"][0]).tolist(), strict=True))
        bev_logits = outputs["bev_logits"][0]
        bev = _sigmoid(bev_logits, np.empty(bev_logits.shape, dtype=np.float32))
        share_matrix = None
        share: dict[str, float] = {}
        if self._has_share:
            share_matrix = np.array(outputs["modality_share"][0], dtype=np.float32)
            share = dict(zip(pkg.modalities, share_matrix.mean(axis=0).tolist(), strict=True))
        t4 = time.perf_counter_ns()

        # overhead: everything in end_to_end that is not one of the three graph/preprocessing stages
        stages = ((enc.stage_pre, t1 - tp), (enc.stage_enc, t2 - t1), ("head", t3 - t2), ("end_to_end", t4 - t0),
                  ("overhead", (t4 - t0) - (t1 - tp) - (t2 - t1) - (t3 - t2)))
        timings = {}
        record = self.telemetry.record
        for name, ns in stages:
            if record(name, ns):
                flags.append(f"deadline_miss:{name}")
            timings[name] = ns / 1e6
        degraded = any(f.startswith("degraded:") for f in flags)
        status = "degraded" if degraded else "ok"
        flags_t = tuple(flags)
        self._last_flags = flags_t
        self._outputs["total"] += 1
        self._outputs[status] += 1
        if degraded:
            counter.add("degraded", tuple(f.split(":", 1)[1] for f in flags_t if f.startswith("degraded:")))
        else:
            counter.add("ok")
        return [FusionOutput(stamp_ns=stamp, status=status, flags=flags_t, scene=scene, bev=bev,
                             modality_share=share, modality_share_matrix=share_matrix, sources=sources,
                             timings_ms=timings)]

