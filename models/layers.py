"""Small building blocks shared by the encoders, decoders and heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric for stride 2).

    The EfficientNet-Lite ImageNet weights were trained with TF's padding; symmetric padding
    shifts every stride-2 feature map by half a pixel and measurably lowers accuracy. The pad is
    computed from the (static) input size, so exported graphs get a plain Pad + Conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm -> activation, as an nn.Sequential so state-dict keys read 0/1/2."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ):
        padding = dilation * (kernel - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SeparableConvBNAct(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1, each with BN and ReLU: the mobile-friendly 3x3 conv."""

    def __init__(self, cin: int, cout: int, dilation: int = 1, act: type[nn.Module] = nn.ReLU):
        super().__init__(
            ConvBNAct(cin, cin, 3, groups=cin, dilation=dilation, act=act),
            ConvBNAct(cin, cout, 1, act=act),
        )


def upsample_like(x: torch.Tensor, ref: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (half-pixel centres) to the spatial size of `ref`: one plain bilinear resize op in every exported format."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(ref)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BilinearUpsample(nn.Module):
    """`upsample_like` as a module, for the network's final logit upsample: an exporter may swap in
    an equivalent that its runtime's kernels run faster (dbd.export.tflite_rewrites)."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return upsample_like(x, like)
