"""Gated head: a learned weight per modality (softmax over the present ones), weighted sum, MLP.

The gate of each modality is computed from its own mean token, so the weights adapt per frame
(e.g. radar up-weighted when the camera image is dark). The gates are the modality shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fusion_rt.export.models.attention import MASKED_SCORE
from fusion_rt.export.models.common import (
    SCENE_LABELS,
    HeadOutput,
    PooledDecoder,
    check_ints,
    check_modalities,
    masked_token_mean,
    order_tokens,
    presence_bool,
)
from fusion_rt.export.models.registry import register_model
from fusion_rt.messages import MODALITIES
from fusion_rt.rig import Rig

__all__ = ["GatedHeadConfig", "GatedHead"]


@dataclass(frozen=True)
class GatedHeadConfig:
    modalities: tuple[str, ...] = MODALITIES  # token inputs, in this order
    token_dim: int = 64  # encoders' token width
    dim: int = 128  # width each modality is projected to before the weighted sum
    hidden: int = 256  # MLP width after fusion
    labels: tuple[str, ...] = SCENE_LABELS  # scene outputs, in order

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "labels", tuple(self.labels))
        check_modalities("GatedHeadConfig", self.modalities)
        check_ints("GatedHeadConfig", token_dim=self.token_dim, dim=self.dim, hidden=self.hidden)


@register_model("gated", kind="head")
class GatedHead(nn.Module):
    config_class = GatedHeadConfig

    def __init__(self, config: GatedHeadConfig | None = None, *, rig: Rig | None = None) -> None:
        super().__init__()
        config = config or GatedHeadConfig()
        rig = rig or Rig.default()
        self.config = config
        m = len(config.modalities)
        self.proj = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(config.token_dim), nn.Linear(config.token_dim, config.dim)) for _ in range(m))
        self.gate = nn.ModuleList(nn.Linear(config.dim, 1) for _ in range(m))
        self.decoder = PooledDecoder(config.dim, config.hidden, len(config.labels), len(rig.class_names),
                                     rig.bev.shape)

    def forward(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
                present: torch.Tensor) -> HeadOutput:
        toks = order_tokens(tokens, self.config.modalities)
        present = presence_bool(present, len(toks))
        pooled = masked_token_mean(toks, present)  # [B, M, D]
        feats = torch.stack([p(pooled[:, i]) for i, p in enumerate(self.proj)], dim=1)  # [B, M, dim]
        logits = torch.cat([g(feats[:, i]) for i, g in enumerate(self.gate)], dim=1)  # [B, M]
        logits = torch.where(present, logits, torch.full_like(logits, MASKED_SCORE))
        weights = torch.softmax(logits, dim=1) * present.to(logits.dtype)  # all masked -> all 0
        fused = (weights[:, :, None] * feats).sum(dim=1)  # [B, dim]
        scene, bev = self.decoder(fused)
        share = weights[:, None, :].expand(-1, len(self.config.labels) + 1, -1)  # [B, L + 1, M]
        return HeadOutput(scene, bev, share)
