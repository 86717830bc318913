"""Text encoder: word embeddings, one small transformer layer with padding masked, a pooled token.

Scene context ("school zone, rain, night") is a bag of a few words whose order matters little;
one self-attention layer lets words qualify each other and the masked mean makes the output one
token that does not depend on how much padding there is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusion_rt.errors import ConfigError
from fusion_rt.export.models.attention import TransformerBlock, attention_bias
from fusion_rt.export.models.common import check_counts, check_ints
from fusion_rt.export.models.registry import register_model
from fusion_rt.preprocess import PAD_ID, UNK_ID, PreprocessConfig
from fusion_rt.rig import Rig

__all__ = ["TextEncoderConfig", "TextEncoder"]


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 256  # embedding rows; set to len(Vocabulary) (ids beyond it read as unk)
    token_dim: int = 64  # width of every modality's tokens
    num_layers: int = 1  # transformer layers over the words
    num_heads: int = 4  # attention heads (token_dim must divide evenly)
    mlp_ratio: float = 2.0  # hidden width of the block's MLP relative to token_dim

    def __post_init__(self) -> None:
        check_ints("TextEncoderConfig", vocab_size=self.vocab_size, token_dim=self.token_dim,
                   num_heads=self.num_heads)
        if self.vocab_size < 3:
            raise ConfigError(f"TextEncoderConfig.vocab_size must be >= 3 (pad, unk, a word), got {self.vocab_size}")
        check_counts("TextEncoderConfig", num_layers=self.num_layers)
        if self.token_dim % self.num_heads:
            raise ConfigError(f"TextEncoderConfig.token_dim {self.token_dim} is not divisible by num_heads "
                              f"{self.num_heads}")
        if not 0 < self.mlp_ratio <= 8:
            raise ConfigError(f"TextEncoderConfig.mlp_ratio must be in (0, 8], got {self.mlp_ratio!r}")


@register_model("text", kind="encoder")
class TextEncoder(nn.Module):
    """[B, T] int64 word ids (PAD_ID = 0 pads) -> one pooled token [B, 1, token_dim]."""

    config_class = TextEncoderConfig

    def __init__(self, config: TextEncoderConfig | None = None, *, rig: Rig | None = None,
                 preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        config = config or TextEncoderConfig()
        preprocess = preprocess or PreprocessConfig()
        self.config = config
        self.input_shape = (preprocess.text_max_tokens,)
        self.embed = nn.Embedding(config.vocab_size, config.token_dim)
        self.pos = nn.Parameter(torch.zeros(preprocess.text_max_tokens, config.token_dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.token_dim, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.token_dim)

    num_tokens = 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        # Ids beyond the table (a stale vocabulary) read as unknown, negative ones as padding.
        ids = torch.where(ids < self.config.vocab_size, ids, torch.full_like(ids, UNK_ID)).clamp_min(0)
        keep = ids != PAD_ID  # [B, T]
        x = self.embed(ids) + self.pos[:T]  # [B, T, D]
        bias = attention_bias(keep)
        for block in self.blocks:
            x = block(x, self_bias=bias)[0]
        x = self.norm(x)
        w = keep.to(x.dtype)[:, :, None]  # [B, T, 1]
        pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # [B, D]; all-padding text -> 0
        return pooled[:, None, :]
