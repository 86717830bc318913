"""R13 property-based fuzzing (issue #8) of the log reader, the message decoders, the runtime's
stamp checks and synchronization, and the manifest parser: only fusion-rt's own `FusionRTError`
subclasses escape; stamp order and buffer bounds always hold. (The ROS-port sync policies,
ApproximateTime, ApproximateEpsilonTime and ExactTime, have their queue-bound and order properties
fuzzed in tests/test_sync.py.) Examples are derandomized: CI sees the same ones every run.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusion_rt.errors import FusionRTError
from fusion_rt.logs import LogReader, LogWriter
from fusion_rt.messages import CameraFrame, MapRaster, RadarTensor, TextContext
from fusion_rt.package import load_package
from fusion_rt.preprocess import PreprocessConfig, Vocabulary, decode_camera, map_input, radar_tensor_input
from fusion_rt.rig import Rig
from fusion_rt.runtime import OUTCOMES, FusionRuntime
from fusion_rt.sync import LatestWithin

from ..test_logs_reader import _chunks, _stream
from ..test_runtime import _jpeg
from .conftest import scaled

MS = 1_000_000


def _run(test, examples: int) -> None:
    settings(max_examples=examples, deadline=None, derandomize=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])(test)()


@pytest.fixture(scope="module")
def crcless_log(tmp_path_factory) -> bytes:
    """A small uncompressed log of every sensor type with its chunk CRCs zeroed ("not computed"),
    so damage reaches the record parser and the CDR decoders instead of stopping at a CRC."""
    path = tmp_path_factory.mktemp("fuzz") / "log.mcap"
    with LogWriter(path, compression="none", chunk_size=2048) as writer:
        for message in _stream(24):
            writer.write(message)
    data = bytearray(path.read_bytes())
    for chunk in _chunks(path):
        struct.pack_into("<I", data, chunk.chunk_start_offset + 1 + 8 + 24, 0)  # opcode, length, 3 x u64
    return bytes(data)


@pytest.mark.parametrize("examples", scaled(150, 2000))
def test_r13_log_reader_fuzz_only_typed_errors(crcless_log, tmp_path, figures, examples):
    n = len(crcless_log)
    path = tmp_path / "fuzzed.mcap"
    escaped = []

    @given(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), max_size=8),
           st.one_of(st.none(), st.integers(0, n)))
    def read_damaged(edits, cut):
        data = bytearray(crcless_log)
        for pos, value in edits:
            data[pos] = value
        path.write_bytes(bytes(data[:cut] if cut is not None else data))
        try:
            with LogReader(path) as reader:
                for item in reader.messages():
                    assert isinstance(item.message.stamp_ns, int) and item.message.stamp_ns >= 0
                assert reader.truncated_at is None or reader.truncated_at <= len(data)
        except FusionRTError:
            pass
        except Exception as exc:  # noqa: BLE001 (what the property is about)
            escaped.append(repr(exc))
            raise

    _run(read_damaged, examples)
    figures.update(examples=examples, escaped_non_fusionrt=len(escaped))


CFG = PreprocessConfig.from_rig(Rig.default(), camera_height=36, camera_width=64)
_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def _bad_messages(draw):
    kind = draw(st.sampled_from(["camera", "radar", "map", "text"]))
    if kind == "camera":
        base = _jpeg(64, 36)
        data = draw(st.one_of(st.binary(max_size=64), st.builds(lambda k: base[:k], st.integers(0, len(base))),
                              st.just(base)))
        encoding = draw(st.sampled_from(["jpeg", "png", "bgr8", "rgb8", "mono8", "h264", ""]))
        return CameraFrame(stamp_ns=0, data=data, encoding=encoding, width=draw(st.integers(-2, 70000)),
                           height=draw(st.integers(-2, 70000)))
    if kind == "radar":
        shape = draw(st.sampled_from([(2, 128, 64), (2, 8, 4), (1, 128, 64), (128, 64)]))
        data = np.full(shape, draw(st.integers(-100, 100)), draw(st.sampled_from([np.float32, np.float16, np.int16])))
        for _ in range(draw(st.integers(0, 4))):
            with np.errstate(over="ignore"):  # a float32 beyond float16 becomes inf: one more bad value
                data.flat[draw(st.integers(0, data.size - 1))] = draw(_floats) if data.dtype.kind == "f" else 7
        channels = draw(st.sampled_from([("power_db", "radial_velocity_mps"), ("power_db",), ("x", "y")]))
        return RadarTensor(stamp_ns=0, data=data, channels=channels, range_min_m=draw(_floats),
                           range_max_m=draw(_floats), azimuth_min_rad=draw(_floats), azimuth_max_rad=draw(_floats))
    if kind == "map":
        grid = draw(hnp.arrays(draw(st.sampled_from([np.int8, np.int16, np.float32])),
                               draw(st.sampled_from([(64, 64), (3, 5), (0, 4), (2, 2, 2)]))))
        return MapRaster(stamp_ns=0, grid=grid, cell_m=draw(_floats), x_max_m=draw(_floats), y_max_m=draw(_floats))
    return TextContext(stamp_ns=0, text=draw(st.one_of(st.text(max_size=200), st.integers(), st.none())))


@pytest.mark.parametrize("examples", scaled(300, 3000))
def test_r13_message_decoders_fuzz_only_typed_errors(tiny_package, figures, examples):
    vocabulary = Vocabulary.load(tiny_package.vocabulary_path)
    decoders = {"camera": lambda m: decode_camera(m, CFG), "radar": lambda m: radar_tensor_input(m, CFG),
                "map": lambda m: map_input(m, CFG), "text": vocabulary.text_input}
    accepted = {}

    @given(_bad_messages())
    def decode(message):
        try:
            out = decoders[message.modality](message)
        except FusionRTError:
            return
        assert np.isfinite(out).all(), message.modality  # nothing non-finite reaches a graph
        accepted[message.modality] = accepted.get(message.modality, 0) + 1

    _run(decode, examples)
    figures.update(examples=examples, escaped_non_fusionrt=0, accepted=accepted)


@pytest.mark.parametrize("examples", scaled(60, 600))
def test_r13_runtime_stamps_and_sync_fuzz_order_and_bounds(tiny_package, figures, examples):
    """Any arrival order, repeats, jumps and bad stamps: push never raises, outputs leave in strictly
    increasing stamp order between reported clock resets, every message is counted once, and the
    synchronizer's buffer never holds more than `history` messages per stream."""
    streams = st.sampled_from(["camera", "radar", "map", "text"])
    steps = st.one_of(st.integers(-60 * MS, 120 * MS), st.sampled_from([0, -3 * 10**9, 10 * 10**9, 3600 * 10**9]))
    rng = np.random.default_rng(0)
    radar = RadarTensor(stamp_ns=0, data=rng.normal(10, 5, (2, 128, 64)).astype(np.float32),
                        channels=("power_db", "radial_velocity_mps"), range_min_m=0.5, range_max_m=100.0,
                        azimuth_min_rad=-math.pi / 3, azimuth_max_rad=math.pi / 3)
    grid = np.full((64, 64), 50, np.int8)
    make = {"camera": lambda t: CameraFrame(stamp_ns=t, data=_jpeg()),
            "radar": lambda t: RadarTensor(**{**radar.__dict__, "stamp_ns": t}),
            "map": lambda t: MapRaster(stamp_ns=t, grid=grid, cell_m=1.0, x_max_m=60.0, y_max_m=32.0),
            "text": lambda t: TextContext(stamp_ns=t, text="rain")}

    @given(st.lists(st.tuples(streams, steps), min_size=1, max_size=40))
    def arrivals(events):
        t = 10**12
        with FusionRuntime(tiny_package) as rt:
            last, resets = None, 0
            for stream, step in events:
                t = max(0, t + step)
                for out in rt.push(make[stream](t)):
                    if rt.stats()["clock_resets"] == resets:
                        assert last is None or out.stamp_ns > last
                    last, resets = out.stamp_ns, rt.stats()["clock_resets"]
                    assert all(s.stamp_ns <= out.stamp_ns for s in out.sources.values())
            stats = rt.stats()
        assert stats["received"] == len(events)
        for c in stats["messages"].values():
            assert c["received"] == sum(c[o] for o in OUTCOMES)

    _run(arrivals, examples)

    @given(st.lists(st.tuples(st.sampled_from(["a", "b", "trigger"]), st.integers(0, 10**6)), max_size=60),
           st.integers(1, 5))
    def latest_within(events, history):
        sync = LatestWithin("trigger", {"a": 1000, "b": 50}, history=history)
        added = {"a": 0, "b": 0}
        for stream, stamp in events:
            for fused in sync.add(stream, stamp, None):
                for name, chosen in fused.messages.items():
                    assert chosen is None or 0 <= stamp - chosen[0] <= sync.max_age_ns[name]
            if stream != "trigger":
                added[stream] += 1
                assert len(sync._buffers[stream]) == min(added[stream], history)  # the bound
                assert sync.drops()[stream] <= added[stream] - min(added[stream], history)

    _run(latest_within, examples * 5)
    figures.update(examples=examples, latest_within_examples=examples * 5, order_violations=0)


@pytest.mark.parametrize("examples", scaled(100, 1000))
def test_r13_manifest_parser_fuzz_only_package_errors(tiny_package, tmp_path, figures, examples):
    pkg = Path(shutil.copytree(tiny_package.root, tmp_path / "pkg"))
    manifest = json.loads((pkg / "manifest.json").read_text())
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=6)
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in children:
            walk(child, (*path, key))

    walk(manifest, ())
    loaded = {"ok": 0}

    @given(st.lists(st.tuples(st.sampled_from(paths[1:]), json_values | st.just("__delete__")), max_size=3)
           | st.builds(lambda v: [((), v)], json_values))
    def parse(edits):
        doc = json.loads(json.dumps(manifest))
        for path, value in edits:
            if not path:
                doc = value
                continue
            node = doc
            try:
                for key in path[:-1]:
                    node = node[key]
                if value == "__delete__":
                    del node[path[-1]]
                else:
                    node[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit removed the parent
        (pkg / "manifest.json").write_text(json.dumps(doc))
        try:
            load_package(pkg)
        except FusionRTError:
            return
        loaded["ok"] += 1

    _run(parse, examples)
    figures.update(examples=examples, escaped_non_fusionrt=0, still_valid=loaded["ok"])
