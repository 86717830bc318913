"""R1 corrupted camera frames and R2 bad radar values (issue #8): never a crash, every bad input
rejected or masked with its reason, every message accounted for, every output finite."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusion_rt.logs import LogReader, LogWriter
from fusion_rt.messages import CameraFrame, RadarTensor
from fusion_rt.runtime import OUTCOMES, FusionRuntime

from ..test_logs_reader import _chunks
from ..test_runtime import _assert_counts_add_up, _assert_finite, _jpeg, _radar

MS = 1_000_000
CAMERA_KINDS = ("truncated", "bitflip", "zero_tailed", "wrong_size", "wrong_encoding")
# What each kind of damage must end as; a bit flip inside the entropy-coded data often still
# decodes (to a slightly different image): any outcome but a crash.
CAMERA_EXPECTED = {"truncated": {"truncated", "corrupt"}, "zero_tailed": {"truncated"},
                   "wrong_size": {"wrong_size"}, "wrong_encoding": {"wrong_encoding"}}


def _push_one(rt: FusionRuntime, message) -> tuple[str, set[str], list]:
    """Push one message; (its outcome, the reasons counted for it, the outputs it produced)."""
    before = rt.stats()["messages"][message.modality]
    outputs = rt.push(message)
    after = rt.stats()["messages"][message.modality]
    (outcome,) = [o for o in OUTCOMES if after[o] == before[o] + 1]
    reasons = set()
    if outcome != "ok":
        reasons = {r for r, n in after["reasons"][outcome].items() if n != before["reasons"][outcome].get(r, 0)}
    return outcome, reasons, outputs


def _damaged_frame(kind: str, stamp: int, rng: np.random.Generator) -> CameraFrame:
    good = _jpeg()
    if kind == "truncated":
        return CameraFrame(stamp_ns=stamp, data=good[: int(rng.integers(len(good) // 10, len(good) - 2))])
    if kind == "zero_tailed":  # the tail overwritten with zeros: a write that never finished
        k = int(rng.integers(2, len(good) // 2))
        return CameraFrame(stamp_ns=stamp, data=good[:-k] + bytes(k))
    if kind == "bitflip":
        data = bytearray(good)
        for pos in rng.integers(2, len(data), 8):
            data[pos] ^= 1 << int(rng.integers(0, 8))
        return CameraFrame(stamp_ns=stamp, data=bytes(data))
    if kind == "wrong_size":
        # (320x180 is the rig's camera halved, a downscaled stream of the same camera: accepted)
        width, height = [(600, 360), (1280, 720), (640, 480)][int(rng.integers(0, 3))]
        return CameraFrame(stamp_ns=stamp, data=_jpeg(width, height))
    variant = int(rng.integers(0, 3))  # wrong_encoding
    if variant == 0:
        return CameraFrame(stamp_ns=stamp, data=good, encoding="png")  # says PNG, holds a JPEG
    if variant == 1:
        return CameraFrame(stamp_ns=stamp, data=good, encoding="h264")
    png = cv2.imencode(".png", np.zeros((360, 640, 3), np.uint8))[1].tobytes()
    return CameraFrame(stamp_ns=stamp, data=png, encoding="jpeg")


def test_r1_corrupted_camera_frames_are_rejected_with_reasons(tiny_package, figures):
    rng = np.random.default_rng(5)
    stamp = 2_000 * 1_000_000_000
    outcomes = {k: {} for k in CAMERA_KINDS}
    outputs = []
    with FusionRuntime(tiny_package) as rt:
        for i in range(1000):
            stamp += 5 * MS
            kind = CAMERA_KINDS[i % len(CAMERA_KINDS)]
            outcome, reasons, out = _push_one(rt, _damaged_frame(kind, stamp, rng))
            outputs += out
            outcomes[kind][outcome] = outcomes[kind].get(outcome, 0) + 1
            if kind in CAMERA_EXPECTED:
                assert outcome == "rejected" and reasons and reasons <= CAMERA_EXPECTED[kind], (kind, reasons)
            if i % 10 == 9:  # a good frame now and then: outputs keep coming
                stamp += 5 * MS
                outputs += rt.push(CameraFrame(stamp_ns=stamp, data=_jpeg()))
        stats = rt.stats()
    _assert_counts_add_up(stats)
    camera = stats["messages"]["camera"]
    assert camera["received"] == 1100 and len(outputs) == camera["ok"] + camera["degraded"] >= 100
    for out in outputs:
        _assert_finite(out)
    undecodable = sum(outcomes[k].get("rejected", 0) for k in CAMERA_EXPECTED)
    figures.update(frames=1000, crashes=0, undecodable_rejected=f"{undecodable}/800",
                   bitflip_outcomes=outcomes["bitflip"], reasons=camera["reasons"]["rejected"])


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_r1_bit_flips_in_a_log_fail_the_chunk_crc(tmp_path, figures, compression, flips=200):
    """Decoders take most bit flips silently, so the log's CRCs must catch them: a flip anywhere in a
    chunk's data is reported as a failed chunk and none of the altered frames is passed on."""
    frames = [CameraFrame(stamp_ns=10_000 + 50 * MS * k, data=_jpeg(seed=k % 4)) for k in range(24)]
    path = tmp_path / "frames.mcap"
    with LogWriter(path, compression=compression, chunk_size=64 << 10) as writer:
        for frame in frames:
            writer.write(frame)
    original = {f.stamp_ns: f.data for f in frames}
    chunks = _chunks(path)
    clean = path.read_bytes()
    rng = np.random.default_rng(7)
    caught = 0
    for _ in range(flips):
        victim = chunks[int(rng.integers(0, len(chunks)))]
        start = victim.chunk_start_offset + victim.chunk_length - victim.compressed_size  # the chunk's data
        pos = int(rng.integers(start, victim.chunk_start_offset + victim.chunk_length))
        data = bytearray(clean)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        damaged = tmp_path / "damaged.mcap"
        damaged.write_bytes(bytes(data))
        with LogReader(damaged) as reader:
            got = {m.message.stamp_ns: m.message.data for m in reader.messages()}
            issues = [(i.offset, i.kind) for i in reader.issues]
        assert issues in ([(victim.chunk_start_offset, "chunk_crc")], [(victim.chunk_start_offset, "chunk_decompress")])
        assert all(original[t] == d for t, d in got.items())  # nothing altered passed on
        assert set(original) - set(got) == {t for t in original
                                            if victim.message_start_time <= t <= victim.message_end_time}
        caught += 1
    figures.update(flips=flips, caught=f"{caught}/{flips}", chunks=len(chunks))


