"""Synchronization policies: ROS message_filters expectations, shuffled arrivals, generated streams."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusion_rt.errors import ConfigError
from fusion_rt.sync import (
    Action,
    ApproximateEpsilonTime,
    ApproximateTime,
    ExactTime,
    LatestWithin,
    Reason,
    StreamChecker,
    SyncSet,
)

S = 1_000_000_000  # the ROS tests count in whole seconds
MS = 1_000_000

_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(policy, arrivals):
    """Feed `(stream, stamp_ns)` pairs; return `(arrival_index, stamps)` for every emitted set.

    Each payload is `(stream, stamp_ns)`, so a set can be checked against where its parts came from.
    """
    emitted = []
    for k, (stream, stamp) in enumerate(arrivals):
        for matched in policy.add(stream, stamp, (stream, stamp)):
            for i, (m_stamp, payload) in enumerate(matched):
                assert payload == (i, m_stamp)
            emitted.append((k, tuple(m[0] for m in matched)))
    return emitted


def stamps_of(emitted):
    return [s for _, s in emitted]


def secs(arrivals):
    """The ROS tests' (time in s, topic) pairs as (stream, stamp_ns)."""
    return [(topic, t * S) for t, topic in arrivals]


def sets_s(*sets):
    return [tuple(t * S for t in s) for s in sets]


# --------------------------------------------------------------------------------------------
# ApproximateTime: the cases of message_filters' test/test_approximate_time_policy.cpp
# --------------------------------------------------------------------------------------------

DROPPED = [(0, 0), (1, 1), (3, 1), (4, 0), (7, 1), (8, 0), (10, 0), (11, 1), (13, 0), (14, 1)]
LONG_QUEUE = [(t, 0) for t in range(9)] + [(3, 1), (9, 0), (10, 0), (11, 0), (12, 0), (10, 1), (13, 0)]
FOUR_TOPICS = [(0, 0), (1, 1), (2, 2), (3, 3), (5, 0), (5, 3), (6, 1), (6, 2), (8, 0), (9, 1), (10, 2),
               (11, 3), (10, 0), (13, 0), (14, 1)]
RATE = [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)]

ROS_CASES = {
    # name: (num_streams, queue_size, lower bounds in s or None, input (t, topic), expected sets)
    "ExactMatch": (2, 10, None, [(0, 0), (0, 1), (3, 0), (3, 1), (6, 0), (6, 1)], [(0, 0), (3, 3), (6, 6)]),
    "PerfectMatch": (2, 10, None, RATE, [(0, 1), (3, 4)]),
    "ImperfectMatch": (2, 10, None, [(0, 0), (1, 1), (2, 0), (3, 0), (5, 1), (6, 0), (7, 1)], [(0, 1), (6, 5)]),
    "Acceleration": (2, 10, None, [(0, 0), (7, 1), (12, 0), (15, 1), (17, 0), (18, 1)], [(12, 7), (17, 18)]),
    "DroppedMessages/queue1": (2, 1, None, DROPPED, [(4, 3), (10, 11)]),
    "DroppedMessages/queue2": (2, 2, None, DROPPED, [(0, 1), (4, 3), (8, 7), (10, 11)]),
    "LongQueue": (2, 5, None, LONG_QUEUE, [(10, 10)]),
    "DoublePublish": (2, 10, None, [(0, 0), (1, 1), (3, 1), (3, 0)], [(0, 1), (3, 3)]),
    "FourTopics": (4, 10, None, FOUR_TOPICS, [(0, 1, 2, 3), (5, 6, 6, 5), (10, 9, 10, 11)]),
    "EarlyPublish": (4, 10, None, [(0, 0), (1, 1), (2, 2), (3, 3), (7, 0)], [(0, 1, 2, 3)]),
    "RateBound/1.5": (2, 10, (1.5, 0), RATE, [(0, 1), (3, 4)]),
    "RateBound/2": (2, 10, (2, 0), RATE, [(0, 1), (3, 4), (6, 7)]),
    "RateBoundAll/none": (2, 10, None, RATE, [(0, 1), (3, 4)]),  # ROS 1 suite
    "RateBoundAll/2": (2, 10, (2, 2), RATE, [(0, 1), (3, 4), (6, 7)]),
}


