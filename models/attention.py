"""Decoder components from the papers dbd builds on, aimed at where our models fail: region
boundaries and low-texture in-focus regions (docs/training.md has the measured effect of each).

Each one starts as the identity (its last layer, a BatchNorm scale or a 1x1 conv, is zero), so a
trained network fine-tunes with it from exactly the network it was. All use builtin int8 ops only
(conv, depthwise conv, mean, softmax, mul, add, concat, sigmoid, bilinear resize).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNAct, SeparableConvBNAct, upsample_like


def _zero_bn(block: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(block[1].weight)  # ConvBNAct: conv, BN, [act]
    return block


class SelectiveReceptiveField(nn.Module):
    """DD's Selective Receptive-Field Block: depthwise 3x3 branches at several dilations, merged
    by a learned per-channel selection (a softmax across branches from the pooled sum, as in
    SKNet), then projected and added to the input."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 4), reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.branches = nn.ModuleList(ConvBNAct(channels, channels, 3, groups=channels, dilation=d) for d in dilations)
        self.squeeze = ConvBNAct(channels, hidden, 1)
        self.select = nn.Conv2d(hidden, channels * len(dilations), 1)
        self.project = _zero_bn(ConvBNAct(channels, channels, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [b(x) for b in self.branches]
        pooled = sum(branches).mean((2, 3), keepdim=True)
        b, c = x.shape[:2]
        # (B, n*C, 1, 1) -> (B, C, n): the softmax runs on the last axis, as phone runtimes' softmax ops do.
        weights = torch.softmax(self.select(self.squeeze(pooled)).view(b, len(branches), c).transpose(1, 2), dim=-1)
        merged = sum(branch * weights[..., i].view(b, c, 1, 1) for i, branch in enumerate(branches))
        return x + self.project(merged)


class SupervisionGuidedAttention(nn.Module):
    """DD's Supervision-guided Attention Block: the previous level's side output (supervised by
    the mask) becomes an attention map for this level's features: x + proj(x * sigmoid(side))."""

    def __init__(self, channels: int):
        super().__init__()
        self.project = _zero_bn(ConvBNAct(channels, channels, 1, act=None))

    def forward(self, x: torch.Tensor, side_logits: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(upsample_like(side_logits, x))
        return x + self.project(x * attention)


class SeparatedAttention(nn.Module):
    """The Relation-aware network's separated attention: a normal-attention stream sees the
    features where the coarse map says clear (1 - p), a reverse-attention stream where it says
    blurred (p); their fusion corrects the logits: low-texture in-focus regions and boundaries
    get a stream of their own instead of sharing one with the blurred background."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 2, 8)
        self.clear = SeparableConvBNAct(channels, inner)
        self.blurred = SeparableConvBNAct(channels, inner)
        self.fuse = nn.Conv2d(2 * inner, 1, 1)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(upsample_like(logits, x))
        streams = torch.cat([self.clear(x * (1 - p)), self.blurred(x * p)], 1)
        return logits + upsample_like(self.fuse(streams), logits)
