"""Concat head: each modality's mean token, concatenated with the presence mask, then an MLP.

The classic late-fusion baseline. A masked modality contributes zeros (and its presence flag 0),
so outputs never depend on its tokens. It has no attribution: its modality share is reported as
equal over the present modalities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fusion_rt.export.models.common import (
    SCENE_LABELS,
    HeadOutput,
    PooledDecoder,
    check_ints,
    check_modalities,
    masked_token_mean,
    order_tokens,
    presence_bool,
    uniform_share,
)
from fusion_rt.export.models.registry import register_model
from fusion_rt.messages import MODALITIES
from fusion_rt.rig import Rig

__all__ = ["ConcatHeadConfig", "ConcatHead"]


@dataclass(frozen=True)
class ConcatHeadConfig:
    modalities: tuple[str, ...] = MODALITIES  # token inputs, in this order
    token_dim: int = 64  # encoders' token width
    hidden: int = 256  # MLP width after concatenation
    labels: tuple[str, ...] = SCENE_LABELS  # scene outputs, in order

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "labels", tuple(self.labels))
        check_modalities("ConcatHeadConfig", self.modalities)
        check_ints("ConcatHeadConfig", token_dim=self.token_dim, hidden=self.hidden)


@register_model("concat", kind="head")
class ConcatHead(nn.Module):
    config_class = ConcatHeadConfig

    def __init__(self, config: ConcatHeadConfig | None = None, *, rig: Rig | None = None) -> None:
        super().__init__()
        config = config or ConcatHeadConfig()
        rig = rig or Rig.default()
        self.config = config
        m, d = len(config.modalities), config.token_dim
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(m))
        self.decoder = PooledDecoder(m * d + m, config.hidden, len(config.labels), len(rig.class_names),
                                     rig.bev.shape)

    def forward(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
                present: torch.Tensor) -> HeadOutput:
        toks = order_tokens(tokens, self.config.modalities)
        present = presence_bool(present, len(toks))
        pooled = masked_token_mean(toks, present)  # [B, M, D]
        normed = torch.stack([norm(pooled[:, i]) for i, norm in enumerate(self.norms)], dim=1)
        normed = torch.where(present[:, :, None], normed, torch.zeros_like(normed))  # LN bias stays out too
        B, M, D = normed.shape
        fused = torch.cat([normed.reshape(B, M * D), present.to(normed.dtype)], dim=1)  # [B, M * D + M]
        scene, bev = self.decoder(fused)
        return HeadOutput(scene, bev, uniform_share(present, len(self.config.labels) + 1))