@pytest.mark.parametrize("name", list(ROS_CASES))
def test_approximate_time_matches_ros_suite(name):
    n, queue_size, bounds, arrivals, expected = ROS_CASES[name]
    lower = None if bounds is None else [int(b * S) for b in bounds]
    policy = ApproximateTime(n, queue_size, inter_message_lower_bound_ns=lower)
    assert stamps_of(feed(policy, secs(arrivals))) == sets_s(*expected)


def test_approximate_time_emission_moments():
    # DoublePublish: both sets leave on the last message (b), in order; EarlyPublish: e proves a..d
    # optimal although streams 1-3 have nothing newer; RateBound 2: a set is released on the very
    # message that completes it, since A's bound proves nothing better can come.
    emitted = feed(ApproximateTime(2, 10), secs([(0, 0), (1, 1), (3, 1), (3, 0)]))
    assert emitted == [(3, (0, S)), (3, (3 * S, 3 * S))]
    emitted = feed(ApproximateTime(4, 10), secs([(0, 0), (1, 1), (2, 2), (3, 3), (7, 0)]))
    assert emitted == [(4, (0, S, 2 * S, 3 * S))]
    emitted = feed(ApproximateTime(2, 10, inter_message_lower_bound_ns=[2 * S, 0]), secs(RATE))
    assert [k for k, _ in emitted] == [1, 3, 5]


def test_approximate_time_nine_streams():
    # message_filters' upper limit: nine topics, jittered around a common 100 ms clock.
    rng = random.Random(9)
    arrivals = [(s, k * 100 * MS + rng.randint(-5, 5) * MS) for k in range(6) for s in range(9)]
    sets = stamps_of(feed(ApproximateTime(9, 10), arrivals))
    assert len(sets) == 5  # the last set waits for proof it is optimal
    for k, stamps in enumerate(sets):
        assert all(abs(t - k * 100 * MS) <= 5 * MS for t in stamps)


def test_age_penalty_prefers_older_sets():
    # a=0, A=4, b=5: (b, A) is tighter (1 s vs 4 s) but newer. Replacing (a, A) requires
    # (5-4)(1+p) < 4-0, which holds for p=0 and fails for p=3.
    arrivals = secs([(0, 0), (4, 1), (5, 0)])
    assert stamps_of(feed(ApproximateTime(2, 10, age_penalty=0.0), arrivals)) == sets_s((5, 4))
    assert stamps_of(feed(ApproximateTime(2, 10, age_penalty=3.0), arrivals)) == sets_s((0, 4))


def test_max_interval_discards_wide_sets():
    arrivals = secs([(0, 0), (5, 1), (10, 0), (11, 1), (12, 0)])
    # Unbounded, (0, 5) is the best set and goes out once b=10 arrives.
    assert feed(ApproximateTime(2, 10), arrivals)[0] == (2, (0, 5 * S))
    # With 2 s, 0 and 5 can never pair; (10, 11) goes out once 12 proves it.
    assert feed(ApproximateTime(2, 10, max_interval_ns=2 * S), arrivals) == [(4, (10 * S, 11 * S))]


def test_queue_overflow_drops_oldest_and_counts():
    policy = ApproximateTime(2, 2)
    for t in range(5):
        assert policy.add(0, t * S, None) == []
        assert policy.queued(0) <= 2
    assert policy.overflow_drops == [3, 0]
    assert policy.num_non_empty_deques == 1
    sets = policy.add(1, 4 * S, None) + policy.add(1, 5 * S, None) + policy.add(0, 6 * S, None)
    assert [tuple(m[0] for m in s) for s in sets][0] == (4 * S, 4 * S)


def test_reset_forgets_queued_messages():
    policy = ApproximateTime(2, 10)
    policy.add(0, 0, "old")
    policy.reset()
    assert policy.num_non_empty_deques == 0
    out = policy.add(1, 0, "A") + policy.add(0, 0, "a")
    assert out == [((0, "a"), (0, "A"))]


