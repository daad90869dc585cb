"""Blur-map metrics against values counted by hand on tiny maps (1 = blur unless stated)."""

from __future__ import annotations

import numpy as np
import pytest

from dbd.core import DBDError
from dbd.evaluation.metrics import BlurMapMetrics, adaptive_threshold, resize_to


def a(rows) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


def score(pairs, **kw) -> dict[str, float]:
    m = BlurMapMetrics(**kw)
    for pred, gt in pairs:
        m.update(a(pred), a(gt))
    return m.compute()


def test_mae_is_per_image_mean_abs_error_averaged_over_images():
    # image 1 |pred - gt| = 0, .5, 0, .25 / .25, 0, 0, 0 -> 1.0 / 8 = 0.125
    # image 2 |pred - gt| = .5, .5 -> 0.5 ; mean over images = (0.125 + 0.5) / 2
    r = score(
        [
            ([[1, 0.5, 0, 0.25], [0.75, 1, 0, 0]], [[1, 1, 0, 0], [1, 1, 0, 0]]),
            ([[0.5, 0.5]], [[0, 0]]),
        ]
    )
    assert r["mae"] == pytest.approx(0.3125)
    assert r["n_images"] == 2


def test_fixed_fbeta_binarises_pred_at_half_inclusive():
    # gt   1  1  1  1 | 0  0  0  0
    # pred .9 .6 .5 .2 | .7 .8 0 .4  -> >= .5: 1 1 1 0 | 1 1 0 0
    # TP = 3, FP = 2, FN = 1 -> P = 3/5, R = 3/4
    # F = 1.3 * .6 * .75 / (.3 * .6 + .75) = .585 / .93
    r = score([([[0.9, 0.6, 0.5, 0.2], [0.7, 0.8, 0.0, 0.4]], [[1, 1, 1, 1], [0, 0, 0, 0]])])
    assert r["fbeta_fixed"] == pytest.approx(0.585 / 0.93)


def test_no_positive_pixels_scores_zero_like_py_sod_metrics():
    # mask without blur and a perfect all-sharp prediction: P = 0/0 := 0, R = 0/0 := 0, F := 0.
    r = score([([[0.1, 0.2], [0.0, 0.3]], [[0, 0], [0, 0]])])
    assert r["fbeta_fixed"] == 0.0
    assert r["fbeta_adaptive"] == 0.0
    assert r["fbeta_max"] == 0.0
    assert r["iou"] == 0.0  # empty pooled union := 0
    assert r["mae"] == pytest.approx(0.15)


def test_adaptive_threshold_is_twice_the_mean_and_differs_from_fixed():
    # pred sum = .75 + .5 + .375 + .125 + .25 + .125 + 0 + .125 = 2.25, mean .28125 -> t = .5625
    pred = [[0.75, 0.5, 0.375, 0.125], [0.25, 0.125, 0.0, 0.125]]
    gt = [[1, 1, 1, 0], [0, 0, 0, 0]]
    assert adaptive_threshold(a(pred)) == 0.5625
    # adaptive: only .75 >= .5625 -> TP 1, FP 0, FN 2 -> P 1, R 1/3 -> F = (1.3/3) / (1.9/3) = 13/19
    # fixed:    .75, .5 >= .5     -> TP 2, FP 0, FN 1 -> P 1, R 2/3 -> F = (2.6/3) / (2.9/3) = 26/29
    r = score([(pred, gt)])
    assert r["fbeta_adaptive"] == pytest.approx(13 / 19)
    assert r["fbeta_fixed"] == pytest.approx(26 / 29)


def test_adaptive_threshold_is_capped_at_one():
    # mean .75 -> 2 * mean = 1.5 -> t = 1: only the pixel at exactly 1.0 is positive.
    pred = [[1.0, 0.5, 1.0, 0.5]]
    assert adaptive_threshold(a(pred)) == 1.0
    # gt 1 1 0 0, binary 1 0 1 0 -> TP 1, FP 1, FN 1 -> P = R = .5 -> F = .5
    assert score([(pred, [[1, 1, 0, 0]])])["fbeta_adaptive"] == pytest.approx(0.5)


