"""Time-synchronization policies: pure, deterministic, integer nanoseconds.

Every policy is fed one message at a time and returns what that message released; nothing here
owns a thread, a clock or a callback, so the same inputs always give the same sets (DESIGN.md §3).

- `ApproximateTime`, `ApproximateEpsilonTime`, `ExactTime`: ports of the ROS 2 `message_filters`
  synchronization policies of the same names, so that users moving from ROS get the sets they got
  there. Streams are numbered `0..num_streams-1`; `add(stream_index, stamp_ns, payload)` returns the
  list of sets emitted by that call, each a tuple in stream order of `(stamp_ns, payload)` pairs.
- `LatestWithin`: fires on a trigger stream with the freshest message of every other stream; a
  stream with nothing fresh is reported missing and never blocks output.
- `StreamChecker`: the per-stream sanity check that runs before any policy (backwards, repeated
  and future stamps are rejected and counted; a clock jump asks the caller to `reset()`).
"""

from __future__ import annotations

import enum
import logging
import math
from bisect import insort
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Integral, Real
from typing import Any, Protocol

from fusion_rt.errors import ConfigError

__all__ = [
    "JUMP_THRESHOLD_NS",
    "Stamped",
    "MatchedSet",
    "SyncPolicy",
    "ApproximateTime",
    "ApproximateEpsilonTime",
    "ExactTime",
    "SyncSet",
    "LatestWithin",
    "Action",
    "Reason",
    "Verdict",
    "StreamChecker",
]

_log = logging.getLogger(__name__)

Stamped = tuple[int, Any]
"""One message as a policy sees it: `(stamp_ns, payload)`."""

MatchedSet = tuple[Stamped, ...]
"""One emitted set: a `Stamped` per stream, in stream order."""


