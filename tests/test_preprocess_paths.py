"""One preprocessing implementation (issue 14): the same real photo, sent through every path that
turns pixels into a model input — the runners (a checkpoint, an NCHW and an NHWC export), export
calibration, training's dataset, evaluation, the Predictor and TTA — reaches the model as the very
same tensor, bit for bit, the one PreprocessSpec.preprocess computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dbd.evaluation.scoring import evaluate
from dbd.evaluation.tta import TTARecipe, TTARunner
from dbd.export.calibration import normalised_nchw, open_calibration_dataset, select_images
from dbd.models.shipped import released_checkpoint
from dbd.runtime.metadata import encode_input
from dbd.runtime.predictor import Predictor
from dbd.runtime.runners import TorchRunner, open_runner
from dbd.training.data import AugmentedPairs, PairCache


@pytest.fixture(scope="module")
def student() -> TorchRunner:
    return TorchRunner(released_checkpoint("dbd_student"), threads=1)


@pytest.fixture(scope="module")
def calibration(student, data_root):
    """The int8 calibration set of CUHK's training split, as dbd-export picks it (one image)."""
    dataset = open_calibration_dataset("cuhk")
    calib, _ = select_images(dataset, student.spec, 1, 1, "cuhk:train")
    return dataset, calib


@pytest.fixture(scope="module")
def photo_and_mask(calibration) -> tuple[np.ndarray, np.ndarray]:
    """The first calibration photo, decoded as every path decodes it: a real, non-square photo."""
    dataset, calib = calibration
    index = [s.name for s in dataset.samples].index(calib.names[0])
    image, mask = dataset[index]
    assert image.dtype == np.uint8 and image.shape[0] != image.shape[1]  # the resize really stretches
    return image, mask


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """The shipped student exported afresh (fp32 ONNX and TFLite, as dbd-export writes them): a
    fresh checkout has no exports/ folder until `dbd-export` runs."""
    from dbd.export import export_model

    out = tmp_path_factory.mktemp("exports")
    report = export_model(formats="onnx,tflite", precisions="fp32", out=out, calib_n=1, parity_n=2)
    assert report.ok, [(o.format, o.error, o.failures) for o in report.failed]
    return out


def _exported(exports: Path, name: str):
    return open_runner(exports / name, threads=1)


def test_checkpoint_runner_feeds_the_network_the_spec_tensor(student, photo_and_mask):
    photo, _ = photo_and_mask
    tensor = student.spec.preprocess(photo)
    assert student.spec.layout == "NCHW" and tensor.shape == (1, 3, *student.spec.input_size)
    assert np.array_equal(student.model_inputs([photo])[0], student.spec.model_input(photo))
    assert np.array_equal(student.encode(student.model_inputs([photo])), tensor)


def test_nchw_export_is_fed_the_spec_tensor(student, photo_and_mask, exports):
    photo, _ = photo_and_mask
    onnx = _exported(exports, "dbd_student_320_fp32.onnx")
    assert onnx.info["input"]["layout"] == "NCHW" and onnx.info["input"]["normalization"] == "external"
    assert onnx.spec.input_size == student.spec.input_size
    fed = encode_input(onnx.info, onnx.model_inputs([photo]))  # exactly what OnnxRunner.run feeds
    assert np.array_equal(fed, onnx.spec.preprocess(photo))
    assert np.array_equal(fed, student.spec.preprocess(photo))  # the checkpoint it was exported from