def test_max_fbeta_is_f_of_dataset_mean_precision_and_recall():
    # 256 thresholds k/255; level = floor(255 * pred): 0.8 -> 204, 0.4 -> 102, 0 -> 0.
    # A: gt 1 1 0 0, pred .8 .4 .4 0      B: gt 1 0 0 0, pred .4 .8 0 0
    # k = 0       : A TP2/PP4 P=.5  R=1   B TP1/PP4 P=.25 R=1 -> mean P .375, R 1
    # k = 1..102  : A TP2/PP3 P=2/3 R=1   B TP1/PP2 P=.5  R=1 -> mean P 7/12, R 1
    #               F = 1.3 * 7/12 / (.3 * 7/12 + 1) = 9.1 / 14.1 = 91/141      <- the max
    # k = 103..204: A TP1/PP1 P=1 R=.5    B TP0/PP1 P=0 R=0   -> mean P .5, R .25, F = .40625
    # k = 205..255: no predicted positives: P = R = 0 -> F = 0
    A = ([[0.8, 0.4, 0.4, 0.0]], [[1, 1, 0, 0]])
    B = ([[0.4, 0.8, 0.0, 0.0]], [[1, 0, 0, 0]])
    m = BlurMapMetrics()
    for pred, gt in (A, B):
        m.update(a(pred), a(gt))
    assert m.compute()["fbeta_max"] == pytest.approx(91 / 141)
    c = m.curves()
    assert c["precision"][0] == pytest.approx(0.375)
    np.testing.assert_allclose(c["precision"][1:103], 7 / 12)
    np.testing.assert_allclose(c["fbeta"][103:205], 0.40625)
    np.testing.assert_allclose(c["fbeta"][205:], 0.0)
    # Not py_sod_metrics' "max of the mean per-image F curve": (F_A + F_B)/2 at k = 1..102
    # = (0.8667/1.2 + 0.65/1.15) / 2 = 0.6437 < 91/141 = 0.6454
    assert m.compute()["fbeta_max"] != pytest.approx((1.3 * 2 / 3 / 1.2 + 0.65 / 1.15) / 2)


def test_iou_is_pooled_over_images_not_averaged():
    # A: gt 1 1 1 1, pred>=.5 1 1 1 0 -> I 3, U 4 (per-image .75)
    # B: gt 1 0 0 0, pred>=.5 0 1 0 0 -> I 0, U 2 (per-image 0)
    # pooled (3 + 0) / (4 + 2) = .5 ; mean of per-image would be .375
    r = score(
        [
            ([[0.9, 0.8, 0.7, 0.1]], [[1, 1, 1, 1]]),
            ([[0.2, 0.9, 0.1, 0.0]], [[1, 0, 0, 0]]),
        ]
    )
    assert r["iou"] == pytest.approx(0.5)
    assert r["iou"] != pytest.approx(0.375)


def test_positive_sharp_flips_prediction_and_mask():
    pair = ([[0.9, 0.2, 0.1, 0.1]], [[1, 1, 0, 0]])
    # blur : binary 1 0 0 0 vs gt 1 1 0 0 -> TP1 FP0 FN1 -> P 1, R .5 -> F .65/.8 ; IoU 1/2
    #        adaptive t = 2 * 1.3/4 = .65 -> same binary -> .8125
    # sharp: 1-pred .1 .8 .9 .9 -> 0 1 1 1 vs 0 0 1 1 -> TP2 FP1 FN0 -> P 2/3, R 1
    #        F = 1.3 * 2/3 / (.2 + 1) = 13/18 ; IoU 2/3 ; adaptive t = min(2 * .675, 1) = 1 -> F 0
    # MAE (.1 + .8 + .1 + .1) / 4 = .275 for both.
    blur = score([pair])
    sharp = score([pair], positive="sharp")
    assert blur["fbeta_fixed"] == pytest.approx(0.8125)
    assert blur["iou"] == pytest.approx(0.5)
    assert blur["fbeta_adaptive"] == pytest.approx(0.8125)
    assert sharp["fbeta_fixed"] == pytest.approx(13 / 18)
    assert sharp["iou"] == pytest.approx(2 / 3)
    assert sharp["fbeta_adaptive"] == 0.0
    assert blur["mae"] == pytest.approx(0.275) and sharp["mae"] == pytest.approx(0.275)