RADAR_KINDS = {  # kind -> (outcome, reason)
    "nan_few": ("degraded", "nonfinite_masked"), "nan_many": ("rejected", "nonfinite"),
    "posinf_few": ("degraded", "nonfinite_masked"), "neginf_many": ("rejected", "nonfinite"),
    "huge_few": ("degraded", "out_of_range_masked"), "huge_many": ("rejected", "out_of_range"),
    "negative_range": ("rejected", "bad_geometry"), "inverted_range": ("rejected", "bad_geometry"),
    "nan_azimuth": ("rejected", "bad_geometry"), "good": ("ok", None),
}


def _bad_radar(kind: str, stamp: int, rng: np.random.Generator) -> RadarTensor:
    few, many = 0.004, 0.2  # the package masks up to 1% of the cells
    if kind == "good":
        return _radar(stamp, rng)
    if kind.startswith(("nan", "posinf", "neginf", "huge")) and kind != "nan_azimuth":
        value = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf, "huge": 1e30}[kind.split("_")[0]]
        return _radar(stamp, rng, few if kind.endswith("few") else many, value)
    msg = _radar(stamp, rng)
    geometry = {"negative_range": {"range_min_m": -5.0}, "inverted_range": {"range_min_m": 90.0},
                "nan_azimuth": {"azimuth_max_rad": float("nan")}}[kind]
    return RadarTensor(**{**msg.__dict__, **geometry})


def test_r2_bad_radar_values_are_rejected_or_masked(tiny_package, figures):
    rng = np.random.default_rng(9)
    stamp = 3_000 * 1_000_000_000
    kinds = list(RADAR_KINDS)
    outputs, seen = [], {}
    with FusionRuntime(tiny_package) as rt:
        for i in range(500):
            stamp += 10 * MS
            kind = kinds[i % len(kinds)]
            outcome, reasons, _ = _push_one(rt, _bad_radar(kind, stamp, rng))
            want, reason = RADAR_KINDS[kind]
            assert outcome == want and reasons == ({reason} if reason else set()), (kind, outcome, reasons)
            seen[outcome] = seen.get(outcome, 0) + 1
            if i % 5 == 4:  # camera frames fuse whatever radar features survived
                stamp += 10 * MS
                outputs += rt.push(CameraFrame(stamp_ns=stamp, data=_jpeg()))
        stats = rt.stats()
    _assert_counts_add_up(stats)
    assert len(outputs) == 100
    for out in outputs:
        _assert_finite(out)
    assert sum("radar" in o.sources for o in outputs) > 50  # masked radar frames are used, not dropped
    figures.update(radar_messages=500, bad=450, rejected=seen.get("rejected", 0),
                   masked=seen.get("degraded", 0), nonfinite_outputs=0,
                   reasons={k: v for k, v in stats["messages"]["radar"]["reasons"].items() if v})