def test_nhwc_export_is_fed_the_spec_pixels_and_folds_the_same_normalisation(student, photo_and_mask, exports):
    """The TFLite file takes plain pixels NHWC and normalises in its graph (FoldedPixels, with
    PreprocessSpec.folded_affine): its feed is the spec's resized pixels, and the folded multiply-add
    equals the spec's normalisation up to float32 rounding."""
    photo, _ = photo_and_mask
    tflite = _exported(exports, "dbd_student_320_fp32.tflite")
    spec = tflite.spec
    assert tflite.info["input"]["layout"] == spec.layout == "NHWC" and tflite.info["input"]["normalization"] == "folded"
    unit = spec.model_input(photo)
    fed = encode_input(tflite.info, tflite.model_inputs([photo]))  # exactly what TFLiteRunner.run feeds
    assert fed.shape == (1, *spec.input_size, 3) and np.array_equal(fed, spec.to_pixels(unit)[None])
    external = spec.preprocess(photo)  # the NHWC spec's own tensor
    assert np.array_equal(external, student.spec.preprocess(photo).transpose(0, 2, 3, 1))
    scale, bias = (v.astype(np.float32) for v in spec.folded_affine())
    assert np.abs(fed * scale + bias - external).max() < 2e-6


def test_calibration_images_are_the_runner_inputs(student, calibration, photo_and_mask):
    photo, _ = photo_and_mask
    _, calib = calibration
    assert np.array_equal(calib.unit[0], student.model_inputs([photo])[0])
    assert np.array_equal(normalised_nchw(calib.unit[:1], student.spec), student.spec.preprocess(photo))


def test_training_tensor_without_augmentation_is_the_runner_input(student, photo_and_mask):
    photo, mask = photo_and_mask
    pairs = PairCache([(photo, mask)], ["photo"])
    size = student.spec.input_size[0]
    x, y = AugmentedPairs(pairs, student.spec, size, seed=0, augment=False)[0]
    assert torch.equal(x, torch.from_numpy(student.spec.preprocess(photo)[0]))
    assert y.shape == (1, size, size)
    augmented, _ = AugmentedPairs(pairs, student.spec, size, seed=0)[0]
    assert augmented.shape == x.shape and not torch.equal(augmented, x)


def test_evaluation_scores_the_model_on_the_spec_tensor(student, photo_and_mask):
    photo, mask = photo_and_mask
    _, maps = evaluate(student, [(photo, mask)], batch=1, keep_maps=True)
    direct = student.run(student.spec.model_input(photo)[None])
    assert np.array_equal(maps, direct)


def test_predictor_feeds_the_spec_tensor_and_returns_the_spec_map(student, photo_and_mask):
    photo, _ = photo_and_mask
    predictor = Predictor(threads=1)  # the shipped student, as users call it
    assert predictor.spec == student.spec
    unit = predictor._model_input(photo)
    assert np.array_equal(predictor.runner.encode(unit[None]), student.spec.preprocess(photo))
    expected = student.spec.postprocess(student.run(student.spec.model_input(photo)[None])[0], photo)
    assert np.array_equal(predictor.predict(photo), expected)


def test_tta_at_the_spec_size_is_the_plain_model(student, photo_and_mask):
    photo, _ = photo_and_mask
    model_map, photo_map = student.predict_photos([photo])
    tta = TTARunner([student], TTARecipe((student.spec.input_size[0],), False))
    tta_model_map, tta_photo_map = tta.predict_photos([photo])
    assert np.array_equal(tta_photo_map[0], photo_map[0])
    assert np.array_equal(tta_model_map[0], student.spec.resize_image(photo_map[0]))


def test_a_capture_downscaler_replaces_only_the_resize_to_the_model(student, photo_and_mask):
    # robustness scoring: another kernel brings the photo to the model, but the map is still refined
    # at the photo's resolution with the photo itself as the guide
    from dbd.data.capture import downscale

    photo, _ = photo_and_mask
    maps, photo_maps = student.predict_photos([photo], downscaler="pil_bilinear")
    expected_input = student.spec.to_unit(downscale(photo, student.size, "pil_bilinear"))
    assert np.array_equal(maps[0], student.run(expected_input[None])[0])
    assert photo_maps[0].shape == photo.shape[:2]
    assert np.array_equal(photo_maps[0], student.spec.postprocess(maps[0], photo))