def test_positive_sharp_equals_blur_metrics_on_inverted_inputs():
    rng = np.random.default_rng(0)
    # values on a 1/16 grid, so 1 - (1 - p) == p exactly and no threshold sees round-off
    preds = [rng.integers(0, 17, (6, 7)) / 16 for _ in range(3)]
    gts = [rng.integers(0, 2, (6, 7)).astype(np.float64) for _ in range(3)]
    sharp = score(zip(preds, gts), positive="sharp")
    flipped = score(zip([1 - p for p in preds], [1 - g for g in gts]))
    assert sharp.keys() == flipped.keys()
    for k in sharp:
        assert sharp[k] == pytest.approx(flipped[k], abs=1e-12), k


def test_prediction_is_resized_to_mask_resolution():
    # pred 4x4 columns 1, .5, 0, 0 -> bilinear 2x down: columns (1 + .5)/2 = .75 and 0
    # gt 2x2 columns 1, 0 -> MAE = (.25 + 0 + .25 + 0) / 4 = .125 ; at 0.5: perfect F and IoU
    pred = np.tile([1.0, 0.5, 0.0, 0.0], (4, 1))
    gt = a([[1, 0], [1, 0]])
    np.testing.assert_allclose(resize_to(pred, gt.shape), [[0.75, 0.0], [0.75, 0.0]])
    m = BlurMapMetrics()
    m.update(pred, gt)
    r = m.compute()
    assert r["mae"] == pytest.approx(0.125)
    assert r["fbeta_fixed"] == pytest.approx(1.0)
    assert r["iou"] == pytest.approx(1.0)


def test_resize_to_takes_height_width_and_is_noop_at_same_shape():
    pred = np.random.default_rng(1).random((2, 4))
    assert resize_to(pred, (2, 4)) is pred
    up = resize_to(pred, (4, 8))
    assert up.shape == (4, 8) and up.dtype == np.float32
    assert up.min() >= 0.0 and up.max() <= 1.0


def test_curves_have_one_value_per_threshold_and_monotone_recall():
    rng = np.random.default_rng(2)
    m = BlurMapMetrics(num_thresholds=64)
    for _ in range(3):
        gt = np.zeros((8, 8))
        gt[:, :4] = 1
        m.update(np.clip(gt * 0.6 + rng.random((8, 8)) * 0.4, 0, 1), gt)
    c = m.curves()
    assert set(c) == {"thresholds", "precision", "recall", "fbeta"}
    for v in c.values():
        assert v.shape == (64,)
    assert c["thresholds"][0] == 0.0 and c["thresholds"][-1] == 1.0
    assert np.all(np.diff(c["thresholds"]) > 0)
    assert np.all(np.diff(c["recall"]) <= 0)
    assert c["recall"][0] == 1.0  # threshold 0 keeps every pixel
    assert m.compute()["fbeta_max"] == pytest.approx(c["fbeta"].max())


@pytest.mark.parametrize(
    "pred, gt",
    [
        (np.zeros((2, 2, 1)), np.zeros((2, 2))),  # pred not 2-D
        (np.zeros((2, 2)), np.zeros((1, 2, 2))),  # gt not 2-D
        (np.array([[0.5, np.nan]]), np.zeros((1, 2))),  # NaN
        (np.array([[0.5, 1.5]]), np.zeros((1, 2))),  # above 1
        (np.array([[-0.1, 0.5]]), np.zeros((1, 2))),  # below 0
        (np.zeros((2, 2)), np.full((2, 2), 255.0)),  # 8-bit mask
        (np.zeros((2, 2)), np.zeros((0, 0))),  # empty gt
    ],
)
def test_bad_inputs_raise_dbd_error(pred, gt):
    m = BlurMapMetrics()
    with pytest.raises(DBDError):
        m.update(pred, gt)
    with pytest.raises(DBDError):  # nothing half-recorded
        m.compute()


