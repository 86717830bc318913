"""Small hand-made arrays and runs for the export tests (export and calibration alike)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusion_rt.export.data import SCENE_LABELS, Split

#: One occupied cell the model gets right and one free cell whose logit is just below 0: sigmoid
#: 0.499925, which float16 rounds to 0.5 (occupied), where the runtime's float32 says free.
BEV_LOGITS = np.array([[[[4.0, -3e-4]]]], np.float32)


def tiny_split(n: int = 2) -> Split:
    """n frames with a 1x2 BEV grid of one class: the first cell occupied, the second free."""
    bev = np.zeros((n, 1, 1, 2), np.uint8)
    bev[..., 0] = 1
    return Split(camera=np.zeros((n, 3, 2, 2), np.float16), radar=np.zeros((n, 2, 2, 2), np.float32),
                 map=np.zeros((n, 5, 2, 2), np.float16), text=np.array([""] * n), present=np.ones((n, 4), bool),
                 labels=np.zeros((n, len(SCENE_LABELS)), np.uint8), bev=bev, bev_known=np.ones((n, 1), bool),
                 condition=np.array(["day"] * n), scene_type=np.array(["urban"] * n),
                 log_index=np.zeros(n, np.int32), stamp_ns=np.arange(n, dtype=np.int64))


def write_random_run(out: Path, **model) -> Path:
    """A run directory in the training format with untrained weights (export and loading do not
    care): `model` overrides FusionModelConfig fields. Needs torch."""
    import torch
    from safetensors.torch import save_file

    from fusion_rt.export.evaluate import RUN_FORMAT, RUN_VERSION
    from fusion_rt.export.models import FusionModel, FusionModelConfig
    from fusion_rt.preprocess import PreprocessConfig, Vocabulary
    from fusion_rt.rig import Rig

    out.mkdir(parents=True)
    torch.manual_seed(0)
    rig = Rig.default()
    pre = PreprocessConfig.from_rig(rig)
    vocab = Vocabulary.build(["school zone, rain, 30 km/h", "highway, fog, 100 km/h"], max_tokens=pre.text_max_tokens)
    config = FusionModelConfig(**model)
    if "text" in config.modalities and "text" not in config.encoders:
        config = FusionModelConfig(**{**model, "encoders": {"text": {"vocab_size": len(vocab)}}})
    model_ = FusionModel(config, rig=rig, preprocess=pre)
    save_file({k: v.contiguous() for k, v in model_.state_dict().items()}, str(out / "model.safetensors"))
    vocab.save(out / "vocab.json")
    (out / "config.json").write_text(json.dumps({"format": RUN_FORMAT, "version": RUN_VERSION, "rig": rig.to_dict(),
                                                 "preprocess": pre.to_dict(), "model": config.to_dict()}))
    (out / "metrics.json").write_text(json.dumps({"validation": {}, "note": "untrained weights"}))  # marks it finished
    return out