def test_out_of_order_stream_is_warned_once():
    policy = ApproximateTime(2, 10, inter_message_lower_bound_ns=[5, 0])
    policy.add(0, 10, None)
    policy.add(0, 12, None)  # closer than its 5 ns bound
    assert policy.warned_streams == (True, False)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_streams": 1, "queue_size": 5}, "num_streams"),
        ({"num_streams": 2, "queue_size": 0}, "queue_size"),
        ({"num_streams": 2, "queue_size": 5, "age_penalty": -0.1}, "age_penalty"),
        ({"num_streams": 2, "queue_size": 5, "age_penalty": float("nan")}, "age_penalty"),
        ({"num_streams": 2, "queue_size": 5, "max_interval_ns": -1}, "max_interval_ns"),
        ({"num_streams": 2, "queue_size": 5, "max_interval_ns": 0.5}, "max_interval_ns"),
        ({"num_streams": 2, "queue_size": 5, "inter_message_lower_bound_ns": [0]}, "one value per stream"),
        ({"num_streams": 2, "queue_size": 5, "inter_message_lower_bound_ns": [0, -3]}, "[1]"),
    ],
)
def test_approximate_time_validates_arguments(kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        ApproximateTime(**kwargs)


@pytest.mark.parametrize("policy", [ApproximateTime(2, 5), ApproximateEpsilonTime(2, 5, 10), ExactTime(2, 5)])
def test_indexed_policies_validate_stream_and_stamp(policy):
    for bad in (2, -1, "0", True):
        with pytest.raises(ConfigError, match="stream_index"):
            policy.add(bad, 0, None)
    with pytest.raises(ConfigError, match="integer nanoseconds"):
        policy.add(0, 1.5, None)


# -- shuffled arrivals and generated streams -----------------------------------------------------


def interleave(rng: random.Random, streams: list[list[int]]) -> list[tuple[int, int]]:
    """A random interleaving of the streams that keeps each stream's own order (as ROS assumes)."""
    pending = [list(reversed(s)) for s in streams]
    out = []
    while any(pending):
        i = rng.choice([k for k, p in enumerate(pending) if p])
        out.append((i, pending[i].pop()))
    return out


def random_streams(rng: random.Random, n: int, length: int) -> list[list[int]]:
    streams = []
    for _ in range(n):
        t = rng.randint(0, 30 * MS)
        stamps = []
        for _ in range(length):
            stamps.append(t)
            t += rng.randint(1, 40) * MS
        streams.append(stamps)
    return streams


def min_gaps(streams: list[list[int]]) -> list[int]:
    """Each stream's smallest inter-message gap: a true inter-message lower bound for it."""
    return [min((s[k + 1] - s[k] for k in range(len(s) - 1)), default=0) for s in streams]


def test_sets_depend_on_stamps_not_on_interleaving():
    # With a queue that never overflows, the sets are a function of the stamps alone; only how far
    # the output has got when the input ends may differ (a last set proven by one interleaving).
    rng = random.Random(1234)
    for _ in range(60):
        n = rng.randint(2, 4)
        streams = random_streams(rng, n, rng.randint(3, 15))
        reference = stamps_of(feed(ApproximateTime(n, 1000), interleave(rng, streams)))
        for _ in range(3):
            other = stamps_of(feed(ApproximateTime(n, 1000), interleave(rng, streams)))
            k = min(len(reference), len(other))
            assert other[:k] == reference[:k]
            assert abs(len(other) - len(reference)) <= 1


def test_lower_bounds_only_release_sets_earlier():
    # True bounds let the policy prove optimality sooner; they never change which sets it picks.
    rng = random.Random(99)
    for _ in range(60):
        n = rng.randint(2, 4)
        streams = random_streams(rng, n, rng.randint(2, 12))
        bounds = min_gaps(streams)
        arrivals = interleave(rng, streams)
        plain = feed(ApproximateTime(n, 1000), arrivals)
        bounded = feed(ApproximateTime(n, 1000, inter_message_lower_bound_ns=bounds), arrivals)
        assert stamps_of(bounded)[: len(plain)] == stamps_of(plain)
        for (k_bounded, _), (k_plain, _) in zip(bounded, plain, strict=False):
            assert k_bounded <= k_plain


@st.composite
def stream_arrivals(draw, max_streams=4, max_len=12):
    """Per-stream strictly increasing stamps, interleaved arbitrarily across streams."""
    n = draw(st.integers(2, max_streams))
    streams = []
    for _ in range(n):
        start = draw(st.integers(0, 50))
        gaps = draw(st.lists(st.integers(1, 40), max_size=max_len - 1))
        stamps = [start]
        for g in gaps:
            stamps.append(stamps[-1] + g)
        streams.append(stamps)
    order = draw(st.randoms(use_true_random=False))
    return n, streams, interleave(order, streams)


def check_emitted(policy, n, arrivals, queued, queue_bound):
    """Invariants every policy keeps: bounded queues, one message per stream, ordered, never twice."""
    sets = []
    for stream, stamp in arrivals:
        for matched in policy.add(stream, stamp, (stream, stamp)):
            assert len(matched) == n
            assert all(payload == (i, t) for i, (t, payload) in enumerate(matched))
            sets.append(tuple(t for t, _ in matched))
        assert all(queued(policy, i) <= queue_bound for i in range(n))
    for i in range(n):
        column = [s[i] for s in sets]
        assert column == sorted(set(column)), "a stream's stamps must strictly increase across sets"
    return sets


@_SETTINGS
@given(
    stream_arrivals(),
    st.integers(1, 6),
    st.sampled_from([0.0, 0.1, 0.5, 2.0]),
    st.one_of(st.none(), st.integers(0, 60)),
    st.booleans(),
)
def test_approximate_time_invariants(data, queue_size, age_penalty, max_interval, use_bounds):
    n, streams, arrivals = data
    bounds = min_gaps(streams) if use_bounds else None
    policy = ApproximateTime(n, queue_size, age_penalty, max_interval, bounds)
    sets = check_emitted(policy, n, arrivals, ApproximateTime.queued, queue_size)
    if max_interval is not None:
        assert all(max(s) - min(s) <= max_interval for s in sets)


# --------------------------------------------------------------------------------------------
# ApproximateEpsilonTime: test/test_approximate_epsilon_time_policy.cpp
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon_s", "arrivals", "expected"),
    [
        (0.5, [(0, 0), (0, 1), (3, 0), (3, 1), (6, 0), (6, 1)], [(0, 0), (3, 3), (6, 6)]),  # ExactMatch
        (1.5, RATE, [(0, 1), (3, 4), (6, 7)]),  # PerfectMatch
        (1.5, [(0, 0), (1, 1), (2, 0), (3, 0), (4, 1), (6, 0), (7, 1)], [(0, 1), (3, 4), (6, 7)]),  # Imperfect
    ],
    ids=["ExactMatch", "PerfectMatch", "ImperfectMatch"],
)
def test_epsilon_time_matches_ros_suite(epsilon_s, arrivals, expected):
    policy = ApproximateEpsilonTime(2, 10, int(epsilon_s * S))
    assert stamps_of(feed(policy, secs(arrivals))) == sets_s(*expected)


