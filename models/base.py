"""What every DBD network shares: the output convention and the training-time outputs.

`forward(x)` returns the probability that each pixel is BLURRED (1 = out of focus), at the input
resolution: the one tensor that gets exported. `forward_train(x)` returns logits (for numerically
stable BCE), the deep-supervision side outputs and the decoder features that distillation matches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DBDOutput:
    logits: torch.Tensor              # (B, 1, H, W) at the input resolution
    side_logits: list[torch.Tensor]   # deep supervision, each (B, 1, H, W), deepest first
    features: list[torch.Tensor]      # decoder features at strides 16, 8, 4 (for distillation)
    connectivity: torch.Tensor | None = None   # (B, 8, H, W) logits: is each of the 8 neighbours the same class?


class DBDNet(nn.Module):
    # Decoder feature channels at strides 16, 8, 4, in the order of DBDOutput.features.
    feature_channels: tuple[int, ...] = ()
    # Modules int8 exports keep in float because quantising them costs most of the accuracy
    # (measured per architecture; see dbd.export.mixed_precision).
    int8_float_modules: tuple[str, ...] = ()

    def forward_train(self, x: torch.Tensor) -> DBDOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_train(x).logits)
