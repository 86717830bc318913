"""Multi-head attention written out with matmul and softmax, plus a pre-norm transformer block.

Explicit ops rather than nn.MultiheadAttention: its fused fast path has no ONNX export
(shared/BASELINE.md), and the attention weights are needed as an output (modality shares).
Masked keys get a large negative score (not -inf: fp16-safe, and a fully masked row stays
finite); their softmax weight underflows to exactly 0. The mask arrives as an additive score bias
(`attention_bias`), built once per forward and shared by every layer: one Add per attention
instead of the Shape/Expand/Where a boolean mask costs in the exported graph (the head is
dispatch-bound: its time goes per node, not per FLOP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

KV = tuple[torch.Tensor, torch.Tensor]  # one attention's keys and values, [B, H, T, Dh] each

__all__ = ["MultiHeadAttention", "TransformerBlock", "MASKED_SCORE", "Gelu", "attention_bias", "project_contexts"]

#: Score given to masked keys: exp(-1e4) is exactly 0 in fp32 and fp16, yet stays finite.
MASKED_SCORE = -1.0e4


def attention_bias(key_mask: torch.Tensor) -> torch.Tensor:
    """Bool key mask [B, T] (True = attend) -> additive score bias [B, 1, 1, T]: 0 or MASKED_SCORE."""
    return torch.where(key_mask, 0.0, MASKED_SCORE)[:, None, None, :]


class Gelu(nn.Module):
    """Exact (erf) GELU, the same function as nn.GELU, written in the order ONNX Runtime fuses.

    The exporter's own decomposition of nn.GELU (0.5 * (1 + erf) first, then x) is five nodes
    that ONNX Runtime leaves unfused; `x * 0.5 * (1 + erf(x / sqrt 2))` becomes one Gelu node.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention of queries [B, Q, D] over a context [B, T, D]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        assert dim % num_heads == 0, (dim, num_heads)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_bias: torch.Tensor | None = None,
                context_kv: KV | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output [B, Q, D], weights [B, H, Q, T]); key_bias [B, 1, 1, T] from `attention_bias`;
        context_kv: this attention's keys and values of `context`, already projected (`project_contexts`)."""
        B, Q, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        q = self.q(x).reshape(B, Q, H, Dh).transpose(1, 2)  # [B, H, Q, Dh]
        k, v = context_kv if context_kv is not None else project_contexts([self], context)[0]  # [B, H, T, Dh]
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # [B, H, Q, T]
        if key_bias is not None:
            scores = scores + key_bias
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(B, Q, D)  # [B, Q, H * Dh]
        return self.out(out), weights


def project_contexts(attentions: Sequence[MultiHeadAttention],
                     context: torch.Tensor) -> list[KV]:
    """Keys and values [B, H, T, Dh] of each attention over one context [B, T, D], as one matmul.

    One matmul over the stacked K and V weights, one transpose and one split, instead of a MatMul,
    bias Add, Reshape and Transpose per projection: the same arithmetic."""
    _, T, D = context.shape
    H, Dh = attentions[0].num_heads, attentions[0].head_dim
    weight = torch.cat([w for a in attentions for w in (a.k.weight, a.v.weight)])  # [2 n D, D], folded at export
    bias = torch.cat([b for a in attentions for b in (a.k.bias, a.v.bias)])
    n2 = 2 * len(attentions)
    kv = F.linear(context.reshape(-1, D), weight, bias).reshape(-1, T, n2, H, Dh)
    kv = kv.permute(0, 3, 1, 2, 4).reshape(-1, H, T, n2 * Dh).split(Dh, dim=-1)  # 2 n x [B, H, T, Dh]
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(len(attentions))]


class TransformerBlock(nn.Module):
    """Pre-norm block: optional self-attention, optional cross-attention to a context, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, self_attention: bool = True,
                 cross_attention: bool = False) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads) if self_attention else None
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.cross_attn = MultiHeadAttention(dim, num_heads) if cross_attention else None
        self.norm_cross = nn.LayerNorm(dim) if cross_attention else None
        hidden = int(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), Gelu(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, self_bias: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_bias: torch.Tensor | None = None,
                context_kv: KV | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, Q, D] -> (x, cross-attention weights [B, H, Q, T] or None); biases from `attention_bias`,
        context_kv: the cross-attention's keys and values, already projected (`project_contexts`)."""
        return self.after_self(self.self_step(x, self_bias), context, context_bias, context_kv)

    def self_step(self, x: torch.Tensor, self_bias: torch.Tensor | None = None) -> torch.Tensor:
        """The self-attention residual step alone (identity without self-attention)."""
        if self.self_attn is not None:
            h = self.norm_self(x)
            x = x + self.self_attn(h, h, self_bias)[0]
        return x

    def after_self(self, x: torch.Tensor, context: torch.Tensor | None = None,
                   context_bias: torch.Tensor | None = None,
                   context_kv: KV | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cross-attention and MLP steps: `forward` after `self_step`."""
        cross_weights = None
        if self.cross_attn is not None:
            assert context is not None
            out, cross_weights = self.cross_attn(self.norm_cross(x), context, context_bias, context_kv)
            x = x + out
        x = x + self.mlp(self.norm_mlp(x))
        return x, cross_weights