def test_epsilon_time_discards_heads_without_partners():
    policy = ApproximateEpsilonTime(2, 10, 1 * S)
    # a=0 has no partner within 1 s of it (B=5): a is discarded, B waits for c=5.
    assert feed(policy, secs([(0, 0), (5, 1), (5, 0)])) == [(2, (5 * S, 5 * S))]
    assert policy.discarded == [1, 0]


@_SETTINGS
@given(stream_arrivals(), st.integers(1, 6), st.integers(0, 30))
def test_epsilon_time_invariants(data, queue_size, epsilon):
    n, streams, arrivals = data
    policy = ApproximateEpsilonTime(n, queue_size, epsilon)
    sets = check_emitted(policy, n, arrivals, ApproximateEpsilonTime.queued, queue_size)
    assert all(max(s) - min(s) <= epsilon for s in sets)


# --------------------------------------------------------------------------------------------
# ExactTime: test/test_exact_time_policy.cpp
# --------------------------------------------------------------------------------------------


def test_exact_time_multiple_times():
    policy = ExactTime(3, 2)
    assert policy.add(0, 0, "a") == []
    assert policy.add(1, 100 * MS, "b") == []
    assert policy.add(0, 100 * MS, "c") == []
    assert policy.add(2, 100 * MS, "d") == [((100 * MS, "c"), (100 * MS, "b"), (100 * MS, "d"))]
    assert policy.pending == 0 and policy.dropped_sets == 1  # emitting at 100 ms drops the group at 0