class SyncPolicy(Protocol):
    """What the indexed policies share: feed messages one by one, collect the sets they release."""

    def add(self, stream_index: int, stamp_ns: int, payload: Any) -> list[MatchedSet]: ...

    def reset(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Argument checks (user input: ConfigError naming the value, never assert)
# --------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int) -> int:
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _check_stamp(stamp_ns: object) -> int:
    if not _is_int(stamp_ns):
        raise ConfigError(f"stamp_ns must be integer nanoseconds, got {stamp_ns!r} ({type(stamp_ns).__name__})")
    return int(stamp_ns)  # type: ignore[arg-type]


def _check_stream(stream: object) -> None:
    try:
        hash(stream)
    except TypeError:
        raise ConfigError(f"a stream must be named by a hashable value (a string), got {stream!r}") from None


class _IndexedPolicy:
    """Shared validation for the policies whose streams are numbered 0..num_streams-1."""

    def __init__(self, num_streams: int, queue_size: int) -> None:
        self.num_streams = _check_int("num_streams", num_streams, 2)
        self.queue_size = _check_int("queue_size", queue_size, 1)

    def _check_index(self, stream_index: object) -> int:
        if not _is_int(stream_index) or not 0 <= stream_index < self.num_streams:  # type: ignore[operator]
            raise ConfigError(f"stream_index must be an integer in [0, {self.num_streams - 1}], got {stream_index!r}")
        return int(stream_index)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# ApproximateTime
# --------------------------------------------------------------------------------------------


class ApproximateTime(_IndexedPolicy):
    """The ROS 2 message_filters ApproximateTime policy (`sync_policies/approximate_time.hpp`).

    Each emitted set holds one message per stream; among the sets that could be formed it is the
    one of smallest span `end - start`, where a candidate replacing the current one must satisfy
    `(end - candidate_end) * (1 + age_penalty) < start - candidate_start` (the age penalty favours
    older sets so that output is not delayed). A set is emitted only once later messages prove it
    optimal: every deque has moved past it (the pivot, the stream whose head ended the first
    candidate, is exhausted) or any later set would be wider; per-stream inter-message lower bounds
    let the policy prove this earlier by reasoning about messages that have not yet arrived.

    Faithful to ROS, including its tie-breaks: the candidate start is the earliest deque head (the
    lowest stream index on ties) and the candidate end is the latest deque head (the highest stream
    index on ties). Sets span at most `max_interval_ns` (None: unbounded, as ROS's default).
    A stream holding more than `queue_size` messages (in its deque and its "past" vector together)
    cancels the candidate search, recovers the past vectors and drops its oldest message; that
    stream then may not serve as pivot until a later set proves nothing better was lost.

    Like ROS, it assumes each stream's stamps arrive in order (not across streams); a stream that
    arrives out of order, or closer than its declared lower bound, is logged once (see
    `warned_streams`) and otherwise processed as ROS does. Put a `StreamChecker` in front.

    Scaling by `1 + age_penalty` is done as in `rclcpp::Duration::operator*(double)`: the double
    `1.0 + age_penalty` times the nanosecond count, truncated toward zero (exact rational arithmetic
    here, which agrees with ROS's long double product for any practical duration).
    """

    def __init__(
        self,
        num_streams: int,
        queue_size: int,
        age_penalty: float = 0.1,  # ROS default; 0 picks the tightest set regardless of age
        max_interval_ns: int | None = None,  # None = ROS's default (effectively unbounded)
        inter_message_lower_bound_ns: Sequence[int] | None = None,  # None = all 0, as in ROS
    ) -> None:
        super().__init__(num_streams, queue_size)
        if (
            not isinstance(age_penalty, Real)
            or isinstance(age_penalty, bool)
            or not math.isfinite(age_penalty)
            or age_penalty < 0
        ):
            raise ConfigError(f"age_penalty must be a finite number >= 0, got {age_penalty!r}")
        self.age_penalty = float(age_penalty)
        self.max_interval_ns = None if max_interval_ns is None else _check_int("max_interval_ns", max_interval_ns, 0)
        if inter_message_lower_bound_ns is None:
            bounds = [0] * self.num_streams
        else:
            if isinstance(inter_message_lower_bound_ns, (str, bytes)) or not isinstance(
                inter_message_lower_bound_ns, Sequence
            ):
                raise ConfigError(
                    f"inter_message_lower_bound_ns must be a sequence of {self.num_streams} integers, "
                    f"got {inter_message_lower_bound_ns!r}"
                )
            if len(inter_message_lower_bound_ns) != self.num_streams:
                raise ConfigError(
                    f"inter_message_lower_bound_ns needs one value per stream ({self.num_streams}), "
                    f"got {len(inter_message_lower_bound_ns)}: {list(inter_message_lower_bound_ns)!r}"
                )
            bounds = [
                _check_int(f"inter_message_lower_bound_ns[{i}]", b, 0)
                for i, b in enumerate(inter_message_lower_bound_ns)
            ]
        self.inter_message_lower_bound_ns: tuple[int, ...] = tuple(bounds)
        # (1 + age_penalty) as the exact value of the C++ double, kept as numerator/denominator.
        factor = Fraction(1.0 + self.age_penalty)
        self._factor_num, self._factor_den = factor.numerator, factor.denominator
        self.overflow_drops = [0] * self.num_streams  # messages dropped because a stream's queue overflowed
        self.reset()

    def reset(self) -> None:
        """Forget every queued message and the candidate (a fresh policy; counters are kept)."""
        n = self.num_streams
        self._deques: list[deque[Stamped]] = [deque() for _ in range(n)]
        self._past: list[list[Stamped]] = [[] for _ in range(n)]
        self._num_non_empty = 0
        self._pivot: int | None = None  # ROS's NO_PIVOT is None
        self._pivot_time = 0
        self._candidate: MatchedSet | None = None
        self._candidate_start = 0
        self._candidate_end = 0
        self._has_dropped = [False] * n
        self._warned = [False] * n
        self._out: list[MatchedSet] = []

    # -- public state -------------------------------------------------------------------------

    @property
    def num_non_empty_deques(self) -> int:
        """How many streams have a message in their deque (ROS's `num_non_empty_deques_`)."""
        return self._num_non_empty

    @property
    def warned_streams(self) -> tuple[bool, ...]:
        """Per stream: whether it arrived out of order or closer than its lower bound (warned once)."""
        return tuple(self._warned)

    def queued(self, stream_index: int) -> int:
        """Messages held for a stream (deque plus past vector): at most `queue_size` after `add`."""
        i = self._check_index(stream_index)
        return len(self._deques[i]) + len(self._past[i])

    # -- add ----------------------------------------------------------------------------------

    def add(self, stream_index: int, stamp_ns: int, payload: Any) -> list[MatchedSet]:
        """Queue one message; return the sets it released, in emission order (often none)."""
        i = self._check_index(stream_index)
        msg: Stamped = (_check_stamp(stamp_ns), payload)
        self._out = []
        dq = self._deques[i]
        dq.append(msg)
        if len(dq) == 1:
            self._num_non_empty += 1
            if self._num_non_empty == self.num_streams:
                self._process()
        else:
            self._check_inter_message_bound(i)
        # During _process() this stream may transiently hold queue_size + 1 messages (as in ROS).
        if len(dq) + len(self._past[i]) > self.queue_size:
            self._num_non_empty = 0  # cancel the candidate search; recomputed by the recovery
            self._recover_all()
            dq.popleft()
            self.overflow_drops[i] += 1
            self._has_dropped[i] = True
            if self._pivot is not None:
                self._candidate = None
                self._pivot = None
                self._process()  # there may still be enough messages for a new candidate
        out, self._out = self._out, []
        return out

    def _check_inter_message_bound(self, i: int) -> None:
        """ROS's checkInterMessageBound: warn once if a stream breaks its ordering or lower bound."""
        if self._warned[i]:
            return
        dq = self._deques[i]
        stamp = dq[-1][0]
        if len(dq) == 1:
            if not self._past[i]:
                return  # previous message already published (or never received): nothing to check
            previous = self._past[i][-1][0]
        else:
            previous = dq[-2][0]
        if stamp < previous:
            _log.warning("stream %d: messages arrived out of order (warned once)", i)
            self._warned[i] = True
        elif stamp - previous < self.inter_message_lower_bound_ns[i]:
            _log.warning(
                "stream %d: messages arrived %d ns apart, closer than the lower bound %d ns (warned once)",
                i,
                stamp - previous,
                self.inter_message_lower_bound_ns[i],
            )
            self._warned[i] = True

    # -- deque / past bookkeeping -------------------------------------------------------------

    def _scaled(self, duration_ns: int) -> int:
        """`duration * (1 + age_penalty)` truncated toward zero, like rclcpp::Duration * double."""
        q = abs(duration_ns) * self._factor_num // self._factor_den
        return q if duration_ns >= 0 else -q

    def _delete_front(self, i: int) -> None:
        dq = self._deques[i]
        dq.popleft()
        if not dq:
            self._num_non_empty -= 1

    def _move_front_to_past(self, i: int) -> None:
        dq = self._deques[i]
        self._past[i].append(dq.popleft())
        if not dq:
            self._num_non_empty -= 1

    def _make_candidate(self) -> None:
        self._candidate = tuple(dq[0] for dq in self._deques)
        for past in self._past:  # older messages can no longer be part of a better set
            past.clear()

    def _recover(self, i: int, count: int | None = None) -> None:
        """Move the last `count` (default all) past messages of stream i back to its deque."""
        past, dq = self._past[i], self._deques[i]
        count = len(past) if count is None else count
        assert count <= len(past)
        for _ in range(count):
            dq.appendleft(past.pop())
        if dq:
            self._num_non_empty += 1

    def _recover_all(self, counts: Sequence[int] | None = None) -> None:
        for i in range(self.num_streams):
            self._recover(i, None if counts is None else counts[i])

    def _publish_candidate(self) -> None:
        assert self._candidate is not None
        self._out.append(self._candidate)
        self._candidate = None
        self._pivot = None
        # Recover the hidden messages and delete the ones that made the candidate (each deque's head).
        self._num_non_empty = 0
        for i in range(self.num_streams):
            self._recover(i)
            dq = self._deques[i]
            assert dq
            dq.popleft()
            if not dq:
                self._num_non_empty -= 1

    # -- candidate search ---------------------------------------------------------------------

    @staticmethod
    def _boundary(times: Sequence[int], end: bool) -> tuple[int, int]:
        """Earliest (end=False, first index on ties) or latest (end=True, last index on ties) time.

        ROS's getCandidateBoundary / getVirtualCandidateBoundary: `(t < best) XOR end`.
        """
        index, best = 0, times[0]
        for k in range(1, len(times)):
            if (times[k] < best) != end:
                index, best = k, times[k]
        return index, best

    def _virtual_times(self) -> list[int]:
        """Each deque's head, or for an exhausted deque the earliest a next message could be stamped."""
        times = []
        for dq, past, bound in zip(self._deques, self._past, self.inter_message_lower_bound_ns, strict=True):
            if dq:
                times.append(dq[0][0])
            else:
                assert past  # we have a candidate, so this stream contributed to it
                times.append(max(past[-1][0] + bound, self._pivot_time))
        return times

    def _process(self) -> None:
        n = self.num_streams
        while self._num_non_empty == n:
            heads = [dq[0][0] for dq in self._deques]
            end_index, end_time = self._boundary(heads, end=True)
            start_index, start_time = self._boundary(heads, end=False)
            for i in range(n):
                if i != end_index:
                    # No dropped message could have beaten the ones we hold: i may be pivot again.
                    self._has_dropped[i] = False
            if self._pivot is None:
                if self.max_interval_ns is not None and end_time - start_time > self.max_interval_ns:
                    self._delete_front(start_index)  # too wide to ever be a set
                    continue
                if self._has_dropped[end_index]:
                    self._delete_front(start_index)  # a dropped message makes this a bad pivot
                    continue
                self._make_candidate()
                self._candidate_start, self._candidate_end = start_time, end_time
                self._pivot, self._pivot_time = end_index, end_time
                self._move_front_to_past(start_index)
            else:
                if self._scaled(end_time - self._candidate_end) >= start_time - self._candidate_start:
                    self._move_front_to_past(start_index)  # not better than the current candidate
                else:
                    self._make_candidate()  # better; keep the same pivot and pivot time
                    self._candidate_start, self._candidate_end = start_time, end_time
                    self._move_front_to_past(start_index)
            age_check = self._scaled(end_time - self._candidate_end)
            if start_index == self._pivot:
                self._publish_candidate()  # every candidate for this pivot has been tried
            elif age_check >= self._pivot_time - self._candidate_start:
                # Any later set contains [pivot_time, end_time], already too wide: provably optimal.
                self._publish_candidate()
            elif self._num_non_empty < n:
                self._virtual_search()

    def _virtual_search(self) -> None:
        """Use the inter-message lower bounds to prove the candidate optimal before data arrives."""
        n = self.num_streams
        moves = [0] * n
        while True:
            times = self._virtual_times()
            end_index, end_time = self._boundary(times, end=True)
            start_index, start_time = self._boundary(times, end=False)
            scaled = self._scaled(end_time - self._candidate_end)
            if scaled >= self._pivot_time - self._candidate_start:
                self._publish_candidate()  # proved optimal; also undoes the virtual moves
                return
            if scaled < start_time - self._candidate_start:
                # An optimistic future candidate beats ours: cannot prove optimality yet.
                self._num_non_empty = 0
                self._recover_all(moves)
                return
            assert start_index != self._pivot and start_time < self._pivot_time
            self._move_front_to_past(start_index)
            moves[start_index] += 1


# --------------------------------------------------------------------------------------------
# ApproximateEpsilonTime
# --------------------------------------------------------------------------------------------


class ApproximateEpsilonTime(_IndexedPolicy):
    """The ROS 2 message_filters ApproximateEpsilonTime policy (`approximate_epsilon_time.hpp`).

    When every stream has a message, take the oldest head (lowest stream index on ties): if every
    other head lies within `epsilon_ns` after it (`oldest + epsilon >= head`), the heads form a set
    and are all consumed; otherwise every head within epsilon of the oldest (the oldest included)
    is discarded and the search repeats. As in ROS, a message that leaves some stream empty and
    overflows its own queue drops that queue's oldest message (a message that completes the streams
    found its queue empty, so no queue ever exceeds `queue_size`).
    """

    def __init__(self, num_streams: int, queue_size: int, epsilon_ns: int) -> None:
        super().__init__(num_streams, queue_size)
        self.epsilon_ns = _check_int("epsilon_ns", epsilon_ns, 0)
        self.overflow_drops = [0] * self.num_streams  # oldest messages trimmed from an overflowing queue
        self.discarded = [0] * self.num_streams  # heads the matcher discarded for lack of partners
        self.reset()

    def reset(self) -> None:
        """Forget every queued message (counters are kept)."""
        self._queues: list[deque[Stamped]] = [deque() for _ in range(self.num_streams)]
        self._num_non_empty = 0

    def queued(self, stream_index: int) -> int:
        """Messages held for a stream."""
        return len(self._queues[self._check_index(stream_index)])

    def add(self, stream_index: int, stamp_ns: int, payload: Any) -> list[MatchedSet]:
        """Queue one message; return the sets it released, in emission order (often none)."""
        i = self._check_index(stream_index)
        q = self._queues[i]
        if not q:
            self._num_non_empty += 1
        q.append((_check_stamp(stamp_ns), payload))
        out: list[MatchedSet] = []
        if self._num_non_empty == self.num_streams:
            self._process(out)
        elif len(q) > self.queue_size:
            self._pop(i)
            self.overflow_drops[i] += 1
        return out

    def _pop(self, i: int) -> Stamped:
        q = self._queues[i]
        msg = q.popleft()
        if not q:
            self._num_non_empty -= 1
        return msg

    def _process(self, out: list[MatchedSet]) -> None:
        while self._num_non_empty == self.num_streams:
            heads = [q[0][0] for q in self._queues]
            oldest_index, oldest = 0, heads[0]
            for k in range(1, len(heads)):
                if heads[k] < oldest:
                    oldest_index, oldest = k, heads[k]
            limit = oldest + self.epsilon_ns
            if all(k == oldest_index or h <= limit for k, h in enumerate(heads)):
                out.append(tuple(self._pop(k) for k in range(self.num_streams)))
            else:
                for k, h in enumerate(heads):
                    if h <= limit:
                        self._pop(k)
                        self.discarded[k] += 1


# --------------------------------------------------------------------------------------------
# ExactTime
# --------------------------------------------------------------------------------------------


class ExactTime(_IndexedPolicy):
    """The ROS 2 message_filters ExactTime policy (`sync_policies/exact_time.hpp`).

    Messages are grouped by identical stamp; a group is emitted as soon as every stream has a
    message at that stamp (a repeated stamp on one stream replaces the earlier message). Emitting
    a set drops every pending group at or before its stamp; when more than `queue_size` stamps are
    pending, the oldest groups are dropped (`dropped_sets` counts both, like ROS's drop callback).
    """

    def __init__(self, num_streams: int, queue_size: int) -> None:
        super().__init__(num_streams, queue_size)
        self.dropped_sets = 0
        self.reset()

    def reset(self) -> None:
        """Forget every pending stamp (counters are kept)."""
        self._groups: dict[int, list[Stamped | None]] = {}

    @property
    def pending(self) -> int:
        """Number of stamps waiting for their set to complete (at most `queue_size` after `add`)."""
        return len(self._groups)

    def add(self, stream_index: int, stamp_ns: int, payload: Any) -> list[MatchedSet]:
        """Queue one message; return the set it completed, if any."""
        i = self._check_index(stream_index)
        stamp = _check_stamp(stamp_ns)
        group = self._groups.setdefault(stamp, [None] * self.num_streams)
        group[i] = (stamp, payload)
        out: list[MatchedSet] = []
        if all(m is not None for m in group):
            out.append(tuple(group))  # type: ignore[arg-type]
            del self._groups[stamp]
            self._drop([s for s in self._groups if s <= stamp])
        if len(self._groups) > self.queue_size:
            self._drop(sorted(self._groups)[: len(self._groups) - self.queue_size])
        return out

    def _drop(self, stamps: list[int]) -> None:
        for s in stamps:
            del self._groups[s]
        self.dropped_sets += len(stamps)


# --------------------------------------------------------------------------------------------
# LatestWithin
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSet:
    """What a trigger message fused with: per other stream its message or None (missing)."""

    trigger: str
    stamp_ns: int  # the trigger message's stamp
    payload: Any  # the trigger message's payload
    messages: Mapping[str, Stamped | None]  # every non-trigger stream: (stamp_ns, payload) or None
    ages_ns: Mapping[str, int]  # stamp_ns - message stamp, for the streams present
    missing: tuple[str, ...]  # streams with nothing fresh enough, in declaration order
    stale: tuple[str, ...] = ()  # of the missing: those with a message at or before the stamp, too old

    @property
    def complete(self) -> bool:
        return not self.missing


class LatestWithin:
    """Fire on each trigger message with the latest message of every other stream within its max age.

    For each other stream the chosen message is the latest with `stamp <= trigger stamp` and
    `trigger stamp - stamp <= max_age_ns[stream]` (the boundary is fresh). Streams with nothing
    fresh are listed in `missing` and never hold the output back. Messages are not consumed: a slow
    stream (a map) serves many triggers. Each stream keeps its `history` most recent stamps in stamp
    order, so a message stamped after the trigger is kept for later triggers and one that arrives a
    little out of order still lands in place. A full buffer pushes out its oldest message; `drops()`
    counts those a later trigger could still have chosen (no trigger yet at or after the next
    message's stamp), and messages arriving older than everything in a full buffer: a count that
    grows means `history` is too short for the skew between the streams.
    """

    def __init__(
        self,
        trigger: str,
        max_age_ns: Mapping[str, int],
        history: int = 4,  # per-stream buffer: enough for a few messages of skew between streams
    ) -> None:
        if not isinstance(trigger, str) or not trigger:
            raise ConfigError(f"trigger must be a non-empty stream name, got {trigger!r}")
        if not isinstance(max_age_ns, Mapping):
            raise ConfigError(f"max_age_ns must map stream name -> nanoseconds, got {max_age_ns!r}")
        if trigger in max_age_ns:
            raise ConfigError(f"the trigger stream {trigger!r} cannot also be in max_age_ns ({dict(max_age_ns)!r})")
        for name, age in max_age_ns.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"stream names must be non-empty strings, got {name!r}")
            _check_int(f"max_age_ns[{name!r}]", age, 0)
        self.trigger = trigger
        self.max_age_ns: dict[str, int] = {name: int(age) for name, age in max_age_ns.items()}
        self.history = _check_int("history", history, 1)
        self._drops = {name: 0 for name in self.max_age_ns}
        self.reset()

    def reset(self) -> None:
        """Forget every stored message (drop counters are kept)."""
        self._buffers: dict[str, list[Stamped]] = {name: [] for name in self.max_age_ns}
        self._last_trigger: int | None = None

    def drops(self) -> dict[str, int]:
        """Per stream: messages the bounded buffer discarded while a later trigger could still choose them."""
        return dict(self._drops)

    def add(self, stream: str, stamp_ns: int, payload: Any) -> list[SyncSet]:
        """Store a message, or on a trigger message return `[SyncSet]` (never blocks on missing data)."""
        stamp = _check_stamp(stamp_ns)
        _check_stream(stream)
        if stream == self.trigger:
            return [self._fire(stamp, payload)]
        buffer = self._buffers.get(stream)
        if buffer is None:
            raise ConfigError(
                f"unknown stream {stream!r}: expected the trigger {self.trigger!r} or one of {list(self.max_age_ns)}"
            )
        insort(buffer, (stamp, payload), key=lambda m: m[0])  # after equal stamps: the later wins
        if len(buffer) > self.history:
            # Triggers come in stamp order: once one came at or after the next message's stamp, no
            # later trigger can choose the oldest (the next one is newer and still fresh enough).
            if self._last_trigger is None or buffer[1][0] > self._last_trigger:
                self._drops[stream] += 1
            del buffer[0]
        return []

    def _fire(self, stamp: int, payload: Any) -> SyncSet:
        self._last_trigger = stamp if self._last_trigger is None else max(self._last_trigger, stamp)
        messages: dict[str, Stamped | None] = {}
        ages: dict[str, int] = {}
        missing: list[str] = []
        stale: list[str] = []
        for name, buffer in self._buffers.items():
            chosen = None
            for msg in reversed(buffer):
                if msg[0] <= stamp:
                    chosen = msg if stamp - msg[0] <= self.max_age_ns[name] else None
                    if chosen is None:
                        stale.append(name)
                    break
            messages[name] = chosen
            if chosen is None:
                missing.append(name)
            else:
                ages[name] = stamp - chosen[0]
        return SyncSet(self.trigger, stamp, payload, messages, ages, tuple(missing), tuple(stale))


