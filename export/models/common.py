"""What encoders and heads share: scene labels, the head output, config checks, pooling, decoders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fusion_rt.errors import ConfigError
from fusion_rt.messages import MODALITIES

__all__ = ["SCENE_LABELS", "HeadOutput", "check_ints", "check_counts", "check_modalities", "order_tokens",
           "presence_bool", "masked_token_mean", "PooledDecoder", "uniform_share"]

#: Scene-level labels predicted by every head, in output order (GroundTruth.labels keys).
SCENE_LABELS: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist", "hazard")


class HeadOutput(NamedTuple):
    """What a fusion head returns (also the ONNX head graph's outputs, in this order)."""

    scene_logits: torch.Tensor  # [B, L] one logit per SCENE_LABELS entry (sigmoid -> probability)
    bev_logits: torch.Tensor  # [B, C, rows, cols] occupancy logit per class on the rig's BEV grid
    modality_share: torch.Tensor  # [B, L + 1, M] share of each modality per label, then for the BEV output


def check_ints(owner: str, **values) -> None:
    """ConfigError unless every value is a positive int (or a non-empty tuple of them)."""
    for name, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        if not items or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in items):
            raise ConfigError(f"{owner}.{name} must be positive integers, got {value!r}")


def check_counts(owner: str, **values) -> None:
    """ConfigError unless every value is an int >= 0 (a count that may be zero: layers, channels)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{owner}.{name} must be an integer >= 0, got {value!r}")


def check_modalities(owner: str, modalities: tuple[str, ...]) -> None:
    if not modalities or len(set(modalities)) != len(modalities) or any(m not in MODALITIES for m in modalities):
        raise ConfigError(f"{owner}.modalities must be distinct names from {MODALITIES}, got {modalities!r}")


def order_tokens(tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
                 modalities: tuple[str, ...]) -> list[torch.Tensor]:
    """Per-modality tokens as a list in `modalities` order, from a dict or an ordered sequence."""
    if isinstance(tokens, Mapping):
        missing = [m for m in modalities if m not in tokens]
        if missing:
            raise ConfigError(f"tokens for {missing} are missing (masked modalities still need a placeholder "
                              f"tensor of the right shape)")
        return [tokens[m] for m in modalities]
    tokens = list(tokens)
    if len(tokens) != len(modalities):
        raise ConfigError(f"expected {len(modalities)} token tensors for {modalities}, got {len(tokens)}")
    return tokens


def presence_bool(present: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """[B, M] bool from a bool or 0/1 float presence mask."""
    if present.dim() != 2 or present.shape[1] != num_modalities:
        raise ConfigError(f"presence mask must be [batch, {num_modalities}], got {tuple(present.shape)}")
    return present if present.dtype == torch.bool else present > 0.5


def masked_token_mean(tokens: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
    """Mean token of each modality, zero (not NaN, whatever the tokens hold) where masked: [B, M, D]."""
    pooled = [t.mean(dim=1) for t in tokens]  # M x [B, D]
    stacked = torch.stack(pooled, dim=1)  # [B, M, D]
    return torch.where(present[:, :, None], stacked, torch.zeros_like(stacked))


def uniform_share(present: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """[B, num_outputs, M]: equal shares over the present modalities (heads without attribution)."""
    p = present.float()
    share = p / p.sum(dim=1, keepdim=True).clamp_min(1.0)  # [B, M]
    return share[:, None, :].expand(-1, num_outputs, -1)


class PooledDecoder(nn.Module):
    """Scene logits and a coarse-to-fine BEV grid from one fused vector (concat and gated heads).

    BEV: a linear layer predicts a (rows/4, cols/4) grid per class, bilinearly upsampled: a
    pooled vector has no spatial layout to decode from, which is the weakness this baseline shows.
    """

    def __init__(self, in_dim: int, hidden: int, num_labels: int, num_classes: int,
                 bev_shape: tuple[int, int]) -> None:
        super().__init__()
        self.bev_shape = bev_shape
        self.low = (max(1, bev_shape[0] // 4), max(1, bev_shape[1] // 4))
        self.num_classes = num_classes
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.scene = nn.Linear(hidden, num_labels)
        self.bev = nn.Linear(hidden, num_classes * self.low[0] * self.low[1])

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = fused.shape[0]
        h = self.mlp(fused)  # [B, hidden]
        bev = self.bev(h).reshape(B, self.num_classes, self.low[0], self.low[1])
        bev = F.interpolate(bev, size=self.bev_shape, mode="bilinear", align_corners=False)
        return self.scene(h), bev
