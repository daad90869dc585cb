"""The student: a compact DBD network for phones (<= 1 GMAC, <= 4 M parameters at 320x320).

MobileNetV2 encoder -> light multi-scale context -> a top-down decoder of depthwise-separable
convs over concatenated skips -> one-channel logits -> bilinear upsampling -> sigmoid. Only ops
that TFLite, CoreML and ONNX run natively in int8: conv, depthwise conv (also dilated), ReLU/ReLU6,
add, concat, bilinear resize and sigmoid, with static shapes.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import DBDNet, DBDOutput
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


class DBDStudent(DBDNet):
    # The stem and first inverted residual (160x160, 42 of 700 MMAC) cost ~6 dB of int8 map PSNR.
    int8_float_modules = ("encoder.features.0", "encoder.features.1")

    def __init__(self, encoder: str = "mobilenetv2_100", pretrained: bool = False,
                 context_channels: int = 96, decoder_channels: tuple[int, ...] = (96, 64, 48, 32),
                 connectivity: bool = False):
        super().__init__()
        self.encoder = create_model(encoder, pretrained=pretrained, features_only=True)
        skips = [f["channels"] for f in self.encoder.feature_info]     # strides 2, 4, 8, 16, 32
        self.context = LightContext(skips[4], context_channels)
        chans = (context_channels, *decoder_channels)
        self.decoder = nn.ModuleList(LightDecoderBlock(chans[i], skips[3 - i], chans[i + 1]) for i in range(4))
        self.side_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in chans[:4])   # training only
        self.head = nn.Conv2d(decoder_channels[3], 1, 1)
        # Relation-aware network: 8-direction connectivity, supervised in training only (never exported).
        self.connectivity_head = nn.Conv2d(decoder_channels[3], 8, 1) if connectivity else None
        self.feature_channels = tuple(decoder_channels[:3])
        self.pretrained_cfg = {**self.encoder.pretrained_cfg, "input_size": (320, 320)}

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        c2, c4, c8, c16, c32 = self.encoder(x)
        d = self.context(c32)
        stages = [d]
        for block, skip in zip(self.decoder, (c16, c8, c4, c2)):
            d = block(d, skip)
            stages.append(d)
        return upsample_like(self.head(d), x), stages

    def forward_train(self, x: torch.Tensor) -> DBDOutput:
        logits, stages = self._decode(x)
        sides = [upsample_like(head(s), x) for head, s in zip(self.side_heads, stages)]
        connectivity = upsample_like(self.connectivity_head(stages[-1]), x) if self.connectivity_head is not None else None
        return DBDOutput(logits, sides, stages[1:4], connectivity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The exported path: no side heads in the graph.
        return torch.sigmoid(self._decode(x)[0])


@register_model
def dbd_student(pretrained: bool = False, **config) -> DBDStudent:
    """Student: MobileNetV2 + light context + separable top-down decoder (pretrained: ImageNet encoder)."""
    return DBDStudent(pretrained=pretrained, **config)
