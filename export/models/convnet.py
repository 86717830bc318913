"""Convolution building blocks: conv-BN-ReLU and a ResNet basic block, stacked into stages.

BatchNorm folds into the convolution on export and ReLU is what int8 quantizes best, so these
are the deployment-friendly choice (shared/BASELINE.md).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBNAct", "BasicBlock", "conv_stages", "strided_size"]


class ConvBNAct(nn.Sequential):
    """k x k convolution (same padding), BatchNorm, optional ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                                   nn.BatchNorm2d(c_out)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block at constant width: two 3x3 convolutions and an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels)
        self.conv2 = ConvBNAct(channels, channels, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.conv1(x)))


def conv_stages(c_in: int, widths: tuple[int, ...], depths: tuple[int, ...]) -> nn.Sequential:
    """One stage per width: a stride-2 ConvBNAct into that width, then `depth` basic blocks."""
    assert len(widths) == len(depths), (widths, depths)
    layers: list[nn.Module] = []
    for width, depth in zip(widths, depths, strict=True):
        layers.append(ConvBNAct(c_in, width, stride=2))
        layers.extend(BasicBlock(width) for _ in range(depth))
        c_in = width
    return nn.Sequential(*layers)


def strided_size(n: int, num_stride2: int) -> int:
    """Output length of `num_stride2` 3x3 stride-2 convolutions with padding 1 on length n."""
    for _ in range(num_stride2):
        n = (n - 1) // 2 + 1
    return n
