"""export.evaluate takes the BEV occupancy decision as the runtime does: in float32."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fusion_rt.export.data import SCENE_LABELS
from fusion_rt.export.evaluate import predict, summarize

from ._fixtures import BEV_LOGITS, tiny_split


@pytest.mark.train
def test_predict_thresholds_bev_in_float32():
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        config = SimpleNamespace(modalities=("camera",))

        def forward(self, inputs, mask):
            b = inputs["camera"].shape[0]
            return SimpleNamespace(scene_logits=torch.zeros(b, len(SCENE_LABELS)),
                                   bev_logits=torch.from_numpy(BEV_LOGITS).repeat(b, 1, 1, 1),
                                   modality_share=torch.ones(b, len(SCENE_LABELS) + 1, 1))

    split = tiny_split()
    pred = predict(Model(), split, vocab=None)
    result = summarize(split, pred, ("car",), ("camera",))
    assert result["overall"]["bev_iou"]["car"] == 1.0  # float16 probabilities gave 0.5
    assert pred.bev.tolist() == [[[[True, False]]]] * 2