def test_exact_time_queue_size():
    policy = ExactTime(3, 1)
    assert policy.add(0, 0, None) == [] and policy.add(1, 0, None) == []
    assert policy.add(1, 100 * MS, None) == []  # two stamps pending: the one at 0 is dropped
    assert policy.add(1, 0, None) == [] and policy.add(2, 0, None) == []  # 0 restarted, incomplete
    assert policy.pending == 1


def test_exact_time_drop_count():
    policy = ExactTime(2, 1)
    policy.add(0, 0, None)
    assert policy.dropped_sets == 0
    policy.add(0, 100 * MS, None)
    assert policy.dropped_sets == 1


@_SETTINGS
@given(stream_arrivals(), st.integers(1, 6))
def test_exact_time_invariants(data, queue_size):
    n, streams, arrivals = data
    policy = ExactTime(n, queue_size)
    sets = check_emitted(policy, n, arrivals, lambda p, i: p.pending, queue_size)
    assert all(len(set(s)) == 1 for s in sets)


def test_exact_time_shuffled_common_clock():
    # Every stream carries the same stamps: with a queue wide enough for the skew, every stamp
    # becomes exactly one set, in stamp order, whatever the interleaving.
    rng = random.Random(5)
    stamps = [k * 50 * MS for k in range(20)]
    for _ in range(10):
        arrivals = interleave(rng, [stamps] * 3)
        assert stamps_of(feed(ExactTime(3, 30), arrivals)) == [(t, t, t) for t in stamps]


# --------------------------------------------------------------------------------------------
# LatestWithin
# --------------------------------------------------------------------------------------------


def test_latest_within_reports_missing_and_never_blocks():
    sync = LatestWithin("camera", max_age_ns={"radar": 100 * MS, "map": 2 * S})
    (first,) = sync.add("camera", 0, "frame0")  # nothing else yet: fires anyway
    assert isinstance(first, SyncSet)
    assert first.missing == ("radar", "map") and first.messages == {"radar": None, "map": None}
    assert not first.complete
    assert sync.add("radar", 10 * MS, "r1") == []
    assert sync.add("map", 0, "m0") == []
    (second,) = sync.add("camera", 50 * MS, "frame1")
    assert second.complete and second.payload == "frame1" and second.stamp_ns == 50 * MS
    assert second.messages == {"radar": (10 * MS, "r1"), "map": (0, "m0")}
    assert second.ages_ns == {"radar": 40 * MS, "map": 50 * MS}


def test_latest_within_age_limit_is_inclusive():
    sync = LatestWithin("camera", max_age_ns={"radar": 100 * MS})
    sync.add("radar", 0, "r")
    (at_limit,) = sync.add("camera", 100 * MS, "f")
    assert at_limit.messages["radar"] == (0, "r") and at_limit.ages_ns == {"radar": 100 * MS}
    (past_limit,) = sync.add("camera", 100 * MS + 1, "f")
    assert past_limit.missing == ("radar",) and past_limit.ages_ns == {}


def test_latest_within_keeps_later_messages_for_later_triggers():
    sync = LatestWithin("camera", max_age_ns={"radar": 100 * MS}, history=4)
    sync.add("radar", 30 * MS, "r30")
    sync.add("radar", 70 * MS, "r70")  # newer than the next trigger
    (s1,) = sync.add("camera", 50 * MS, "f50")
    assert s1.messages["radar"] == (30 * MS, "r30")
    sync.add("radar", 60 * MS, "r60")  # a little out of order: lands between 30 and 70
    (s2,) = sync.add("camera", 65 * MS, "f65")
    assert s2.messages["radar"] == (60 * MS, "r60")
    (s3,) = sync.add("camera", 80 * MS, "f80")
    assert s3.messages["radar"] == (70 * MS, "r70")
    (s4,) = sync.add("camera", 90 * MS, "f90")  # messages are reused, not consumed
    assert s4.messages["radar"] == (70 * MS, "r70")


