"""Conditional PatchGAN discriminator for adversarial training of blur maps.

It sees the (normalised) image and a blur map together, so it judges whether the map is
plausible *for this image* — region boundaries that follow image edges, consistent blur within
objects — not just whether it looks like some mask. Spectral norm keeps its gradients tame.

Width 16 (0.18 M parameters) keeps the two discriminators cheaper than the student's own backward,
for loss terms weighted 0.01 (why not 32: docs/training.md, "Distillation from cached teacher maps").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .registry import register_model


class PatchDiscriminator(nn.Module):
    def __init__(self, image_channels: int = 3, width: int = 16, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        cin, cout = image_channels + 1, width
        for i in range(layers + 1):
            stride = 2 if i < layers else 1
            blocks += [spectral_norm(nn.Conv2d(cin, cout, 4, stride, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin, cout = cout, min(cout * 2, width * 8)
        blocks.append(spectral_norm(nn.Conv2d(cin, 1, 4, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def example_inputs(self, input_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, 3, *input_size), torch.zeros(1, 1, *input_size)

    def forward(self, image: torch.Tensor, blur_map: torch.Tensor) -> torch.Tensor:
        """Real/fake logits per patch, (B, 1, h, w); `blur_map` is a probability in [0, 1]."""
        return self.net(torch.cat([image, blur_map], 1))


@register_model
def dbd_discriminator(pretrained: bool = False, **config) -> PatchDiscriminator:
    """Conditional PatchGAN on (image, blur map) pairs (no pretrained weights exist)."""
    return PatchDiscriminator(**config)
