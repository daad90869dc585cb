"""The exact graph rewrites the TFLite export applies (dbd.export.tflite_rewrites): each must give
the network's own values, and a network they do not fit must be exported unrewritten."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dbd.export.tflite_flatbuffer import is_layout_transpose
from dbd.export.tflite_rewrites import (
    NormalisedInput,
    PixelInputConv,
    SeparableUpsample,
    fold_input,
    rewrite_for_tflite,
)
from dbd.models import create_model
from dbd.models.layers import upsample_like
from dbd.runtime.spec import PreprocessSpec

SPEC = PreprocessSpec(input_size=(64, 96))
SCALE, BIAS = SPEC.folded_affine()


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    return pixels * torch.tensor(SCALE).float().view(1, 3, 1, 1) + torch.tensor(BIAS).float().view(1, 3, 1, 1)


@pytest.mark.parametrize("stride,size", [(2, (64, 96)), (1, (64, 96)), (2, (33, 35))])
def test_folded_input_conv_equals_the_conv_of_the_normalised_pixels_with_its_zero_padding(stride, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride, padding=1, bias=stride == 1)
    pixels = torch.rand(2, 3, *size) * 255
    folded = PixelInputConv(conv, SCALE, BIAS, size)
    with torch.no_grad():
        want = conv(_normalised(pixels))
        got = folded(pixels)
    assert got.shape == want.shape
    # The border rows and columns are where a zero-padded raw input would differ by ~|W·mean/std|.
    assert (got - want).abs().max() < 1e-4
    if stride == 2 and size[0] % 2 == 0:
        assert folded.pads == [(1, 0), (1, 0)]  # stride 2 on an even size never reads the bottom/right pad


def test_the_student_folds_its_normalisation_and_keeps_its_values():
    torch.manual_seed(0)
    model = create_model("dbd_student").eval()
    pixels = torch.rand(1, 3, *SPEC.input_size) * 255
    rewritten, applied = rewrite_for_tflite(model, SCALE, BIAS, SPEC.input_size)
    assert applied == ["normalisation folded into the input convolution", "final upsample separable"]
    with torch.no_grad():
        assert (rewritten(pixels) - model(_normalised(pixels))).abs().max() < 1e-5
    assert any(isinstance(m, PixelInputConv) for m in rewritten.modules())
    assert not any(isinstance(m, PixelInputConv) for m in model.modules())  # the original is untouched


class _InputUsedTwice(nn.Module):
    """A network that reads its input outside its first conv: folding would change its values."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x) + x.mean(1, keepdim=True))


def test_a_network_the_fold_does_not_fit_is_exported_behind_the_plain_multiply_add():
    model = _InputUsedTwice().eval()
    assert fold_input(model, SCALE, BIAS, SPEC.input_size) is not None  # one conv reads x ...
    rewritten, applied = rewrite_for_tflite(model, SCALE, BIAS, SPEC.input_size)
    assert applied == [] and isinstance(rewritten, NormalisedInput)  # ... but the check refuses it
    pixels = torch.rand(1, 3, *SPEC.input_size) * 255
    with torch.no_grad():
        assert torch.equal(rewritten(pixels), model(_normalised(pixels)))


@pytest.mark.parametrize("src,dst", [((160, 160), (320, 320)), ((37, 53), (100, 90)), ((10, 10), (7, 13))])
def test_separable_upsample_equals_the_bilinear_resize(src, dst):
    torch.manual_seed(0)
    x = torch.randn(1, 1, *src) * 4
    like = torch.zeros(1, 3, *dst)
    got = SeparableUpsample()(x, like)
    assert got.shape == (1, 1, *dst)
    assert (got - upsample_like(x, like)).abs().max() < 1e-5


def test_separable_upsample_leaves_feature_maps_to_the_one_op_resize():
    x = torch.randn(2, 4, 10, 10)
    assert torch.equal(SeparableUpsample()(x, torch.zeros(1, 1, 20, 20)), upsample_like(x, (20, 20)))


def test_a_matrix_transpose_is_not_taken_for_a_layout_change():
    assert is_layout_transpose([0, 3, 1, 2], [1, 40, 40, 16])  # a feature map NHWC -> NCHW
    assert is_layout_transpose([0, 2, 3, 1])  # shape unknown: refused
    assert not is_layout_transpose([0, 3, 1, 2], [1, 320, 1, 160])  # the separable upsample's
    assert not is_layout_transpose([0, 2, 1, 3], [1, 40, 40, 16])  # not NCHW <-> NHWC