def test_latest_within_bounded_buffer_counts_drops():
    sync = LatestWithin("camera", max_age_ns={"imu": S}, history=3)
    for t in range(5):
        sync.add("imu", t * MS, t)
    assert sync.drops() == {"imu": 2}
    sync.add("imu", 0, "too late")  # older than everything kept: dropped on arrival
    assert sync.drops() == {"imu": 3}
    (s,) = sync.add("camera", 10 * MS, None)
    assert s.messages["imu"] == (4 * MS, 4)
    sync.reset()
    assert sync.add("camera", 10 * MS, None)[0].missing == ("imu",)
    # once a trigger came at or after the next message's stamp, the oldest is dead: not counted
    for t in range(5):
        sync.add("imu", (20 + t) * MS, t)
    assert sync.drops() == {"imu": 5}  # before any trigger at or after them: each could be needed
    sync.add("camera", 23 * MS, None)
    sync.add("imu", 25 * MS, 5)  # pushes out 22 ms: 23 ms (next) is not after the trigger -> dead
    assert sync.drops() == {"imu": 5}
    sync.add("imu", 26 * MS, 6)  # pushes out 23 ms: 24 ms, after the trigger, could still be needed -> counted
    assert sync.drops() == {"imu": 6}


def test_latest_within_validates():
    with pytest.raises(ConfigError, match="trigger"):
        LatestWithin("camera", max_age_ns={"camera": 1})
    with pytest.raises(ConfigError, match="radar"):
        LatestWithin("camera", max_age_ns={"radar": -1})
    with pytest.raises(ConfigError, match="history"):
        LatestWithin("camera", max_age_ns={"radar": 1}, history=0)
    sync = LatestWithin("camera", max_age_ns={"radar": 1})
    with pytest.raises(ConfigError, match="lidar"):
        sync.add("lidar", 0, None)
    with pytest.raises(ConfigError, match="integer nanoseconds"):
        sync.add("camera", 0.5, None)


def test_latest_within_shuffled_small_skew_matches_brute_force():
    # Radar at 50 ms and map at 1 s arrive up to 2 messages late; every output must be the
    # freshest message that had arrived, within its age limit, exactly as a full search finds it.
    rng = random.Random(2024)
    max_age = {"radar": 80 * MS, "map": 1500 * MS}
    sync = LatestWithin("camera", max_age_ns=max_age, history=6)
    events = [(k * 33 * MS, "camera") for k in range(90)]
    events += [(k * 50 * MS + 3 * MS, "radar") for k in range(60)]
    events += [(k * S + 7 * MS, "map") for k in range(3)]
    events.sort()
    for k in range(len(events) - 2):  # local jitter: swap neighbours now and then
        if rng.random() < 0.3:
            events[k], events[k + 2] = events[k + 2], events[k]
    arrived: dict[str, list[int]] = {"radar": [], "map": []}
    for stamp, stream in events:
        if stream != "camera":
            assert sync.add(stream, stamp, stamp) == []
            arrived[stream].append(stamp)
            continue
        (out,) = sync.add("camera", stamp, stamp)
        for name, stamps in arrived.items():
            older = [t for t in stamps if t <= stamp]
            best = max(older) if older and stamp - max(older) <= max_age[name] else None
            assert out.messages[name] == (None if best is None else (best, best))
            assert (name in out.missing) == (best is None)
    # the bounded buffer pushed old radar out, but none a later camera frame could have chosen
    assert len(sync._buffers["radar"]) == 6 and sync.drops() == {"radar": 0, "map": 0}


# --------------------------------------------------------------------------------------------
# StreamChecker
# --------------------------------------------------------------------------------------------


def test_checker_rejects_backwards_and_duplicate_stamps():
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    assert checker.check("cam", 0).action is Action.ACCEPT
    assert checker.check("cam", 50 * MS).feed
    dup = checker.check("cam", 50 * MS)
    assert dup.action is Action.REJECT and dup.reason is Reason.DUPLICATE and not dup.feed
    back = checker.check("cam", 40 * MS)
    assert back.action is Action.REJECT and back.reason is Reason.BACKWARDS
    assert checker.check("cam", 60 * MS).action is Action.ACCEPT  # compared to 50 ms, not 40 ms
    assert checker.counts()["cam"] == {"accepted": 3, "backwards": 1, "duplicate": 1, "future": 0, "jump": 0}


