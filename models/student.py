"""The student: a compact DBD network for phones (<= 1 GMAC, <= 4 M parameters at 320x320).

MobileNetV2 encoder -> light multi-scale context -> a top-down decoder of depthwise-separable
convs over concatenated skips -> one-channel logits -> bilinear upsampling -> sigmoid. Only ops
that every phone runtime runs natively in int8: conv, depthwise conv (also dilated), ReLU/ReLU6,
add, concat, bilinear resize and sigmoid, with static shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import EncoderDecoderNet
from .layers import ConvBNAct, SeparableConvBNAct, upsample_like
from .registry import create_model, register_model


class LightContext(nn.Module):
    """Two receptive fields on the deepest features: a 1x1 branch and a dilated separable branch."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.reduce = ConvBNAct(cin, cout, 1)
        self.wide = SeparableConvBNAct(cout, cout, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return x + self.wide(x)


class LightDecoderBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.fuse = SeparableConvBNAct(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([upsample_like(x, skip), skip], 1))


class DBDStudent(EncoderDecoderNet):
    # The stem and first inverted residual cost most of the int8 map's accuracy (see docs/export.md).
    int8_float_modules = ("encoder.features.0", "encoder.features.1")

    def __init__(
        self,
        encoder: str = "mobilenetv2_100",
        pretrained: bool = False,
        context_channels: int = 96,
        decoder_channels: tuple[int, ...] = (96, 64, 48, 32),
        **options: bool,  # decoder options (models/decoder.py): srfb, sab, separated_attention, connectivity, ...
    ):
        backbone = create_model(encoder, pretrained=pretrained, features_only=True)
        super().__init__(
            backbone,
            LightContext(backbone.feature_info[-1]["channels"], context_channels),
            context_channels,
            LightDecoderBlock,
            decoder_channels,
            nn.Conv2d(decoder_channels[-1], 1, 1),
            **options,
        )


@register_model
def dbd_student(pretrained: bool = False, **config) -> DBDStudent:
    """Student: MobileNetV2 + light context + separable top-down decoder (pretrained: ImageNet encoder)."""
    return DBDStudent(pretrained=pretrained, **config)
