"""R10 determinism (issue #8): the same log replayed twice in lockstep, with 1 and 2 ONNX Runtime
threads, and in burst mode (prefetch thread) gives byte-identical fused outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mcap.reader import make_reader

from fusion_rt.replay import RESULT_TOPICS, ReplayConfig, replay


def _outputs_digest(path: Path) -> tuple[str, int]:
    """sha256 over the raw CDR bytes of every /fusion/outputs message, read with the official reader."""
    with open(path, "rb") as f:
        data = [m.data for _, _, m in make_reader(f).iter_messages(topics=[RESULT_TOPICS["outputs"]])]
    return hashlib.sha256(b"".join(data)).hexdigest(), len(data)


def test_r10_lockstep_outputs_are_byte_identical_across_runs_threads_and_burst(short_drive, tiny_package, tmp_path,
                                                                               figures):
    digests = []
    for name, kw in (("a", {"threads": 1}), ("b", {"threads": 1}), ("c", {"threads": 2}),
                     ("d", {"threads": 2, "mode": "burst"})):
        result = replay(short_drive, tiny_package.root, ReplayConfig(out=tmp_path / f"{name}.mcap", **kw))
        digests.append(_outputs_digest(tmp_path / f"{name}.mcap"))
        assert result.summary["outputs"] == digests[-1][1] > 0
    assert len(set(digests)) == 1, digests
    figures.update(replays=len(digests), distinct_hashes=1, outputs=digests[0][1], sha256=digests[0][0][:16])
