"""Parity: does the exported file compute what the PyTorch model computes, on real images?

Both engines see the same real photos (resized once, as PreprocessSpec does). The figures:

* `max_abs` / `mean_abs`: |exported - PyTorch| of the blur maps at the model resolution;
* `psnr_db`: PSNR of the exported maps against PyTorch's (peak 1, pooled over all pixels);
* `mae_*`, `fbeta_*` and their deltas (exported - PyTorch): the D-DFFNet metrics against the
  ground-truth masks (BlurMapMetrics, blur = positive, Fβ at 0.5, at the masks' resolution), so a
  deviation is also read in the units the benchmarks report.

Budgets (defaults, each overridable on the command line): fp32 max|Δ| <= 1e-4; fp16 PSNR >= 40 dB;
int8 PSNR >= 30 dB and |ΔFβ| <= 0.005.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dbd.evaluation.metrics import PSNR_CAP_DB, BlurMapMetrics, psnr_db
from dbd.runtime.spec import PreprocessSpec

from .calibration import normalised_nchw


@dataclass(frozen=True)
class ParityBudget:
    fp32_max_abs: float = 1e-4
    fp16_min_psnr: float = 40.0
    int8_min_psnr: float = 30.0
    int8_max_dfbeta: float = 0.005

    def __post_init__(self) -> None:
        """Every budget checked when it is made, before any export work (NaN would pass every test)."""
        from dbd.core import check_float

        check_float(self.fp32_max_abs, "--fp32-max-abs", minimum=0.0, maximum=1.0, above_minimum=True)
        check_float(self.fp16_min_psnr, "--fp16-min-psnr", minimum=0.0, maximum=PSNR_CAP_DB)
        check_float(self.int8_min_psnr, "--int8-min-psnr", minimum=0.0, maximum=PSNR_CAP_DB)
        check_float(self.int8_max_dfbeta, "--int8-max-dfbeta", minimum=0.0, maximum=1.0)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def torch_maps(model: nn.Module, spec: PreprocessSpec, unit: np.ndarray, batch: int = 8) -> np.ndarray:
    """P(blur) of the PyTorch model for (N, H, W, 3) images in [0, 1]: (N, H, W) float32."""
    model.eval()
    maps = []
    for start in range(0, len(unit), batch):
        x = torch.from_numpy(normalised_nchw(unit[start : start + batch], spec))
        maps.append(model(x).float().numpy()[:, 0])
    return np.concatenate(maps).astype(np.float32)


def measure(reference: np.ndarray, exported: np.ndarray, masks: list[np.ndarray]) -> dict[str, Any]:
    """Parity figures of `exported` maps against `reference` maps, both (N, H, W), and the masks."""
    reference = np.asarray(reference, np.float64)
    exported = np.asarray(exported, np.float64)
    if reference.shape != exported.shape:
        raise ValueError(f"exported maps {exported.shape} do not match the reference maps {reference.shape}")
    nonfinite = int(np.count_nonzero(~np.isfinite(exported)))
    if nonfinite:  # counted (and failed by `check`), then scored as the worst value so the figures stay finite
        exported = np.where(np.isfinite(exported), exported, 1.0 - np.round(reference))
    diff = exported - reference
    psnr = psnr_db(reference, exported)
    figures: dict[str, Any] = {
        "n_images": int(len(reference)),
        "max_abs": float(np.max(np.abs(diff))),
        "mean_abs": float(np.mean(np.abs(diff))),
        "psnr_db": float(psnr),
        "nonfinite": nonfinite,
    }
    if masks:
        scores = {}
        for name, maps in (("torch", reference), ("export", exported)):
            metrics = BlurMapMetrics(positive="blur")
            for pred, mask in zip(maps, masks):
                metrics.update(np.clip(pred, 0.0, 1.0).astype(np.float32), mask)
            scores[name] = metrics.compute()
        figures.update(
            {
                "mae_torch": scores["torch"]["mae"],
                "mae_export": scores["export"]["mae"],
                "d_mae": scores["export"]["mae"] - scores["torch"]["mae"],
                "fbeta_torch": scores["torch"]["fbeta_fixed"],
                "fbeta_export": scores["export"]["fbeta_fixed"],
                "d_fbeta": scores["export"]["fbeta_fixed"] - scores["torch"]["fbeta_fixed"],
            }
        )
    return figures


def check(precision: str, figures: dict[str, Any], budget: ParityBudget) -> list[str]:
    """Budget violations, each a short phrase; empty when the figures pass."""
    failures = []
    if figures.get("nonfinite"):
        failures.append(f"{figures['nonfinite']} non-finite output values")
    if precision == "fp32" and not figures["max_abs"] <= budget.fp32_max_abs:
        failures.append(f"max|Δ| {figures['max_abs']:.2e} > {budget.fp32_max_abs:.0e}")
    if precision == "fp16" and not figures["psnr_db"] >= budget.fp16_min_psnr:
        failures.append(f"PSNR {figures['psnr_db']:.1f} dB < {budget.fp16_min_psnr:g} dB")
    if precision == "int8":
        if not figures["psnr_db"] >= budget.int8_min_psnr:
            failures.append(f"PSNR {figures['psnr_db']:.1f} dB < {budget.int8_min_psnr:g} dB")
        if "d_fbeta" in figures and not abs(figures["d_fbeta"]) <= budget.int8_max_dfbeta:
            failures.append(f"|ΔFβ| {abs(figures['d_fbeta']):.4f} > {budget.int8_max_dfbeta:g}")
    return failures


def summary(figures: dict[str, Any] | None) -> str:
    """One short line of figures for the printout."""
    if not figures:
        return "parity not measured"
    text = f"max|Δ| {figures['max_abs']:.1e}  PSNR {figures['psnr_db']:.1f} dB"
    if "d_fbeta" in figures:
        text += f"  ΔMAE {figures['d_mae']:+.4f}  ΔFβ {figures['d_fbeta']:+.4f}"
    return text
