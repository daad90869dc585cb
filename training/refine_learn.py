"""Does a learned refinement beat the contract's fixed guided filter? (issue 21 item 5)

The contract's guided filter (dbd.runtime.refine) restated in torch, so its free parts can be fitted
by gradient descent on full-resolution photos and masks, in the spirit of Wu, Zheng, Zhang, Huang,
"Fast End-to-End Trainable Guided Filter" (CVPR 2018): the filter stays a fast guided filter
(coefficients on the grid, applied at the photo's resolution) and only what is learned changes.

    python -m dbd.training.refine_learn exports/dbd_student_320_int8.tflite
    python -m dbd.training.refine_learn CKPT --variants guide --objective bce --steps 60

Variants (each starts as the shipped filter, so step 0 is the contract):
- calibration: q -> scale * q + shift before the sigmoid (2 numbers; "scale" alone keeps every
  decision at 0.5 and only moves MAE);
- regulariser: eps * I becomes a learned symmetric positive 3x3 matrix (6 numbers; the same as a
  learned linear colour transform of the guide with one eps);
- guide: Wu et al.'s guided map, a pointwise network of the photo (3 -> 16 -> 3, residual) that
  replaces the RGB guide at both resolutions, plus the regulariser.

Fitted on training's validation hold-out only (the students' training photos are fitted already,
so their maps are more confident than on new photos). The printed table is two-fold: fit on one
half of the hold-out, score the other half, against the fixed filter on the same half. The
objective is BCE (a proper score: calibrated probabilities) or L1 (MAE itself; it rewards
confidence without limit, so it drives `scale` up and the map towards a binary one).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dbd.core import DBDError, cli_entry
from dbd.evaluation.scoring import DecisionMetrics, LiteratureMetrics
from dbd.runtime import refine_kernels
from dbd.runtime.refine import RefineSpec, grid_size
from dbd.runtime.resize import resize_bilinear

VARIANTS = ("calibration", "scale", "regulariser", "guide")
OBJECTIVES = ("bce", "l1")


@dataclass
class Example:
    """One photo prepared for the filter: the guide and logit on the grid, the photo and mask at
    full resolution (the grid steps hold no parameters, so they are computed once)."""

    small: torch.Tensor  # (3, gh, gw) float64 guide in [0, 1]
    logit: torch.Tensor  # (gh, gw) float64
    radius: int
    full: torch.Tensor  # (3, H, W) float32 photo in [0, 1]
    mask: torch.Tensor  # (H, W) float32, 1 = blur


def prepare(prob: np.ndarray, photo: np.ndarray, mask: np.ndarray, spec: RefineSpec) -> Example:
    """Steps 1-3 of the contract's refinement (at the photo's size: no working size)."""
    grid = grid_size(photo.shape[:2], spec.grid)
    small = refine_kernels.resize_pixels(np.ascontiguousarray(photo, dtype=np.uint8), grid)
    p = np.clip(resize_bilinear(np.asarray(prob, np.float32), grid).astype(np.float64), spec.clip, 1 - spec.clip)
    return Example(
        small=torch.from_numpy(small.astype(np.float64) / 255.0).permute(2, 0, 1),
        logit=torch.from_numpy(np.log(p / (1 - p))),
        radius=max(1, int(np.floor(spec.radius * min(grid) + 0.5))),
        full=torch.from_numpy(photo.astype(np.float32) / 255.0).permute(2, 0, 1),
        mask=torch.from_numpy(np.asarray(mask, np.float32)),
    )


def _box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """(C, h, w) -> the mean over each (2r+1)² window clipped to the image (step 3)."""
    return F.avg_pool2d(x[None], 2 * r + 1, stride=1, padding=r, count_include_pad=False)[0]


class LearnedRefinement(torch.nn.Module):
    """The contract's guided filter on the logit with the learnable parts of `variant`; returns the
    refined logit at the photo's resolution (P(blur) = its sigmoid)."""

    def __init__(self, variant: str, eps: float):
        super().__init__()
        if variant not in VARIANTS:
            raise DBDError(f"unknown refinement variant '{variant}'; use one of {', '.join(VARIANTS)}")
        self.variant = variant
        f64 = torch.float64
        # regulariser = L Lᵀ with L lower-triangular: positive definite for any parameters
        self.log_diag = torch.nn.Parameter(torch.full((3,), 0.5 * float(np.log(eps)), dtype=f64))
        self.lower = torch.nn.Parameter(torch.zeros(3, dtype=f64))
        self.scale = torch.nn.Parameter(torch.ones((), dtype=f64))
        self.shift = torch.nn.Parameter(torch.zeros((), dtype=f64))
        self.hidden = torch.nn.Conv2d(3, 16, 1).double()
        self.out = torch.nn.Conv2d(16, 3, 1).double()
        torch.nn.init.zeros_(self.out.weight)  # the residual guide starts as the photo itself
        torch.nn.init.zeros_(self.out.bias)

    def trainable(self) -> list[torch.nn.Parameter]:
        regulariser = [self.log_diag, self.lower]
        return {
            "calibration": [self.scale, self.shift],
            "scale": [self.scale],
            "regulariser": regulariser,
            "guide": regulariser + list(self.hidden.parameters()) + list(self.out.parameters()),
        }[self.variant]

    def regulariser(self) -> torch.Tensor:
        rows, cols = torch.tensor([1, 2, 2]), torch.tensor([0, 0, 1])
        low = torch.diag(torch.exp(self.log_diag)).index_put((rows, cols), self.lower)
        return low @ low.T

    def guide(self, image: torch.Tensor) -> torch.Tensor:
        if self.variant != "guide":
            return image
        x = image.double()[None]
        return (x + self.out(F.leaky_relu(self.hidden(x), 0.2)))[0].to(image.dtype)

    def forward(self, ex: Example) -> torch.Tensor:
        small, p, r = self.guide(ex.small), ex.logit, ex.radius
        mean_i, mean_p = _box_mean(small, r), _box_mean(p[None], r)[0]
        outer = torch.stack([small[i] * small[j] for i in range(3) for j in range(3)])
        sigma = _box_mean(outer, r).reshape(3, 3, *p.shape) - mean_i[:, None] * mean_i[None]
        cov = _box_mean(small * p, r) - mean_i * mean_p
        a = torch.linalg.solve(sigma.permute(2, 3, 0, 1) + self.regulariser(), cov.permute(1, 2, 0)[..., None])
        a = a[..., 0].permute(2, 0, 1)
        b = mean_p - (a * mean_i).sum(0)
        coef = _box_mean(torch.cat([a, b[None]]), r).float()
        up = F.interpolate(coef[None], size=ex.full.shape[1:], mode="bilinear", align_corners=False)[0]
        q = (up[:3] * self.guide(ex.full)).sum(0) + up[3]
        return self.scale.float() * q + self.shift.float()