def test_unknown_positive_class_raises_one_line_dbd_error():
    with pytest.raises(DBDError) as err:
        BlurMapMetrics(positive="foreground")
    assert "\n" not in str(err.value) and "sharp" in str(err.value)


def test_compute_without_images_raises_dbd_error():
    with pytest.raises(DBDError):
        BlurMapMetrics().compute()


def test_normalize_option_min_max_scales_prediction_like_py_sod_metrics():
    # pred .125 .25 .375 -> min-max -> 0 .5 1 ; gt 0 1 1 -> MAE (0 + .5 + 0)/3 = 1/6
    # fixed 0.5: binary 0 1 1 -> perfect -> F 1 (unnormalised: nothing >= .5 -> F 0)
    pair = ([[0.125, 0.25, 0.375]], [[0, 1, 1]])
    r = score([pair], normalize=True)
    assert r["mae"] == pytest.approx(1 / 6)
    assert r["fbeta_fixed"] == pytest.approx(1.0)
    assert score([pair])["fbeta_fixed"] == 0.0


def test_literature_metrics_use_each_protocol_positive_class():
    from dbd.evaluation.metrics import LiteratureMetrics

    # 3/4 of the image is blurred (as in most CUHK photos); a confident, correct map (0.9 / 0.1).
    gt = np.zeros((4, 4))
    gt[:, 1:] = 1.0
    pred = np.where(gt == 1, 0.9, 0.1)
    lit = LiteratureMetrics()
    lit.update(pred, gt)
    scores = lit.compute()
    assert scores["mae"] == pytest.approx(0.1) and scores["fbeta_fixed"] == pytest.approx(1.0)
    assert scores["iou"] == pytest.approx(1.0)
    # In-focus positive: mean P(sharp) = 0.3, threshold 0.6 -> exactly the sharp column -> F = 1.
    assert scores["fbeta_adaptive"] == pytest.approx(1.0) and scores["fbeta_max"] == pytest.approx(1.0)
    # Blur positive would be degenerate: mean 0.7 -> threshold min(1.4, 1) = 1 -> nothing positive.
    blur_only = BlurMapMetrics(positive="blur")
    blur_only.update(pred, gt)
    assert blur_only.compute()["fbeta_adaptive"] == 0.0


def test_a_new_metric_is_one_entry_in_the_table_that_the_gate_and_reports_follow(monkeypatch, tmp_path):
    """METRICS declares each score's label, direction and tolerance once: a new one (here a
    lower-is-better error rate with a tolerance) is gated, one-sided, with no other edit."""
    from dbd.benchmarks import gate
    from dbd.evaluation.metrics import METRICS, Metric, gated

    monkeypatch.setitem(METRICS, "error_rate", Metric("error_rate", "error rate", False, 0.01))
    assert "error_rate" in gated() and gate.default_tolerances()["error_rate"] == 0.01
    scores = {"mae": 0.06, "fbeta_fixed": 0.97, "iou": 0.93, "fbeta_adaptive": 0.8, "fbeta_max": 0.9}
    rows = [{"id": "m:onnx:fp32", "metrics": {**scores, "error_rate": 0.05}}]
    path = tmp_path / "baseline.json"
    gate.write_baseline(path, rows, "cuhk:test")
    baseline = gate.load_baseline(path)
    assert baseline["rows"]["m:onnx:fp32"]["error_rate"] == 0.05
    better = [{"id": "m:onnx:fp32", "metrics": {**scores, "error_rate": 0.01}}]  # improvements never fail
    worse = [{"id": "m:onnx:fp32", "metrics": {**scores, "error_rate": 0.07}}]
    assert gate.check(baseline, better, "cuhk:test") == []
    assert gate.check(baseline, worse, "cuhk:test") == [
        "m:onnx:fp32: error_rate rose to 0.0700 (baseline 0.0500, tolerance +0.01)"
    ]
    assert METRICS["error_rate"].arrow == "↓" and not METRICS["error_rate"].improved(0.02)
