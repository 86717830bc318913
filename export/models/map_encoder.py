"""Map encoder: a small CNN over the one-hot BEV map raster; tokens carry their patch's position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fusion_rt.errors import ConfigError
from fusion_rt.export.models.common import check_ints
from fusion_rt.export.models.convnet import ConvBNAct, conv_stages, strided_size
from fusion_rt.export.models.posenc import polar_encoding, to_polar
from fusion_rt.export.models.registry import register_model
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import Rig

__all__ = ["MapEncoderConfig", "MapEncoder"]


@dataclass(frozen=True)
class MapEncoderConfig:
    stem_width: int = 16  # stride-2 stem over the 64x64 raster
    widths: tuple[int, ...] = (32, 64)  # stride-2 stages: 64x64 cells -> 8x8 = 64 tokens of 12 m
    depths: tuple[int, ...] = (0, 1)  # the map is clean one-hot data: little depth needed
    token_dim: int = 64  # width of every modality's tokens

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "depths", tuple(self.depths))
        check_ints("MapEncoderConfig", stem_width=self.stem_width, widths=self.widths, token_dim=self.token_dim)
        if len(self.depths) != len(self.widths) or any(not isinstance(d, int) or d < 0 for d in self.depths):
            raise ConfigError(f"MapEncoderConfig.depths must be one count >= 0 per width, got {self.depths!r}")
        if self.token_dim % 4:
            raise ConfigError(f"MapEncoderConfig.token_dim must be a multiple of 4, got {self.token_dim}")


@register_model("map", kind="encoder")
class MapEncoder(nn.Module):
    """[B, K, rows, cols] one-hot map -> tokens [B, n_rows * n_cols, token_dim] (row-major)."""

    config_class = MapEncoderConfig

    def __init__(self, config: MapEncoderConfig | None = None, *, rig: Rig | None = None,
                 preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        config = config or MapEncoderConfig()
        rig = rig or Rig.default()
        preprocess = preprocess or PreprocessConfig.from_rig(rig)
        self.config = config
        self.input_shape = preprocess.map_shape
        k, rows_in, cols_in = preprocess.map_shape
        self.stem = ConvBNAct(k, config.stem_width, stride=2)
        self.stages = conv_stages(config.stem_width, config.widths, config.depths)
        self.proj = nn.Conv2d(config.widths[-1], config.token_dim, 1)
        self.norm = nn.LayerNorm(config.token_dim)
        n_stride = 1 + len(config.widths)
        self.grid = (strided_size(rows_in, n_stride), strided_size(cols_in, n_stride))
        rows, cols = self.grid
        g = preprocess.map_grid
        x = g.x_max_m - (np.arange(rows) + 0.5) / rows * (rows_in * g.cell_m)
        y = g.y_max_m - (np.arange(cols) + 0.5) / cols * (cols_in * g.cell_m)
        xx, yy = np.meshgrid(x, y, indexing="ij")
        self.token_azimuth, self.token_range = to_polar(xx.ravel(), yy.ravel(), rig)
        pos = polar_encoding(self.token_azimuth, self.token_range, config.token_dim)  # [N, D]
        self.register_buffer("pos", torch.from_numpy(pos), persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, raster: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stages(self.stem(raster)))  # [B, D, rows, cols]
        x = self.norm(x.flatten(2).transpose(1, 2))  # [B, rows * cols, D]
        return x + self.pos
