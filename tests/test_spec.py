"""The preprocessing spec: one contract for pixels -> tensor -> blur map, serialisable into files."""

from __future__ import annotations

import numpy as np
import pytest

from dbd.core import DBDError
from dbd.models import create_model
from dbd.runtime.refine import RefineSpec
from dbd.runtime.spec import PreprocessSpec


def test_spec_round_trips_through_a_plain_dict():
    spec = PreprocessSpec(input_size=(256, 384), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), layout="NHWC")
    data = spec.to_dict()
    assert data["format"] == "dbd-preprocess/1" and data["output"] == "blur_probability"
    assert PreprocessSpec.from_dict(data) == spec


def test_spec_follows_each_model_encoder_normalisation():
    teacher = PreprocessSpec.for_model(create_model("dbd_teacher"))
    student = PreprocessSpec.for_model(create_model("dbd_student"))
    assert teacher.input_size == student.input_size == (320, 320)
    pixels = np.array([[[0, 127, 255]]], np.uint8).repeat(320, 0).repeat(320, 1)
    # EfficientNet-Lite expects (x - 127) / 128 on 0..255 pixels.
    assert np.allclose(teacher.preprocess(pixels)[0, :, 0, 0], [(0 - 127) / 128, 0.0, (255 - 127) / 128], atol=1e-6)
    red = (0 / 255 - 0.485) / 0.229
    assert np.isclose(student.preprocess(pixels)[0, 0, 0, 0], red, atol=1e-6)


def test_preprocess_resizes_and_lays_out_the_tensor():
    image = np.random.default_rng(0).integers(0, 256, (427, 640, 3), dtype=np.uint8)
    nchw = PreprocessSpec().preprocess(image)
    nhwc = PreprocessSpec(layout="NHWC").preprocess(image)
    assert nchw.shape == (1, 3, 320, 320) and nhwc.shape == (1, 320, 320, 3) and nchw.dtype == np.float32
    assert np.array_equal(nchw[0].transpose(1, 2, 0), nhwc[0])


def test_postprocess_without_refinement_maps_back_to_the_photo_resolution_bilinearly():
    prob = np.zeros((1, 1, 320, 320), np.float32)
    prob[..., :, 160:] = 1.0  # right half blurred
    photo = np.zeros((427, 640, 3), np.uint8)
    out = PreprocessSpec(refine=RefineSpec.none()).postprocess(prob, photo)
    assert out.shape == (427, 640) and out[:, :300].max() == 0 and out[:, 340:].min() == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"input_size": (300, 320)}, "multiples of 32"),
        ({"std": (0.2, 0.0, 0.2)}, "positive stds"),
        ({"layout": "CHW"}, "layout"),
        ({"output": "sharp_probability"}, "output"),
    ],
)
def test_invalid_spec_values_are_rejected(bad, message):
    with pytest.raises(DBDError, match=message):
        PreprocessSpec(**bad)


def test_spec_from_an_unknown_format_or_newer_fields_is_rejected():
    data = PreprocessSpec().to_dict()
    with pytest.raises(DBDError, match="format"):
        PreprocessSpec.from_dict({**data, "format": "other/9"})
    with pytest.raises(DBDError, match="unknown fields"):
        PreprocessSpec.from_dict({**data, "letterbox": True})


def test_preprocess_rejects_non_rgb_uint8_input():
    with pytest.raises(DBDError, match="RGB uint8"):
        PreprocessSpec().preprocess(np.zeros((10, 10), np.uint8))