# --------------------------------------------------------------------------------------------
# StreamChecker
# --------------------------------------------------------------------------------------------


class Action(enum.Enum):
    """What the caller does with a message after `StreamChecker.check`."""

    ACCEPT = "accept"  # feed it to the policy
    REJECT = "reject"  # drop it (counted under its reason)
    RESET = "reset"  # clock jump: reset the policy, then feed it


class Reason(enum.Enum):
    """Why a stamp was rejected or caused a reset (also the keys of `StreamChecker.counts()`)."""

    BACKWARDS = "backwards"  # older than the stream's last accepted stamp (by <= jump threshold)
    DUPLICATE = "duplicate"  # equal to the stream's last accepted stamp
    FUTURE = "future"  # more than future_margin_ns ahead of the reference clock
    JUMP = "jump"  # clock jump: far backwards, or far ahead of every accepted stamp


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check; `feed` says whether the message may reach the policy."""

    action: Action
    reason: Reason | None = None
    detail: str = ""

    @property
    def feed(self) -> bool:
        return self.action is not Action.REJECT

    @property
    def reset(self) -> bool:
        return self.action is Action.RESET


_ACCEPT = Verdict(Action.ACCEPT)


@dataclass
class _StreamState:
    last_accepted: int | None = None
    refused_future: int | None = None  # the stream's last stamp refused as future, until one is fed
    refused_backwards: int | None = None  # its last stamp refused as a backward jump, until one is fed
    refused_backwards_clock: int | None = None  # the newest accepted stamp (any stream) when it was refused
    counts: dict[str, int] = field(default_factory=lambda: {"accepted": 0, **{r.value: 0 for r in Reason}})


#: StreamChecker's default clock-jump threshold: 1 s, above the sensor periods (raise it for a slow
#: stream alone); replay takes stamps this far apart as two clocks too.
JUMP_THRESHOLD_NS = 1_000_000_000


class StreamChecker:
    """Per-stream stamp sanity checks run before any policy (DESIGN.md §3).

    - duplicate: a stamp equal to the stream's last accepted stamp, or to its last refused one
      (the same corrupted header sent twice confirms nothing) -> reject;
    - backwards: older than the last accepted stamp -> reject. Older by more than
      `jump_threshold_ns` it may be a clock jump (a log looping, a simulator restarting): it is
      refused, and a later stamp, on any stream, that is a backward jump too and lies within
      `jump_threshold_ns` of it confirms the jump (reset). A single corrupted stamp in the past
      (a zeroed header) thus costs that message only, not every stream's history;
    - future: more than `future_margin_ns` ahead of the reference clock -> reject. The reference is
      `now_ns` when given (the receive time; pass it where there is one), else the newest stamp
      accepted on any stream, this one included. (The other streams' stamps alone are no clock:
      with radar silent and map and text at 1 Hz, a 20 Hz camera runs ahead of them by design.) A
      stamp refused as future, on any stream, confirms a later stamp that follows it within the
      margin: a sensor stamped ahead of the others, or a clock that really jumped, costs one
      message, never the whole stream; a single corrupted stamp confirms nothing;
    - forward jump: more than `jump_threshold_ns` after the newest stamp accepted on any stream
      (a stream resuming after a pause is not a jump, since the others kept the clock moving).
    On a jump the checker forgets every stream's history (counters are kept) and returns RESET: the
    caller resets its policy and then feeds the message. The margin must cover the normal skew
    between streams' stamps and arrival (e.g. a camera stamped at exposure but delivered late).
    """

    def __init__(
        self,
        future_margin_ns: int = 100_000_000,  # 100 ms: above typical sensor-to-host latency skew
        jump_threshold_ns: int = JUMP_THRESHOLD_NS,
    ) -> None:
        self.future_margin_ns = _check_int("future_margin_ns", future_margin_ns, 0)
        self.jump_threshold_ns = _check_int("jump_threshold_ns", jump_threshold_ns, 1)
        if self.jump_threshold_ns < self.future_margin_ns:  # a stamp between them would reset unconfirmed
            raise ConfigError(f"jump_threshold_ns ({jump_threshold_ns}) must be at least future_margin_ns "
                              f"({future_margin_ns}): a stamp ahead by a value between them would pass the "
                              f"future check and reset every stream without confirmation")
        self._streams: dict[Hashable, _StreamState] = {}
        self.resets = 0

    def counts(self) -> dict[Hashable, dict[str, int]]:
        """Per stream: counts of accepted stamps and of each `Reason` value."""
        return {name: dict(state.counts) for name, state in self._streams.items()}

    def forget(self) -> None:
        """Forget every stream's last stamps (counters are kept); done automatically on a jump."""
        for state in self._streams.values():
            state.last_accepted = state.refused_future = state.refused_backwards = None
            state.refused_backwards_clock = None

    def check(self, stream: Hashable, stamp_ns: int, now_ns: int | None = None) -> Verdict:
        """Classify one stamp; counts it, and records it as the stream's latest when fed."""
        stamp = _check_stamp(stamp_ns)
        _check_stream(stream)
        if now_ns is not None:
            now_ns = _check_stamp(now_ns)
        state = self._streams.setdefault(stream, _StreamState())
        verdict = self._classify(state, stamp, now_ns)
        if verdict.reason is not None:
            state.counts[verdict.reason.value] += 1
        if verdict.reason is Reason.FUTURE:
            state.refused_future = stamp
        elif verdict.reason is Reason.BACKWARDS and state.last_accepted is not None \
                and state.last_accepted - stamp > self.jump_threshold_ns:
            state.refused_backwards, state.refused_backwards_clock = stamp, self._newest_accepted()
        elif verdict.feed:
            state.refused_future = state.refused_backwards = None
        if verdict.reset:
            self.resets += 1
            self.forget()
        if verdict.feed:
            state.last_accepted = stamp
            state.counts["accepted"] += 1
        return verdict

    def _newest_accepted(self) -> int | None:
        """The newest stamp accepted on any stream (None before any)."""
        return max((s.last_accepted for s in self._streams.values() if s.last_accepted is not None), default=None)

    def _reference(self, stamp: int, now_ns: int | None, newest: int | None) -> int | None:
        if now_ns is not None:
            return now_ns
        # A refusal confirms a stamp that follows it (the stream's own refused stamp repeated is a
        # duplicate, refused before this: the same bad stamp twice is no evidence the clock moved).
        confirming = [s.refused_future for s in self._streams.values()
                      if s.refused_future is not None and 0 <= stamp - s.refused_future <= self.future_margin_ns]
        if newest is not None and confirming:
            return max(newest, *confirming)
        return newest

    def _classify(self, state: _StreamState, stamp: int, now_ns: int | None) -> Verdict:
        newest = self._newest_accepted()
        if stamp in (state.refused_future, state.refused_backwards):
            return Verdict(Action.REJECT, Reason.DUPLICATE, f"stamp {stamp} repeated (refused before)")
        reference = self._reference(stamp, now_ns, newest)
        if reference is not None and stamp - reference > self.future_margin_ns:
            return Verdict(Action.REJECT, Reason.FUTURE, f"{stamp - reference} ns ahead of the reference clock")
        last = state.last_accepted
        if last is not None:
            if stamp == last:
                return Verdict(Action.REJECT, Reason.DUPLICATE, f"stamp {stamp} repeated")
            if stamp < last:
                if last - stamp > self.jump_threshold_ns:
                    # A refusal confirms only while the clock has not moved on since (within the jump
                    # threshold): two unrelated corrupted stamps a minute apart confirm nothing; on
                    # its own stream only a later stamp confirms it (see `_reference`).
                    window = self.jump_threshold_ns
                    if any(s.refused_backwards is not None and newest - s.refused_backwards_clock <= window
                           and (0 < stamp - s.refused_backwards <= window if s is state
                                else abs(stamp - s.refused_backwards) <= window)
                           for s in self._streams.values()):
                        return Verdict(Action.RESET, Reason.JUMP, f"{last - stamp} ns backwards, confirmed")
                    return Verdict(Action.REJECT, Reason.BACKWARDS,
                                   f"{last - stamp} ns backwards (a clock jump if the next stamp confirms it)")
                return Verdict(Action.REJECT, Reason.BACKWARDS, f"{last - stamp} ns backwards")
        if newest is not None and stamp - newest > self.jump_threshold_ns:
            return Verdict(Action.RESET, Reason.JUMP, f"{stamp - newest} ns after every accepted stamp")
        return _ACCEPT
