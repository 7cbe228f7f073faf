"""Per-segment CNNs, as AVBERT builds them: a 3D ResNet on frames and a 2D ResNet on log-mel.

Both are bottleneck ResNets (expansion 4) of four stages; stage ``i`` has inner width
``width * 2**i`` and output ``4 * width * 2**i`` channels, so the pooled output has
``width * 32`` values. A block is ``a`` (1x1) -> ``b`` (3x3, carries the stride) -> ``c`` (1x1,
BatchNorm zero-initialized) plus a shortcut (``proj``, a strided 1x1 conv + BN, where the
shape changes), then ReLU. BatchNorm eps 1e-5 everywhere.

- Visual (AVBERT ``ResNet``; paper: width 64, blocks 3-4-6-3, 31.7M parameters, 2048-d):
  stem conv 5x7x7 stride (2, 2, 2) + BN + ReLU + max-pool 1x3x3 stride (1, 2, 2); conv ``a`` has
  a temporal kernel of 3 only in the last two stages; stages 2-4 stride 2 in space.
- Audio (AVBERT ``AudioResNet``; paper: width 32, blocks 3-4-6-3, 5.84M parameters, 1024-d):
  stem conv 9x1 + BN + ReLU, conv 1x9 + BN + ReLU, stride 1; every stage strides 2 in both
  frequency and time; in the first two stages ``b`` is split into 3x1 (stride in frequency) +
  BN + ReLU + 1x3 (stride in time).

Pooling is a global mean. AVBERT's heads average-pool with a fixed kernel (``F // 2`` frames,
``ceil(crop / 32)`` pixels; ``ceil(mels / 16)`` x ``ceil(frames / 16)``) that equals the last
feature map for every input these configs allow (even frame counts), so the two agree.
Input normalization (uint8 -> float, mean/std) is done by ``PEMT.encode_visual``, not here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AudioResNet", "Bottleneck", "VisualResNet"]

BN_EPS = 1e-5


def _bn(dims: int, c: int, zero: bool = False) -> nn.Module:
    bn: Any = nn.BatchNorm3d(c, eps=BN_EPS) if dims == 3 else nn.BatchNorm2d(c, eps=BN_EPS)
    if zero:
        nn.init.zeros_(bn.weight)  # the residual branch starts as identity (AVBERT's init)
    return bn


def _conv(
    dims: int, c_in: int, c_out: int, kernel: tuple[int, ...], stride: tuple[int, ...]
) -> nn.Module:
    conv: Any = nn.Conv3d if dims == 3 else nn.Conv2d
    layer = conv(
        c_in, c_out, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False
    )
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return layer


class Bottleneck(nn.Module):
    """One residual block; ``dims`` 3 (visual, temporal kernel ``kt`` in ``a``) or 2 (audio,
    ``split`` = the 3x3 as 3x1 + 1x3)."""

    def __init__(
        self, dims: int, c_in: int, inner: int, stride: int, kt: int = 1, split: bool = False
    ) -> None:
        super().__init__()
        c_out = 4 * inner
        one = (1,) * dims
        self.split = split
        self.a = _conv(dims, c_in, inner, (kt, 1, 1) if dims == 3 else (1, 1), one)
        self.a_bn = _bn(dims, inner)
        if split:
            self.b1 = _conv(2, inner, inner, (3, 1), (stride, 1))
            self.b1_bn = _bn(2, inner)
            self.b2 = _conv(2, inner, inner, (1, 3), (1, stride))
            self.b2_bn = _bn(2, inner)
        else:
            s = (1, stride, stride) if dims == 3 else (stride, stride)
            self.b = _conv(dims, inner, inner, (1, 3, 3) if dims == 3 else (3, 3), s)
            self.b_bn = _bn(dims, inner)
        self.c = _conv(dims, inner, c_out, one, one)
        self.c_bn = _bn(dims, c_out, zero=True)
        self.proj: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            s = (1, stride, stride) if dims == 3 else (stride, stride)
            self.proj = _conv(dims, c_in, c_out, one, s)
            self.proj_bn = _bn(dims, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a_bn(self.a(x)))
        if self.split:
            y = torch.relu(self.b1_bn(self.b1(y)))
            y = torch.relu(self.b2_bn(self.b2(y)))
        else:
            y = torch.relu(self.b_bn(self.b(y)))
        y = self.c_bn(self.c(y))
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return torch.relu(shortcut + y)


def _stages(
    dims: int, width: int, blocks: tuple[int, ...], strides: tuple[int, ...], kts: tuple[int, ...],
    splits: tuple[bool, ...],
) -> nn.ModuleList:  # fmt: skip
    """Four stages; stage i: ``blocks[i]`` bottlenecks of inner width ``width * 2**i``, the first
    one strided by ``strides[i]``."""
    stages = nn.ModuleList()
    c_in = width
    for i, n in enumerate(blocks):
        inner = width * 2**i
        stage = nn.Sequential()
        for j in range(n):
            stage.append(
                Bottleneck(dims, c_in, inner, strides[i] if j == 0 else 1, kts[i], splits[i])
            )
            c_in = 4 * inner
        stages.append(stage)
    return stages


class VisualResNet(nn.Module):
    """3D ResNet: (N, 3, F, S, S) normalized float -> (N, width * 32)."""

    def __init__(self, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv(3, 3, width, (5, 7, 7), (2, 2, 2)),
            _bn(3, width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.stages = _stages(3, width, blocks, (1, 2, 2, 2), (1, 1, 3, 3), (False,) * 4)
        self.out_dim = width * 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (N, width, F/2, S/4, S/4)
        for stage in self.stages:
            x = stage(x)  # last: (N, width*32, F/2, S/32, S/32)
        return x.mean(dim=(2, 3, 4))  # (N, width*32)


class AudioResNet(nn.Module):
    """2D ResNet on log-mel: (N, 1, n_mels, A) -> (N, width * 32)."""

    def __init__(self, width: int = 32, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv(2, 1, width, (9, 1), (1, 1)),
            _bn(2, width),
            nn.ReLU(inplace=True),
            _conv(2, width, width, (1, 9), (1, 1)),
            _bn(2, width),
            nn.ReLU(inplace=True),
        )
        self.stages = _stages(2, width, blocks, (2, 2, 2, 2), (1,) * 4, (True, True, False, False))
        self.out_dim = width * 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (N, width, M, A)
        for stage in self.stages:
            x = stage(x)  # last: (N, width*32, M/16, A/16)
        return x.mean(dim=(2, 3))  # (N, width*32)