def test_checker_future_margin_against_now_and_other_streams():
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=10 * S)
    assert checker.check("cam", 1 * S + 100 * MS, now_ns=1 * S).action is Action.ACCEPT  # at the margin
    fut = checker.check("cam", 1 * S + 200 * MS + 1, now_ns=1 * S + 100 * MS)
    assert fut.action is Action.REJECT and fut.reason is Reason.FUTURE
    # Without a clock, the reference is the newest stamp accepted on any stream (cam's 1.1 s).
    assert checker.check("radar", 1 * S).action is Action.ACCEPT
    assert checker.check("radar", 1 * S + 150 * MS).action is Action.ACCEPT
    assert checker.check("map", 1 * S + 400 * MS).reason is Reason.FUTURE  # 250 ms past radar's 1.15 s
    assert checker.counts()["cam"]["future"] == 1 and checker.counts()["map"]["future"] == 1


def test_checker_backward_jump_resets_and_rejects_stale_in_flight_stamps():
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    policy = ApproximateTime(2, 10)
    for t in (100 * S, 100 * S + 50 * MS):
        for stream in (0, 1):
            assert checker.check(stream, t).action is Action.ACCEPT
            policy.add(stream, t, None)
    # The log looped: its first stamp alone could be a corrupted one, so it is refused...
    first = checker.check(0, 2 * S)
    assert first.reason is Reason.BACKWARDS and not first.feed and checker.resets == 0
    # ...and the next stamp on the new clock confirms the jump: reset, and it is fed.
    jump = checker.check(0, 2 * S + 50 * MS)
    assert jump.action is Action.RESET and jump.reason is Reason.JUMP and jump.feed
    policy.reset()
    policy.add(0, 2 * S + 50 * MS, None)
    # Stream 1 still has an old-clock message in flight: it is far ahead of the new clock.
    assert checker.check(1, 100 * S + 100 * MS).reason is Reason.FUTURE
    assert checker.check(1, 2 * S + 50 * MS).action is Action.ACCEPT
    assert [tuple(t for t, _ in s) for s in policy.add(1, 2 * S + 50 * MS, None)] == [(2 * S + 50 * MS,) * 2]
    assert checker.resets == 1 and checker.counts()[0]["jump"] == 1


def test_checker_one_corrupted_past_stamp_costs_one_message():
    """A zeroed stamp on one stream is refused; nothing is forgotten and every other message goes on."""
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    for k in range(20):
        assert checker.check("cam", 100 * S + k * 50 * MS).feed
        assert checker.check("radar", 100 * S + k * 50 * MS + 10 * MS).feed
    assert checker.check("radar", 0).reason is Reason.BACKWARDS
    assert all(checker.check(s, 101 * S + k * 50 * MS + (10 * MS if s == "radar" else 0)).feed
               for k in range(5) for s in ("cam", "radar"))
    assert checker.resets == 0
    assert checker.counts()["radar"]["backwards"] == 1 and checker.counts()["cam"]["backwards"] == 0
    # a refusal expires once the clock moves on: a second zeroed stamp a minute later confirms nothing
    assert all(checker.check(s, 101 * S + k * 50 * MS + (10 * MS if s == "radar" else 0)).feed
               for k in range(5, 1205) for s in ("cam", "radar") if s == "cam" or k < 6)
    assert checker.check("cam", 0).reason is Reason.BACKWARDS and checker.resets == 0
    # a jump back confirmed by the other stream resets once
    assert checker.check("cam", 5 * S).reason is Reason.BACKWARDS
    assert checker.check("radar", 5 * S + 10 * MS).action is Action.RESET
    assert checker.check("cam", 5 * S + 50 * MS).feed and checker.resets == 1


def test_checker_forward_jump_confirmed_by_a_second_stream():
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    checker.check("a", 0)
    checker.check("b", 10 * MS)
    # One stream leaps 60 s ahead: alone it is just a future stamp...
    assert checker.check("a", 60 * S).reason is Reason.FUTURE
    # ...but when another stream agrees, the clock jumped: reset, and both proceed.
    assert checker.check("b", 60 * S + 10 * MS).action is Action.RESET
    assert checker.check("a", 60 * S + 20 * MS).action is Action.ACCEPT


