"""Blur-map metrics, computed the way the defocus-blur-detection literature computes them.

Published DBD numbers come from incompatible protocols (see ``../shared/docs/metrics.md``, beside the checkout); each score here
is named for the protocol it reproduces, so a number is only compared with numbers computed the
same way:

* ``mae`` - per image mean |pred - gt| at the mask's resolution, averaged over images
  (every protocol; Perazzi et al. 2012).
* ``fbeta_fixed`` - D-DFFNet table: pred >= 0.5, per-image P, R, F-beta, averaged over images.
* ``fbeta_adaptive`` - py_sod_metrics ``Fmeasure.cal_adaptive_fm`` (used by FOCUS): per image
  threshold t = min(2 * mean(pred), 1), pred >= t, F-beta, averaged over images.
* ``fbeta_max`` - BR2Net / BDRAR maxF: P and R per image at ``num_thresholds`` thresholds
  (py_sod_metrics' cumulative-histogram binning), averaged over images per threshold, F-beta of
  those mean P and mean R, maximum over thresholds.
* ``iou`` - D-DFFNet table: pooled over the data set at pred >= 0.5, sum(|B & G|) / sum(|B | G|).

Conventions (project-wide): maps are float in [0, 1] with 1 = BLUR; masks are {0, 1} with 1 = blur,
binarised here at >= 0.5 (py_sod_metrics binarises uint8 masks at > 128; identical for {0, 1}
masks). beta^2 = 0.3 and F = (1 + beta^2) P R / (beta^2 P + R).

Edge cases follow py_sod_metrics (``Fmeasure.cal_pr`` / ``FmeasureV2`` ``divide``): every 0/0 is 0.
No predicted positives -> P = 0; no positive pixels in the mask -> R = 0; P = R = 0 -> F = 0. So
an image whose mask has no positive pixels scores F = 0 however good the prediction is (this is
what the published tools do, and why such images drag a mean down). IoU with an empty pooled union
is 0 by the same rule.

Memory: only per-image scalars and per-image ``num_thresholds``-long P/R rows are kept, never maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dbd.core import DBDError
from dbd.runtime.spec import resize_bilinear


@dataclass(frozen=True)
class Metric:
    """How every table, the gate and model selection treat one score: a new metric is one entry in
    METRICS plus the code that computes it (LiteratureMetrics or DecisionMetrics)."""

    key: str  # its key in a scores dict
    label: str  # column header
    higher_is_better: bool
    tolerance: float | None = None  # the gate's default: how far it may move the wrong way (None: not gated)
    fmt: str = ".4f"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def improved(self, delta: float) -> bool:
        """Whether a change by `delta` (new − old) is for the better."""
        return delta > 0 if self.higher_is_better else delta < 0

    def regressed(self, value: float, reference: float, tolerance: float) -> bool:
        """One-sided: worse than `reference` by more than `tolerance` (improvements never regress)."""
        return value < reference - tolerance if self.higher_is_better else value > reference + tolerance


METRICS = {
    m.key: m
    for m in (
        Metric("mae", "MAE", False, 0.003),
        Metric("fbeta_fixed", "Fβ@0.5", True, 0.005),
        Metric("iou", "IoU", True, 0.005),
        Metric("fbeta_adaptive", "Fβ adaptive (in-focus +)", True, 0.005),
        Metric("fbeta_max", "Fβ max (in-focus +)", True, 0.005),
        Metric("error_at_05", "error @0.5", False),
        Metric("error_boundary", "boundary ≤8px", False),
        Metric("error_interior", "interior", False),
        Metric("worst10_share", "worst 10 % share", False),
        Metric("unsure", "unsure", False),
    )
}
LITERATURE = ("mae", "fbeta_fixed", "iou", "fbeta_adaptive", "fbeta_max")  # LiteratureMetrics' scores
ANATOMY = ("error_at_05", "error_boundary", "error_interior", "worst10_share", "unsure")  # DecisionMetrics'


def gated() -> tuple[str, ...]:
    """The metrics the accuracy-regression gate checks: those with a tolerance."""
    return tuple(k for k, m in METRICS.items() if m.tolerance is not None)


def selection_score(scores: dict[str, float]) -> float:
    """The one number training's model selection maximises: the D-DFFNet table's three, equally weighted."""
    return (scores["fbeta_fixed"] + scores["iou"] + (1 - scores["mae"])) / 3


PSNR_CAP_DB = 300.0  # identical maps: reported as 300 dB rather than infinity (JSON has no inf)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, peak 1) between two probability maps or stacks of the same shape, pooled over every
    pixel; PSNR_CAP_DB when identical. Export parity and dbd-bench's comparisons both use it."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return PSNR_CAP_DB if mse <= 0 else min(PSNR_CAP_DB, 10.0 * float(np.log10(1.0 / mse)))


__all__ = ["BlurMapMetrics", "LiteratureMetrics", "adaptive_threshold", "fbeta", "resize_to"]

_POSITIVES = ("blur", "sharp")


def resize_to(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize ``pred`` to ``shape`` = (H, W) with the contract's kernel (spec.resize_bilinear on float32).

    Returns ``pred`` itself when it already has that shape. Bilinear weights are convex, so the
    result stays in [0, 1] up to float32 rounding, which is clipped away.
    """
    h, w = int(shape[0]), int(shape[1])
    if pred.shape == (h, w):
        return pred
    if pred.ndim != 2:
        raise DBDError(f"resize_to: prediction must be a 2-D (H, W) map, got shape {pred.shape}")
    out = resize_bilinear(pred.astype(np.float32), (h, w))
    return np.clip(out, 0.0, 1.0)


