"""Camera encoder: a compact ResNet-style CNN whose stride-16 feature map becomes tokens.

Each token column carries the azimuth of its pixel columns, from the camera intrinsics, with the
same code radar, map and BEV positions use (posenc.py); each token row a learned embedding
(image row correlates with distance on flat ground, but the mapping is learned, not assumed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fusion_rt.errors import ConfigError
from fusion_rt.export.models.common import check_ints
from fusion_rt.export.models.convnet import ConvBNAct, conv_stages, strided_size
from fusion_rt.export.models.posenc import polar_encoding
from fusion_rt.export.models.registry import register_model
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import Rig

__all__ = ["CameraEncoderConfig", "CameraEncoder"]


@dataclass(frozen=True)
class CameraEncoderConfig:
    stem_width: int = 16  # the stride-2 stem; 16 channels at 72x128 is ~4 MMAC, a tenth of the encoder
    widths: tuple[int, ...] = (32, 48, 96)  # one stride-2 stage each: 144x256 -> 9x16 tokens
    depths: tuple[int, ...] = (0, 1, 1)  # basic blocks per stage: ~77 MMAC (a block at 36x64 would add 42)
    token_dim: int = 64  # width of every modality's tokens (the head's input width)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "depths", tuple(self.depths))
        check_ints("CameraEncoderConfig", stem_width=self.stem_width, widths=self.widths,
                   token_dim=self.token_dim)
        if len(self.depths) != len(self.widths) or any(not isinstance(d, int) or d < 0 for d in self.depths):
            raise ConfigError(f"CameraEncoderConfig.depths must be one count >= 0 per width, got {self.depths!r}")
        if self.token_dim % 4:
            raise ConfigError(f"CameraEncoderConfig.token_dim must be a multiple of 4, got {self.token_dim}")


@register_model("camera", kind="encoder")
class CameraEncoder(nn.Module):
    """[B, 3, H, W] normalized RGB -> tokens [B, rows * cols, token_dim] (row-major)."""

    config_class = CameraEncoderConfig

    def __init__(self, config: CameraEncoderConfig | None = None, *, rig: Rig | None = None,
                 preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        config = config or CameraEncoderConfig()
        rig = rig or Rig.default()
        preprocess = preprocess or PreprocessConfig.from_rig(rig)
        self.config = config
        self.input_shape = preprocess.camera_shape
        self.stem = ConvBNAct(3, config.stem_width, stride=2)
        self.stages = conv_stages(config.stem_width, config.widths, config.depths)
        self.proj = nn.Conv2d(config.widths[-1], config.token_dim, 1)
        self.norm = nn.LayerNorm(config.token_dim)
        n_stride = 1 + len(config.widths)
        self.grid = (strided_size(preprocess.camera_height, n_stride), strided_size(preprocess.camera_width, n_stride))
        rows, cols = self.grid
        # Azimuth of each token column: the intrinsics' column azimuths sampled at the column's
        # centre, as a fraction of the image width (preprocessing resizes the whole frame).
        intr = rig.camera.intrinsics
        u = (np.arange(cols) + 0.5) / cols * intr.width - 0.5
        az = np.interp(u, np.arange(intr.width), intr.column_azimuth())
        pos = polar_encoding(az, None, config.token_dim)  # [cols, D], range half zero
        self.register_buffer("azimuth_pos", torch.from_numpy(np.tile(pos, (rows, 1))), persistent=False)  # [N, D]
        self.row_pos = nn.Parameter(torch.zeros(rows, 1, config.token_dim))
        self.token_azimuth = np.tile(az, rows)  # per token, for inspection and tests

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stages(self.stem(image)))  # [B, D, rows, cols]
        B, D, R, C = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))  # [B, R * C, D]
        pos = self.azimuth_pos + self.row_pos.expand(R, C, D).reshape(R * C, D)  # [N, D]
        return x + pos