def test_checker_paused_stream_is_not_a_jump():
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    checker.check("radar", 0)
    # Radar falls silent for 5 s while the camera keeps the clock moving: the camera's own accepted
    # stamps are the clock, so nothing is rejected, with or without `now_ns`.
    verdicts = [checker.check("cam", k * 50 * MS) for k in range(1, 100)]
    assert all(v.feed for v in verdicts)
    assert checker.check("radar", 99 * 50 * MS).action is Action.ACCEPT  # back, and not a jump
    assert checker.resets == 0

    with_clock = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    with_clock.check("radar", 0, now_ns=0)
    assert all(with_clock.check("cam", k * 50 * MS, now_ns=k * 50 * MS).feed for k in range(1, 100))
    assert with_clock.check("radar", 99 * 50 * MS, now_ns=99 * 50 * MS).action is Action.ACCEPT


def test_checker_multi_rate_streams_and_a_stream_stamped_ahead():
    """A 20 Hz camera with 1 Hz map is not 'in the future'; a stream stamped 300 ms ahead loses one message."""
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    checker.check("map", 0)
    assert all(checker.check("cam", k * 50 * MS).feed for k in range(1, 40))  # 2 s with no other stream
    assert checker.check("map", 1 * S).feed
    # Radar's clock runs 300 ms ahead of the camera's: its first stamp is refused, the next one,
    # following it within the margin, confirms it, and the stream goes on.
    first = checker.check("radar", 2 * S + 300 * MS)
    assert first.reason is Reason.FUTURE
    assert checker.check("radar", 2 * S + 350 * MS).feed
    assert checker.check("cam", 2 * S).feed  # behind radar, but the camera's own clock: accepted
    assert checker.counts()["radar"] == {"accepted": 1, "backwards": 0, "duplicate": 0, "future": 1, "jump": 0}
    # One corrupted stamp an hour ahead confirms nothing: the next normal stamp is fine.
    assert checker.check("cam", 3600 * S).reason is Reason.FUTURE
    assert checker.check("cam", 2 * S + 50 * MS).feed
    assert checker.resets == 0


@pytest.mark.parametrize("bad", [0, 3600 * S], ids=["zeroed", "an_hour_ahead"])
def test_checker_the_same_bad_stamp_twice_confirms_nothing(bad):
    """A corrupted header sent twice is a duplicate, not evidence of a clock jump: no reset, each
    copy costs only itself; a real jump (a later stamp on the same stream) still confirms."""
    checker = StreamChecker(future_margin_ns=100 * MS, jump_threshold_ns=S)
    for k in range(1, 40):
        assert checker.check("cam", 100 * S + k * 50 * MS).feed
        assert checker.check("radar", 100 * S + k * 50 * MS + 5 * MS).feed
    first, second = checker.check("radar", bad), checker.check("radar", bad)
    assert first.reason in (Reason.BACKWARDS, Reason.FUTURE) and second.reason is Reason.DUPLICATE
    assert not second.feed and checker.resets == 0
    assert checker.check("cam", 102 * S).feed and checker.check("radar", 102 * S + 5 * MS).feed
    # the same stream moving on from its refused stamp is a jump it confirms
    assert checker.check("radar", bad).reason is first.reason  # refused afresh after a fed stamp
    assert checker.check("radar", bad + 50 * MS).action is Action.RESET and checker.resets == 1


def test_checker_validates():
    with pytest.raises(ConfigError, match=r"hashable.*\['radar'\]"):
        StreamChecker().check(["radar"], 1)
    with pytest.raises(ConfigError, match="future_margin_ns"):
        StreamChecker(future_margin_ns=-1)
    with pytest.raises(ConfigError, match="jump_threshold_ns"):
        StreamChecker(jump_threshold_ns=0)
    with pytest.raises(ConfigError, match=r"jump_threshold_ns \(200000000\) must be at least future_margin_ns"):
        StreamChecker(future_margin_ns=500 * MS, jump_threshold_ns=200 * MS)
    with pytest.raises(ConfigError, match="integer nanoseconds"):
        StreamChecker().check("cam", 1.0)
