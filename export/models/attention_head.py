"""Attention head (the default): learned queries cross-attend over every modality's tokens.

One query per scene label and a grid of BEV queries (each decodes one BEV patch, and carries
the polar code of its patch centre, so it can find the camera columns, radar cells and map
patches at its bearing). Keys of a masked modality are excluded from every softmax and its
tokens are zeroed first, so the outputs do not depend on them at all; a learned "null" key that
is always present keeps the softmax defined when every modality is missing. The last layer's
cross-attention weights, summed per modality, are the modality shares: per label query, and
averaged over the BEV queries for the BEV output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fusion_rt.errors import ConfigError
from fusion_rt.export.models.attention import MASKED_SCORE, TransformerBlock, project_contexts
from fusion_rt.export.models.common import (
    SCENE_LABELS,
    HeadOutput,
    check_counts,
    check_ints,
    check_modalities,
    order_tokens,
    presence_bool,
)
from fusion_rt.export.models.posenc import polar_encoding, to_polar
from fusion_rt.export.models.registry import register_model
from fusion_rt.messages import MODALITIES
from fusion_rt.rig import Rig

__all__ = ["AttentionHeadConfig", "AttentionHead", "BevPatchDecoder"]


@dataclass(frozen=True)
class AttentionHeadConfig:
    modalities: tuple[str, ...] = MODALITIES  # token inputs, in this order
    token_dim: int = 64  # encoders' token width
    dim: int = 64  # head width; 64 keeps the head near 0.2 M parameters (limit 0.5 M)
    num_heads: int = 4  # attention heads of 16 channels
    num_layers: int = 2  # query blocks: self-attention, cross-attention, MLP
    mlp_ratio: float = 2.0  # MLP hidden width relative to dim
    bev_queries: tuple[int, int] = (8, 8)  # BEV query grid; each decodes a (rows/8, cols/8) patch
    refine_channels: int = 16  # 3x3 conv refinement over the assembled BEV grid (smooths patch seams); 0: none
    labels: tuple[str, ...] = SCENE_LABELS  # scene outputs, one query each

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "bev_queries", tuple(self.bev_queries))
        check_modalities("AttentionHeadConfig", self.modalities)
        check_ints("AttentionHeadConfig", token_dim=self.token_dim, dim=self.dim, num_heads=self.num_heads,
                   num_layers=self.num_layers, bev_queries=self.bev_queries)
        check_counts("AttentionHeadConfig", refine_channels=self.refine_channels)
        if len(self.bev_queries) != 2:
            raise ConfigError(f"AttentionHeadConfig.bev_queries must be (rows, cols), got {self.bev_queries!r}")
        if self.dim % self.num_heads or self.dim % 4:
            raise ConfigError(f"AttentionHeadConfig.dim {self.dim} must be a multiple of 4 and of num_heads "
                              f"{self.num_heads}")
        if not self.labels:
            raise ConfigError("AttentionHeadConfig.labels must not be empty")


class BevPatchDecoder(nn.Module):
    """BEV queries [B, gh * gw, D] -> logits [B, C, rows, cols]: each query a patch, then a 3x3 refine
    (none with refine_channels 0: on CPU the refinement is a fifth of the head's time)."""

    def __init__(self, dim: int, num_classes: int, grid: tuple[int, int], bev_shape: tuple[int, int],
                 refine_channels: int) -> None:
        super().__init__()
        gh, gw = grid
        self.grid, self.patch = grid, (bev_shape[0] // gh, bev_shape[1] // gw)
        self.num_classes = num_classes
        self.linear = nn.Linear(dim, num_classes * self.patch[0] * self.patch[1])
        self.refine = nn.Sequential(nn.Conv2d(num_classes, refine_channels, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(refine_channels, num_classes, 3, padding=1)) if refine_channels else None

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        B = queries.shape[0]
        (gh, gw), (ph, pw), C = self.grid, self.patch, self.num_classes
        x = self.linear(queries).reshape(B, gh, gw, C, ph, pw)
        x = x.permute(0, 3, 1, 4, 2, 5).reshape(B, C, gh * ph, gw * pw)  # [B, C, rows, cols]
        return x if self.refine is None else x + self.refine(x)


@register_model("attention", kind="head")
class AttentionHead(nn.Module):
    config_class = AttentionHeadConfig

    def __init__(self, config: AttentionHeadConfig | None = None, *, rig: Rig | None = None) -> None:
        super().__init__()
        config = config or AttentionHeadConfig()
        rig = rig or Rig.default()
        self.config = config
        m, d = len(config.modalities), config.dim
        rows, cols = rig.bev.shape
        gh, gw = config.bev_queries
        if rows % gh or cols % gw:
            raise ConfigError(f"BEV grid {(rows, cols)} is not divisible by bev_queries {config.bev_queries}")
        self.num_labels = len(config.labels)
        self.in_norm = nn.ModuleList(nn.LayerNorm(config.token_dim) for _ in range(m))
        self.in_proj = nn.ModuleList(nn.Linear(config.token_dim, d) for _ in range(m))
        self.modality_embed = nn.Parameter(torch.randn(m, d) * 0.02)
        self.null_key = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.memory_norm = nn.LayerNorm(d)
        self.label_queries = nn.Parameter(torch.randn(self.num_labels, d) * 0.02)
        self.bev_queries = nn.Parameter(torch.randn(gh * gw, d) * 0.02)
        # Fixed polar code of each BEV query's patch centre, as the encoders' tokens carry theirs.
        g = rig.bev
        x = g.x_max_m - (np.arange(gh) + 0.5) / gh * (rows * g.cell_m)
        y = g.y_max_m - (np.arange(gw) + 0.5) / gw * (cols * g.cell_m)
        xx, yy = np.meshgrid(x, y, indexing="ij")
        az, rng = to_polar(xx.ravel(), yy.ravel(), rig)
        self.register_buffer("bev_pos", torch.from_numpy(polar_encoding(az, rng, d)), persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.num_heads, config.mlp_ratio, self_attention=True, cross_attention=True)
            for _ in range(config.num_layers))
        self.out_norm = nn.LayerNorm(d)
        self.label_weight = nn.Parameter(torch.randn(self.num_labels, d) * 0.02)  # one logit per label query
        self.label_bias = nn.Parameter(torch.zeros(self.num_labels))
        self.bev = BevPatchDecoder(d, len(rig.class_names), (gh, gw), (rows, cols), config.refine_channels)

    def forward(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
                present: torch.Tensor) -> HeadOutput:
        # Written for a short exported graph (the head is dispatch-bound on CPU: its time goes per
        # node): one presence slice per modality, the modality embedding folded into the projection
        # bias (a constant), the key mask as one gathered score bias shared by every layer, every
        # layer's keys and values in one matmul, and the shares as one matmul with a constant
        # token-to-modality matrix. The same arithmetic as the straightforward form; the weights do
        # not change.
        toks = order_tokens(tokens, self.config.modalities)
        present = presence_bool(present, len(toks))
        B = present.shape[0]
        keep = present[:, :, None]  # [B, M, 1]
        memory = [self.null_key.expand(B, 1, -1)]
        for i, t in enumerate(toks):
            t = torch.where(keep[:, i:i + 1], t, 0.0)  # NaN/garbage in a masked input stays out
            proj = self.in_proj[i]
            memory.append(F.linear(self.in_norm[i](t), proj.weight, proj.bias + self.modality_embed[i]))
        sizes = [t.shape[1] for t in toks]
        kv = self.memory_norm(torch.cat(memory, dim=1))  # [B, 1 + sum(N), d]
        # Each key's modality index + 1 (0: the null key); torch ops, not numpy: torch.compile guards
        # on a tensor made from numpy in forward fail ("dispatch key set mismatch").
        owner = torch.cat([torch.full((n,), i, dtype=torch.long, device=present.device)
                           for i, n in enumerate([1, *sizes])])
        # Score bias per modality, 0 for the always-present null key, gathered to every key: [B, 1, 1, 1 + T].
        kv_bias = F.pad(torch.where(present, 0.0, MASKED_SCORE), (1, 0)).index_select(1, owner)[:, None, None, :]

        queries = torch.cat([self.label_queries, self.bev_queries + self.bev_pos], dim=0)  # [Q, d]
        # The first block's self-attention sees only the learned queries, the same for every sample:
        # run it once, before the batch expand, so it is a constant of the exported graph that ONNX
        # Runtime folds at load (the same arithmetic; the weights and outputs do not change).
        first = self.blocks[0]
        q = first.self_step(queries[None]).expand(B, -1, -1)
        # Every block's cross-attention keys and values over the one memory, in a single matmul.
        context_kv = project_contexts([block.cross_attn for block in self.blocks], kv)
        q, weights = first.after_self(q, context=kv, context_bias=kv_bias, context_kv=context_kv[0])
        for block, block_kv in zip(self.blocks[1:], context_kv[1:], strict=True):
            q, weights = block(q, context=kv, context_bias=kv_bias, context_kv=block_kv)
        q = self.out_norm(q)  # [B, L + G, d]
        L = self.num_labels
        scene = (q[:, :L] * self.label_weight).sum(dim=-1) + self.label_bias  # [B, L]
        bev = self.bev(q[:, L:])
        return HeadOutput(scene, bev, self._shares(weights, owner))

    def _shares(self, weights: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Last-layer attention [B, H, Q, 1 + T] -> modality shares [B, L + 1, M], summing to 1 over present.

        `owner` gives each key's modality index + 1 (0: the null key, which belongs to none)."""
        m = len(self.config.modalities)
        assign = (owner[:, None] == torch.arange(1, m + 1, device=owner.device)).to(weights.dtype)  # [1 + T, M]
        share = torch.matmul(weights, assign).mean(dim=1)  # [B, Q, M]: summed per modality, averaged over heads
        share = share / share.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        L = self.num_labels
        return torch.cat([share[:, :L], share[:, L:].mean(dim=1, keepdim=True)], dim=1)  # [B, L + 1, M]