def _divide(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den elementwise with x / 0 := 0 (py_sod_metrics' convention)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def fbeta(precision, recall, beta2: float = 0.3) -> np.ndarray:
    """F-beta = (1 + beta2) P R / (beta2 P + R), elementwise; 0 where P = R = 0."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    return _divide((1.0 + beta2) * p * r, beta2 * p + r)


def adaptive_threshold(pred: np.ndarray) -> float:
    """py_sod_metrics ``get_adaptive_threshold``: min(2 * mean(pred), 1) (Achanta et al. 2009)."""
    return float(min(2.0 * float(np.mean(pred)), 1.0))


def _check_map(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise DBDError(f"{name} must be a 2-D (H, W) map, got shape {x.shape}; squeeze channels first")
    if x.size == 0:
        raise DBDError(f"{name} is empty (shape {x.shape}); every image needs at least one pixel")
    x = x.astype(np.float64, copy=False)
    if np.isnan(x).any():
        raise DBDError(f"{name} contains NaN; check the model output / mask loader")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DBDError(f"{name} values must lie in [0, 1], got [{lo:g}, {hi:g}]; divide 8-bit maps by 255")
    return x


class BlurMapMetrics:
    """Accumulate MAE, F-beta (fixed / adaptive / max) and pooled IoU over a test set.

    Args:
        positive: "blur" (D-DFFNet table) or "sharp" (py_sod_metrics / BR2Net / BDRAR, whose
            positive class is in-focus). For "sharp" the prediction is flipped (1 - pred) and the
            blur-binarised mask is inverted, so the masks' partition into classes never depends on
            ``positive`` (a grey 0.5 mask pixel is blur either way). MAE is the same for both.
        beta2: beta^2 of F-beta (0.3 everywhere in this literature).
        num_thresholds: thresholds of the max-F / PR curve. Threshold k (0 <= k < N) keeps pixels
            with floor(pred * (N - 1)) >= k, i.e. pred >= k / (N - 1); N = 256 is exactly
            py_sod_metrics' ``(pred * 255).astype(uint8)`` + 256-bin histogram + flipped cumsum.
        normalize: min-max normalise each (resized) prediction to [0, 1] before every metric, MAE
            included, as py_sod_metrics' ``prepare_data`` does (skipped for a constant map, as
            there). Off by default: the D-DFFNet protocol scores the raw probabilities.
    """

    def __init__(
        self,
        positive: str = "blur",
        beta2: float = 0.3,
        num_thresholds: int = 256,
        normalize: bool = False,
    ) -> None:
        if positive not in _POSITIVES:
            raise DBDError(f"unknown positive class {positive!r}; use 'blur' or 'sharp'")
        if int(num_thresholds) < 2:
            raise DBDError(f"num_thresholds must be at least 2, got {num_thresholds}")
        if not beta2 > 0:
            raise DBDError(f"beta2 must be positive, got {beta2}")
        self.positive = positive
        self.beta2 = float(beta2)
        self.num_thresholds = int(num_thresholds)
        self.normalize = bool(normalize)
        self.reset()

    def reset(self) -> None:
        """Forget every image added so far."""
        self._mae: list[float] = []
        self._f_fixed: list[float] = []
        self._f_adaptive: list[float] = []
        self._p_rows: list[np.ndarray] = []  # one (num_thresholds,) row per image
        self._r_rows: list[np.ndarray] = []
        self._inter = 0  # pooled IoU counts at 0.5
        self._union = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` (any resolution, 1 = blur) is scored at ``gt``'s resolution."""
        gt = _check_map("ground-truth mask", gt)
        pred = _check_map("prediction", pred)
        pred = resize_to(pred, gt.shape).astype(np.float64, copy=False)
        if self.normalize:
            lo, hi = pred.min(), pred.max()
            if hi != lo:
                pred = (pred - lo) / (hi - lo)
        gt_blur = gt >= 0.5

        self._mae.append(float(np.mean(np.abs(pred - gt_blur))))

        if self.positive == "sharp":
            pred, pos = 1.0 - pred, ~gt_blur
        else:
            pos = gt_blur
        n_pos = int(np.count_nonzero(pos))

        # D-DFFNet: fixed threshold 0.5, per-image F and pooled IoU.
        binary = pred >= 0.5
        tp = int(np.count_nonzero(binary & pos))
        self._f_fixed.append(self._f_of_counts(tp, int(np.count_nonzero(binary)), n_pos))
        self._inter += tp
        self._union += int(np.count_nonzero(binary | pos))

        # py_sod_metrics adaptive threshold (on the unquantised map, as there).
        binary = pred >= adaptive_threshold(pred)
        tp = int(np.count_nonzero(binary & pos))
        self._f_adaptive.append(self._f_of_counts(tp, int(np.count_nonzero(binary)), n_pos))

        # Cumulative histograms: counts of pixels with level >= k for every k at once.
        n = self.num_thresholds
        level = np.floor(pred * (n - 1)).astype(np.intp).ravel()
        np.clip(level, 0, n - 1, out=level)
        tp_ge = np.cumsum(np.bincount(level[pos.ravel()], minlength=n)[::-1])[::-1]
        pp_ge = np.cumsum(np.bincount(level, minlength=n)[::-1])[::-1]
        self._p_rows.append(_divide(tp_ge, pp_ge))
        self._r_rows.append(_divide(tp_ge, n_pos))

    def _f_of_counts(self, tp: int, pred_pos: int, gt_pos: int) -> float:
        return float(fbeta(_divide(tp, pred_pos), _divide(tp, gt_pos), self.beta2))

    def _require_images(self) -> None:
        if not self._mae:
            raise DBDError("no images scored yet; call BlurMapMetrics.update(pred, gt) first")

    def curves(self) -> dict[str, np.ndarray]:
        """PR and F-vs-threshold curves (BR2Net/BDRAR): data-set mean P and R per threshold.

        Returns "thresholds" (ascending, k / (N - 1)), "precision", "recall" (non-increasing in
        the threshold) and "fbeta" (F of the mean P and mean R), each of length ``num_thresholds``.
        """
        self._require_images()
        p = np.mean(np.stack(self._p_rows), axis=0)
        r = np.mean(np.stack(self._r_rows), axis=0)
        return {
            "thresholds": np.linspace(0.0, 1.0, self.num_thresholds),
            "precision": p,
            "recall": r,
            "fbeta": fbeta(p, r, self.beta2),
        }

    def compute(self) -> dict[str, float]:
        """Scores over every image added: mae, fbeta_fixed, fbeta_adaptive, fbeta_max, iou, n_images."""
        self._require_images()
        return {
            "mae": float(np.mean(self._mae)),
            "fbeta_fixed": float(np.mean(self._f_fixed)),
            "fbeta_adaptive": float(np.mean(self._f_adaptive)),
            "fbeta_max": float(np.max(self.curves()["fbeta"])),
            "iou": float(_divide(self._inter, self._union)),
            "n_images": len(self._mae),
        }


class LiteratureMetrics:
    """Every protocol with the positive class it was published with (../shared/docs/metrics.md):

    * D-DFFNet table — ``mae``, ``fbeta_fixed``, ``iou`` — blur is positive;
    * ``fbeta_adaptive`` (py_sod_metrics) and ``fbeta_max`` (BR2Net/BDRAR) — in-focus is positive.
      With blur positive these two are degenerate on CUHK: blur covers ~2/3 of a typical photo, so
      the adaptive threshold min(2·mean, 1) saturates at 1 and almost nothing is predicted positive.

    ``curves()`` are the blur-positive PR / Fβ-vs-threshold curves.
    """

    def __init__(self) -> None:
        self.blur = BlurMapMetrics(positive="blur")
        self.sharp = BlurMapMetrics(positive="sharp")

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.blur.update(pred, gt)
        self.sharp.update(pred, gt)

    def compute(self) -> dict[str, float]:
        blur, sharp = self.blur.compute(), self.sharp.compute()
        return {
            "mae": blur["mae"],
            "fbeta_fixed": blur["fbeta_fixed"],
            "iou": blur["iou"],
            "fbeta_adaptive": sharp["fbeta_adaptive"],
            "fbeta_max": sharp["fbeta_max"],
            "n_images": blur["n_images"],
        }

    def curves(self) -> dict[str, np.ndarray]:
        return self.blur.curves()


class DecisionMetrics:
    """Where a map decides wrong, at the mask's resolution with the map binarised at 0.5:

    * ``error_at_05`` - fraction of pixels decided wrong, per image, averaged over images;
    * ``error_boundary`` / ``error_interior`` - the same error split by where the pixel lies: within
      ``band`` px of a boundary of the mask, or further inside a region (the two add up to
      ``error_at_05``). Boundary precision and whole low-texture in-focus regions called blurred
      are the two kinds of error to tell apart (docs/metrics.md, "Error anatomy");
    * ``worst10_share`` - share of all wrong pixels held by the 10 % of images with the most;
    * ``unsure`` - fraction of pixels the map leaves in (0.1, 0.9): what MAE adds on top of decisions.
    """

    def __init__(self, band: int = 8) -> None:
        self.band = band
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
        self._error, self._boundary, self._interior, self._unsure, self._wrong = [], [], [], [], []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        gt = _check_map("ground-truth mask", gt)
        pred = resize_to(_check_map("prediction", pred), gt.shape)
        blur = (gt >= 0.5).astype(np.uint8)
        wrong = (pred >= 0.5) != blur.astype(bool)
        near = cv2.dilate(blur, self._kernel) != cv2.erode(blur, self._kernel)  # within `band` px of a boundary
        self._error.append(float(wrong.mean()))
        self._boundary.append(float((wrong & near).mean()))
        self._interior.append(float((wrong & ~near).mean()))
        self._unsure.append(float(((pred > 0.1) & (pred < 0.9)).mean()))
        self._wrong.append(int(wrong.sum()))

    def compute(self) -> dict[str, float]:
        if not self._error:
            raise DBDError("no images were scored; check that the dataset is not empty")
        wrong = np.sort(np.asarray(self._wrong))[::-1]
        worst = wrong[: max(1, int(round(0.1 * len(wrong))))].sum()
        return {
            "error_at_05": float(np.mean(self._error)),
            "error_boundary": float(np.mean(self._boundary)),
            "error_interior": float(np.mean(self._interior)),
            "worst10_share": float(worst / wrong.sum()) if wrong.sum() else 0.0,
            "unsure": float(np.mean(self._unsure)),
        }
