"""The teacher: a large, accurate DBD network (not meant for phones).

EfficientNet-Lite2 encoder -> multi-scale context (ASPP) and non-local self-attention on the
high-level features -> U-Net decoder with deep supervision. These are the ingredients of
Distill-DBDGAN's teacher: defocus is judged relative to the whole scene (non-local) and across
blur scales (dilated branches), while the decoder recovers sharp region boundaries.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import EncoderDecoderNet
from .layers import ConvBNAct, upsample_like
from .registry import create_model, register_model


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated 3x3 branches plus global image context."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList([ConvBNAct(cin, cout, 1)] + [ConvBNAct(cin, cout, 3, dilation=r) for r in rates])
        self.image_pool = ConvBNAct(cin, cout, 1)
        self.project = nn.Sequential(ConvBNAct(cout * (len(rates) + 2), cout, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Broadcast the 1x1 image context by a bilinear resize, not expand(): a phone converter turns
        # expand into a broadcast op its runtime cannot run (docs/export.md).
        pooled = upsample_like(self.image_pool(x.mean((2, 3), keepdim=True)), x)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018): every position attends to all others.

    The output projection's BN starts at zero, so at initialisation the block is the identity and
    does not disturb the pretrained encoder features.
    """

    def __init__(self, channels: int, inner: int | None = None):
        super().__init__()
        inner = inner or channels // 2
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        self.scale = inner**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # B, HW, C'
        k = self.phi(x).flatten(2)  # B, C', HW
        v = self.g(x).flatten(2).transpose(1, 2)  # B, HW, C'
        attn = torch.softmax(q @ k * self.scale, dim=-1)  # B, HW, HW
        y = (attn @ v).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class DecoderBlock(nn.Module):
    """Upsample, concatenate the encoder skip, two 3x3 convs (U-Net)."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.convs = nn.Sequential(ConvBNAct(cin + cskip, cout, 3), ConvBNAct(cout, cout, 3))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([upsample_like(x, skip), skip], 1))


class DBDTeacher(EncoderDecoderNet):
    def __init__(
        self,
        encoder: str = "efficientnet_lite2",
        pretrained: bool = False,
        context_channels: int = 256,
        decoder_channels: tuple[int, ...] = (128, 96, 64, 32),
        **options: bool,  # decoder options (models/decoder.py): srfb, sab, separated_attention, connectivity, ...
    ):
        backbone = create_model(encoder, pretrained=pretrained, features_only=True)
        context = nn.Sequential(
            ASPP(backbone.feature_info[-1]["channels"], context_channels), NonLocalBlock(context_channels)
        )
        head = nn.Sequential(
            ConvBNAct(decoder_channels[-1], decoder_channels[-1], 3), nn.Conv2d(decoder_channels[-1], 1, 1)
        )
        super().__init__(
            backbone,
            context,
            context_channels,
            DecoderBlock,
            decoder_channels,
            head,
            **options,
        )
        # Non-local attention on the first (stride-16) decoder stage as well as on the context.
        self.attention16 = NonLocalBlock(decoder_channels[0])

    def refine_stage(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return self.attention16(x) if level == 0 else x


@register_model
def dbd_teacher(pretrained: bool = False, **config) -> DBDTeacher:
    """Teacher: EfficientNet-Lite2 + ASPP + non-local + U-Net decoder (pretrained: ImageNet encoder)."""
    return DBDTeacher(pretrained=pretrained, **config)
