"""The contract's last step: the model's low-resolution map -> a blur map at the photo's resolution,
edge-aligned to the photo by a fast colour guided filter on the logit.

The network decides on an `input_size` stretch of the photo, so a plain bilinear resize back makes
every boundary at best as sharp as that grid. The refinement re-aligns the map's edges with the
photo's own edges (He, Sun, Tang, "Guided Image Filtering", TPAMI 2013), computed the fast way
(He & Sun 2015: the linear coefficients on a subsampled grid, applied at full resolution). It works
on the logit: on the probability it smooths confident regions and MAE gets worse
(`../shared/docs/error-analysis.md`, "Probe: edge-aware refinement").

The algorithm, exactly (the Kotlin core and the web demo implement the same steps; integer steps use
integer arithmetic so every runtime picks the same sizes):

  0. out = (H, W), the photo's size; if `max_side` > 0 and max(H, W) > max_side, the map is refined
     at the working size (H * max_side // max(H, W), W * max_side // max(H, W)), each at least 1,
     and resized bilinearly to (H, W) at the end.
  1. grid, from the working size (h, w): short = min(h, w); if `grid` == 0 or `grid` >= short, the
     grid is (h, w) itself, else
     gh = (h * grid + short // 2) // short (and gw alike), each at least 1.
  2. I = resize_bilinear(photo / 255, grid)                      RGB float, the contract's kernel
     p = logit(clip(resize_bilinear(prob, grid), clip, 1 - clip))
  3. r = max(1, floor(radius * min(grid) + 0.5)); mean(X) = sum of X over the (2r+1)² window
     clipped to the grid / number of grid pixels in it
  4. per grid pixel: Σ = mean(I Iᵀ) - mean(I) mean(I)ᵀ + eps·1, a = Σ⁻¹ (mean(I p) - mean(I) mean(p)),
     b = mean(p) - a · mean(I); then A = mean(a), B = mean(b)            (float64)
  5. at the working size: q = resize_bilinear(A) · (photo / 255; with a working size, the photo
     resized to it) + resize_bilinear(B); map = 1 / (1 + exp(-q))                         (float32)
  6. resize_bilinear(map, (H, W)) when a working size applied.

`method = "none"` is the contract before refinement: clip(resize_bilinear(prob, (H, W)), 0, 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from dbd.core import DBDError

from .resize import resize_bilinear

REFINE_METHODS = ("guided", "none")
GUIDES = ("rgb",)


@dataclass(frozen=True)
class RefineSpec:
    """The refinement's settings; they travel inside every checkpoint card and exported file."""

    method: str = "guided"
    radius: float = 0.025  # window radius as a fraction of the shorter side of the refined map
    eps: float = 3e-4  # regularisation of the guide's colour covariance (RGB in [0, 1])
    grid: int = 128  # shorter side of the grid the coefficients are computed on (0: full size)
    clip: float = 1e-4  # P(blur) is clipped to [clip, 1 - clip] before the logit
    max_side: int = 0  # working size: refine at most at this longer side, then resize (0: photo's size)
    guide: str = "rgb"  # the guide's colour space

    def __post_init__(self) -> None:
        checks = (
            ("method", self.method in REFINE_METHODS, f"one of {', '.join(REFINE_METHODS)}"),
            ("guide", self.guide in GUIDES, f"one of {', '.join(GUIDES)}"),
            ("radius", _real(self.radius) and 0 < self.radius <= 1, "a fraction of the map's shorter side in (0, 1]"),
            ("eps", _real(self.eps) and 0 < self.eps <= 10, "a positive number up to 10"),
            ("clip", _real(self.clip) and 0 < self.clip < 0.5, "a probability in (0, 0.5)"),
            ("grid", _whole(self.grid) and (self.grid == 0 or 8 <= self.grid <= 65536), "0 or 8..65536"),
            (
                "max_side",
                _whole(self.max_side) and (self.max_side == 0 or 16 <= self.max_side <= 65536),
                "0 or 16..65536",
            ),
        )
        for key, ok, expected in checks:
            if not ok:
                raise DBDError(f"refine.{key} = {getattr(self, key)!r} is not valid; expected {expected}")

    @classmethod
    def none(cls) -> "RefineSpec":
        """Plain bilinear resize of the map: the contract of files exported before refinement."""
        return cls(method="none")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def describe(self) -> str:
        if not self.enabled:
            return "bilinear (no refinement)"
        return (
            f"guided filter on the logit (radius {self.radius:g} of the short side, eps {self.eps:g}, "
            f"grid {self.grid or 'full'}, guide {self.guide})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "RefineSpec":
        if not isinstance(data, dict):
            raise DBDError(
                f"preprocessing spec 'refine' is a {type(data).__name__}, not a JSON object; re-save the model"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DBDError(f"preprocessing spec 'refine' has unknown fields {unknown}; it was written by a newer dbd")
        return cls(**data)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def working_size(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Step 0: the size the map is refined at."""
    h, w = int(hw[0]), int(hw[1])
    longest = max(h, w)
    if not max_side or longest <= max_side:
        return h, w
    return max(1, h * max_side // longest), max(1, w * max_side // longest)


def grid_size(hw: tuple[int, int], grid: int) -> tuple[int, int]:
    """Step 1: the coefficient grid for a map of size `hw`."""
    h, w = int(hw[0]), int(hw[1])
    short = min(h, w)
    if not grid or grid >= short:
        return h, w
    return max(1, (h * grid + short // 2) // short), max(1, (w * grid + short // 2) // short)


def refine_map(
    prob: np.ndarray, photo: np.ndarray, spec: RefineSpec, out_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """The model's (h, w) P(blur) and the RGB uint8 photo -> float32 P(blur) at `out_hw` (default:
    the photo's size), refined as `spec` says (module docstring)."""
    prob = np.asarray(prob, np.float32)
    out_hw = tuple(photo.shape[:2]) if out_hw is None else (int(out_hw[0]), int(out_hw[1]))
    if not spec.enabled:
        return np.clip(resize_bilinear(prob, out_hw), 0.0, 1.0)
    from . import refine_kernels as kernels  # compiled on first use (numba, cached on disk)

    work = working_size(out_hw, spec.max_side)
    guide = np.ascontiguousarray(photo, dtype=np.uint8)
    if work != guide.shape[:2]:
        guide = kernels.resize_pixels(guide, work)  # float pixels 0..255 at the working size
    grid = grid_size(work, spec.grid)
    small = kernels.resize_pixels(guide, grid).astype(np.float64) / 255.0
    p = np.clip(resize_bilinear(prob, grid).astype(np.float64), spec.clip, 1.0 - spec.clip)
    r = max(1, int(np.floor(spec.radius * min(grid) + 0.5)))
    sums = kernels.scratch.get("coefficients", (13, *grid), np.float64)
    coef = kernels.guided_coefficients(small, np.log(p / (1.0 - p)), r, float(spec.eps), sums)
    across = kernels.scratch.get("across", (grid[0], 4, guide.shape[1]), np.float32)
    refined = kernels.sigmoid_(kernels.apply_coefficients(coef, guide, across))  # in [0, 1] already
    return refined if refined.shape == out_hw else np.clip(resize_bilinear(refined, out_hw), 0.0, 1.0)
