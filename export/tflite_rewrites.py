"""Exact rewrites of a network for TFLite's kernels: same function, faster graph.

`rewrite_for_tflite` applies both, checks the rewritten network against the original on a random
input, and falls back to the original graph where a rewrite does not apply or does not agree.

1. The input normalisation, folded into the network's first convolution (`fold_input`).

A camera-native graph takes plain pixels and normalises them itself: x * scale + bias per channel.
As two elementwise ops (MUL, ADD) over a 320×320×3 tensor with a 3-wide broadcast, XNNPACK spends
16 % of the int8 student's time on them (`dbd-bench --profile`, docs/benchmarks.md). The first
convolution is linear, so the affine step can live in its weights instead:

    conv(W, pad0(x * s + b)) = conv(W * s, pad_p(x)) + Σ W · b,   p = -b / s (the pixel value that
                                                                   normalises to 0, i.e. the mean)

The one catch is the padding: the network zero-pads the *normalised* input, which in pixel units
is a per-channel constant p, and TFLite pads with one scalar for all channels. So the folded
convolution pads explicitly, by concatenating constant rows and columns of p, and then runs
unpadded; the sides its output never reads (stride 2 on an even size reads no bottom/right pad)
are not padded at all. The result equals the unfolded graph up to float32 rounding; `fold_input`
checks that on a random input and returns None (keep the multiply-add) when it does not, e.g. for
a network that uses its input anywhere but in one plain `nn.Conv2d`.

2. The final upsample of the one-channel logit map, made separable (`SeparableUpsample`). XNNPACK
resizes NHWC with the channels as its vector lanes; a one-channel 160→320 map is a scalar loop
(1.5 ms, 10 % of the int8 file). Bilinear resizing with half-pixel centres is separable, so the
map is resized along its rows with its columns as channels, transposed, and resized along its
columns with its rows as channels: two vectorised resizes and two small matrix transposes, the
same values up to float32 rounding (in int8, one extra rounding to the map's quantisation step).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dbd.models.layers import BilinearUpsample, upsample_like

from .mixed_precision import trace_calls

TOLERANCE = 1e-4  # max |Δ P(blur)| between the rewritten and the original network on a random input


class PixelInputConv(nn.Module):
    """`conv` applied to normalised pixels, computed from plain pixels (NCHW, float)."""

    def __init__(self, conv: nn.Conv2d, scale: np.ndarray, bias: np.ndarray, size: tuple[int, int]):
        super().__init__()
        s = torch.as_tensor(scale, dtype=torch.float64).view(1, 3, 1, 1)
        b = torch.as_tensor(bias, dtype=torch.float64).view(1, 3, 1, 1)
        weight = conv.weight.detach().double()
        folded_bias = (weight * b).sum((1, 2, 3))
        if conv.bias is not None:
            folded_bias = folded_bias + conv.bias.detach().double()
        self.conv = nn.Conv2d(3, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, bias=True)
        self.conv.weight.data = (weight * s).float()
        self.conv.bias.data = folded_bias.float()
        # Pad only what the output reads: (before, after) per axis, from the conv's own padding.
        self.pads = []
        for n, k, st, d, p in zip(size, conv.kernel_size, conv.stride, conv.dilation, conv.padding):
            out = (n + 2 * p - d * (k - 1) - 1) // st + 1
            self.pads.append((p, max((out - 1) * st + d * (k - 1) + 1 - n - p, 0)))
        # The padding as constant tensors of their full size: a converter turns `expand` into a
        # BROADCAST_TO that LiteRT cannot prepare here.
        fill = (-b / s).float()  # (1, 3, 1, 1): the pixel value of a zero normalised input
        (top, bottom), (left, right) = self.pads
        h, w = size
        for name, rows, cols in (
            ("pad_top", top, w),
            ("pad_bottom", bottom, w),
            ("pad_left", h + top + bottom, left),
            ("pad_right", h + top + bottom, right),
        ):
            self.register_buffer(name, fill.expand(1, 3, rows, cols).contiguous())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        for before, after, axis in ((self.pad_top, self.pad_bottom, 2), (self.pad_left, self.pad_right, 3)):
            parts = [t if n == 1 else t.expand(n, -1, -1, -1) for t in (before, after)]
            pixels = torch.cat([t for t in (parts[0], pixels, parts[1]) if t.shape[axis]], axis)
        return self.conv(pixels)


def _input_conv(model: nn.Module, x: torch.Tensor) -> str | None:
    """The qualified name of the one plain zero-padded Conv2d that reads the model's input tensor
    itself, None when there is not exactly one."""
    readers: list[str] = []

    def on_call(name, module, stack, args):
        if args and args[0] is x:
            readers.append(name)

    trace_calls(model, x, on_call)
    # The model itself and containers (a Sequential whose first layer is the conv) also receive x.
    convs = [n for n in readers if type(model.get_submodule(n)) is nn.Conv2d]
    if len(convs) != 1:
        return None
    conv = model.get_submodule(convs[0])
    plain = conv.padding_mode == "zeros" and conv.groups == 1 and conv.in_channels == 3
    return convs[0] if plain and not isinstance(conv.padding, str) else None


def fold_input(model: nn.Module, scale: np.ndarray, bias: np.ndarray, size: tuple[int, int]) -> nn.Module | None:
    """A copy of `model` that takes plain pixels (NCHW) with `x * scale + bias` folded into its input
    convolution, or None where there is no single plain input convolution (the module docstring)."""
    name = _input_conv(model, torch.rand(1, 3, *size))
    if name is None:
        return None
    folded = copy.deepcopy(model).eval()
    _replace(folded, name, PixelInputConv(model.get_submodule(name), scale, bias, size))
    return folded


class SeparableUpsample(nn.Module):
    """Bilinear resize (half-pixel centres) of a (1, 1, H, W) map to the size of `like`, as two 1-D
    resizes whose channels are the other axis; any other tensor is resized as one op."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        h, w = like.shape[-2:]
        if tuple(x.shape[:2]) != (1, 1) or tuple(x.shape[-2:]) == (h, w):
            return upsample_like(x, like)
        rows = F.interpolate(x.permute(0, 3, 2, 1), size=(h, 1), mode="bilinear", align_corners=False)  # (1, W, h, 1)
        both = F.interpolate(
            rows.permute(0, 2, 1, 3), size=(w, 1), mode="bilinear", align_corners=False
        )  # (1, h, w, 1)
        return both.permute(0, 3, 1, 2)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def rewrite_for_tflite(model: nn.Module, scale: np.ndarray, bias: np.ndarray, size: tuple[int, int]):
    """(network taking plain NCHW pixels, the rewrites applied): the original behind `x * scale +
    bias` where no rewrite applies, or where the rewritten network disagrees with it by more than
    TOLERANCE on a random input."""
    s = torch.as_tensor(scale, dtype=torch.float32).view(1, 3, 1, 1)
    b = torch.as_tensor(bias, dtype=torch.float32).view(1, 3, 1, 1)
    normalised = NormalisedInput(model, s, b)
    folded = fold_input(model, scale, bias, size)  # a copy of the model, or None
    network = folded if folded is not None else copy.deepcopy(model)
    applied = ["normalisation folded into the input convolution"] if folded is not None else []
    if isinstance(getattr(network, "upsample_logits", None), BilinearUpsample):
        network.upsample_logits = SeparableUpsample()
        applied.append("final upsample separable")
    if not applied:
        return normalised, []
    rewritten = network if folded is not None else NormalisedInput(network, s, b)
    x = torch.rand(1, 3, *size) * 255
    with torch.no_grad():
        agree = (rewritten(x) - normalised(x)).abs().max().item() <= TOLERANCE
    return (rewritten, applied) if agree else (normalised, [])


class NormalisedInput(nn.Module):
    """`model` behind the per-channel multiply-add: plain NCHW pixels in."""

    def __init__(self, model: nn.Module, scale: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels * self.scale + self.bias)


__all__ = ["TOLERANCE", "NormalisedInput", "PixelInputConv", "SeparableUpsample", "fold_input", "rewrite_for_tflite"]