def fit(model: LearnedRefinement, examples: list[Example], objective: str, steps: int, lr: float = 0.02) -> float:
    """Adam on the whole set each step (a few dozen photos); returns the last loss."""
    if objective not in OBJECTIVES:
        raise DBDError(f"unknown objective '{objective}'; use one of {', '.join(OBJECTIVES)}")
    optimiser = torch.optim.Adam(model.trainable(), lr=lr)
    loss_value = float("nan")
    for _ in range(steps):
        optimiser.zero_grad()
        loss_value = 0.0
        for ex in examples:
            z = model(ex)
            if objective == "bce":
                loss = F.binary_cross_entropy_with_logits(z, ex.mask)
            else:
                loss = (torch.sigmoid(z) - ex.mask).abs().mean()
            (loss / len(examples)).backward()
            loss_value += loss.item() / len(examples)
        optimiser.step()
    return loss_value


def score(model: LearnedRefinement, examples: list[Example]) -> dict[str, float]:
    metrics, decisions = LiteratureMetrics(), DecisionMetrics()
    with torch.no_grad():
        for ex in examples:
            photo_map = torch.sigmoid(model(ex)).numpy()
            metrics.update(photo_map, ex.mask.numpy())
            decisions.update(photo_map, ex.mask.numpy())
    return {**metrics.compute(), **decisions.compute()}


def two_fold(examples: list[Example], variant: str, objective: str, steps: int, eps: float) -> list[dict]:
    """Fit on one half, score the other, both ways; each row holds the fixed filter's score of
    the same half and the fitted numbers."""
    half = len(examples) // 2
    rows = []
    for fold, (train, held) in enumerate(((examples[:half], examples[half:]), (examples[half:], examples[:half]))):
        model = LearnedRefinement(variant, eps)
        fixed = score(model, held)
        fit(model, train, objective, steps)
        learned = score(model, held)
        rows.append({"fold": fold, "fixed": fixed, "learned": learned, "model": model})
    return rows


def _describe(model: LearnedRefinement) -> str:
    if model.variant in ("calibration", "scale"):
        return f"scale {model.scale.item():.2f}, shift {model.shift.item():+.2f}"
    diag = torch.diagonal(model.regulariser()).detach().numpy()
    return "regulariser diag " + "/".join(f"{v:.1e}" for v in diag)


@cli_entry("python -m dbd.training.refine_learn")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbd.training.refine_learn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("weights", help="a checkpoint or exported file")
    parser.add_argument("--data", default="cuhk")
    parser.add_argument("--variants", default="scale,calibration,regulariser,guide")
    parser.add_argument("--objective", default="bce,l1", help="comma-separated: bce, l1")
    parser.add_argument("--steps", type=int, default=60, help="Adam steps over the half hold-out (default 60)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    objectives = [o for o in args.objective.split(",") if o]
    for name, chosen, allowed in (("--variants", variants, VARIANTS), ("--objective", objectives, OBJECTIVES)):
        bad = sorted(set(chosen) - set(allowed))
        if bad or not chosen:
            raise DBDError(f"{name} {bad or chosen}: use a comma-separated list of {', '.join(allowed)}")
    if args.steps < 1:
        raise DBDError(f"--steps {args.steps}: must be at least 1")

    from dbd.runtime.runners import open_runner

    from .refine_sweep import model_maps

    runner = open_runner(args.weights)
    spec = runner.spec.refine if runner.spec.refine.enabled else RefineSpec()
    maps, pairs = model_maps(runner, args.data, "val")
    examples = [prepare(m, photo, mask, spec) for m, (photo, mask) in zip(maps, pairs)]
    torch.manual_seed(0)
    print(f"{args.weights} on {args.data} val ({len(examples)} photos, two folds); refinement {spec.describe()}\n")
    print(
        "| variant | objective | fold | fixed: MAE / Fβ@0.5 / IoU | learned: MAE / Fβ@0.5 / IoU | boundary ≤8px | learned |"
    )
    print("|---|---|---:|---|---|---|---|")
    for variant in variants:
        for objective in objectives:
            for row in two_fold(examples, variant, objective, args.steps, spec.eps):
                a, b = row["fixed"], row["learned"]
                print(
                    f"| {variant} | {objective} | {row['fold']} | {a['mae']:.4f} / {a['fbeta_fixed']:.4f} / {a['iou']:.4f} "
                    f"| {b['mae']:.4f} / {b['fbeta_fixed']:.4f} / {b['iou']:.4f} "
                    f"| {a['error_boundary']:.4f} → {b['error_boundary']:.4f} | {_describe(row['model'])} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
