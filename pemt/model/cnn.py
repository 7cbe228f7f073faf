"""Per-segment CNNs: a 3D ResNet-50 on frames and a 2D ResNet-50 on log-mel.

Both are bottleneck ResNets (expansion 4) whose pooled output is ``width * 32`` values, built to
the AVBERT shapes in ``/work/shared/DESIGN.md``:

- visual: stem conv 5x7x7 stride (2, 2, 2) + 1x3x3 max-pool stride (1, 2, 2); the first 1x1 conv
  of a bottleneck gets a temporal kernel of 3 only in the last two stages (SlowFast "slow" style).
  Paper size (width 64, blocks 3-4-6-3): 31.7M parameters, 2048-d output.
- audio: stem conv 9x1 (frequency, stride 2) then 1x9 (time, stride 2), then 2D bottleneck
  stages. Paper size (width 32, blocks 3-4-6-3): 5.8M parameters, 1024-d output.

Input normalization (uint8 -> float, mean/std) is done by ``PEMT.encode_visual``, not here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AudioResNet", "VisualResNet"]


def _conv(
    dims: int, c_in: int, c_out: int, kernel: tuple[int, ...], stride: tuple[int, ...]
) -> nn.Module:
    conv: Any = nn.Conv3d if dims == 3 else nn.Conv2d
    padding = tuple(k // 2 for k in kernel)
    return conv(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)


def _bn(dims: int, c: int, zero: bool = False) -> nn.Module:
    bn = nn.BatchNorm3d(c) if dims == 3 else nn.BatchNorm2d(c)
    if zero:
        nn.init.zeros_(bn.weight)  # the residual branch starts as identity
    return bn


class Bottleneck(nn.Module):
    """1x1 (temporal kernel kt in 3D) -> 3x3 (stride) -> 1x1 (x4 channels), plus a shortcut."""

    expansion = 4

    def __init__(self, dims: int, c_in: int, width: int, stride: int, kt: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        one = (1,) * dims
        k1 = (kt, 1, 1) if dims == 3 else (1, 1)
        k2 = (1, 3, 3) if dims == 3 else (3, 3)
        s2 = (1, stride, stride) if dims == 3 else (stride, stride)
        self.conv1, self.bn1 = _conv(dims, c_in, width, k1, one), _bn(dims, width)
        self.conv2, self.bn2 = _conv(dims, width, width, k2, s2), _bn(dims, width)
        self.conv3, self.bn3 = _conv(dims, width, c_out, one, one), _bn(dims, c_out, zero=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(_conv(dims, c_in, c_out, one, s2), _bn(dims, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + self.shortcut(x))


def _stages(
    dims: int, width: int, blocks: tuple[int, ...], temporal: tuple[int, ...]
) -> nn.Sequential:
    """Four stages; stage i has ``blocks[i]`` bottlenecks of width ``width * 2**i``."""
    layers: list[nn.Module] = []
    c_in = width
    for i, (n, kt) in enumerate(zip(blocks, temporal, strict=True)):
        w = width * 2**i
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(Bottleneck(dims, c_in, w, stride, kt))
            c_in = w * Bottleneck.expansion
    return nn.Sequential(*layers)


class VisualResNet(nn.Module):
    """3D ResNet-50: (N, 3, F, S, S) normalized float -> (N, width * 32)."""

    def __init__(self, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, (5, 7, 7), stride=(2, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.stages = _stages(3, width, blocks, temporal=(1, 1, 3, 3))
        self.out_dim = width * 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, width*32, F', S', S')
        return x.mean(dim=(2, 3, 4))  # (N, width*32)


class AudioResNet(nn.Module):
    """2D ResNet-50 on log-mel: (N, 1, n_mels, A) -> (N, width * 32)."""

    def __init__(self, width: int = 32, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, (9, 1), stride=(2, 1), padding=(4, 0), bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, (1, 9), stride=(1, 2), padding=(0, 4), bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.stages = _stages(2, width, blocks, temporal=(1, 1, 1, 1))
        self.out_dim = width * 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, width*32, M', A')
        return x.mean(dim=(2, 3))  # (N, width*32)
