"""Radar encoder: a small CNN over the range-azimuth tensor; tokens carry their cell's position.

Each token covers a block of range x azimuth bins; its positional code is the (azimuth, range)
of the block centre seen from the camera (posenc.py), so it lines up with camera columns.
"""

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

__all__ = ["RadarEncoderConfig", "RadarEncoder"]


@dataclass(frozen=True)
class RadarEncoderConfig:
    stem_width: int = 16  # stride-2 stem over the 128x64 tensor
    widths: tuple[int, ...] = (32, 64)  # stride-2 stages: 128x64 bins -> 16x8 = 128 tokens
    depths: tuple[int, ...] = (1, 1)  # basic blocks per stage
    token_dim: int = 64  # width of every modality's tokens

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "depths", tuple(self.depths))
        check_ints("RadarEncoderConfig", stem_width=self.stem_width, widths=self.widths, token_dim=self.token_dim)
        if len(self.depths) != len(self.widths) or any(not isinstance(d, int) or d < 0 for d in self.depths):
            raise ConfigError(f"RadarEncoderConfig.depths must be one count >= 0 per width, got {self.depths!r}")
        if self.token_dim % 4:
            raise ConfigError(f"RadarEncoderConfig.token_dim must be a multiple of 4, got {self.token_dim}")


@register_model("radar", kind="encoder")
class RadarEncoder(nn.Module):
    """[B, C, range_bins, azimuth_bins] -> tokens [B, rows * cols, token_dim] (range-major)."""

    config_class = RadarEncoderConfig

    def __init__(self, config: RadarEncoderConfig | None = None, *, rig: Rig | None = None,
                 preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        config = config or RadarEncoderConfig()
        rig = rig or Rig.default()
        preprocess = preprocess or PreprocessConfig.from_rig(rig)
        radar = rig.radar
        if (radar.num_range_bins, radar.num_azimuth_bins) != preprocess.radar_shape:
            raise ConfigError(f"rig radar grid {(radar.num_range_bins, radar.num_azimuth_bins)} differs from the "
                              f"preprocessing radar_shape {preprocess.radar_shape}")
        self.config = config
        channels = len(preprocess.radar_input_channels)
        self.input_shape = (channels, *preprocess.radar_shape)
        self.stem = ConvBNAct(channels, config.stem_width, stride=2)
        self.stages = conv_stages(config.stem_width, config.widths, config.depths)
        self.proj = nn.Conv2d(config.widths[-1], config.token_dim, 1)
        self.norm = nn.LayerNorm(config.token_dim)
        n_stride = 1 + len(config.widths)
        self.grid = (strided_size(radar.num_range_bins, n_stride), strided_size(radar.num_azimuth_bins, n_stride))
        rows, cols = self.grid
        rng = radar.range_min_m + (np.arange(rows) + 0.5) / rows * (radar.range_max_m - radar.range_min_m)
        az = -radar.azimuth_max_rad + (np.arange(cols) + 0.5) / cols * 2 * radar.azimuth_max_rad
        rr, aa = np.meshgrid(rng, az, indexing="ij")  # [rows, cols]
        pts = np.stack([rr * np.cos(aa), rr * np.sin(aa), np.zeros_like(rr)], axis=-1).reshape(-1, 3)
        ego = radar.pose.to_ego(pts)
        self.token_azimuth, self.token_range = to_polar(ego[:, 0], ego[:, 1], rig)
        pos = polar_encoding(self.token_azimuth, self.token_range, config.token_dim)  # [N, D]
        self.register_buffer("pos", torch.from_numpy(pos), persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stages(self.stem(tensor)))  # [B, D, rows, cols]
        x = self.norm(x.flatten(2).transpose(1, 2))  # [B, rows * cols, D]
        return x + self.pos
