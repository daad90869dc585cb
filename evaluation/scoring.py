"""Score any model on image/mask pairs, the D-DFFNet way: each full photo resized to the model
input, the blur map resized back to the mask's original resolution, then the metrics.

One function for every caller — training's validation (a live network), the test-set report and
release (checkpoints) and dbd-bench (every exported format) — because it takes a runner.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from dbd.core import DBDError
from dbd.runtime.refine import RefineSpec
from dbd.runtime.runners import Runner
from dbd.runtime.spec import PreprocessSpec

from .metrics import DecisionMetrics, LiteratureMetrics


def evaluate(
    runner: Runner,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    batch: int = 8,
    keep_maps: bool = False,
    decisions: DecisionMetrics | None = None,
    refine: RefineSpec | str | None = None,
    downscaler: str | None = None,
) -> tuple[LiteratureMetrics, np.ndarray | None]:
    """(filled metrics, the maps at the model's input size if `keep_maps`, for Δ/PSNR between models).
    `decisions`, if given, is filled with the error anatomy of the same maps. The maps are scored
    at the mask's resolution after the runner's own last step, or `refine` ("none": bilinear);
    `downscaler` replaces the contract's resize to the model (capture robustness)."""
    metrics = LiteratureMetrics()
    maps: list[np.ndarray] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []

    def flush() -> None:
        model_maps, photo_maps = runner.predict_photos(images, refine, downscaler)
        if not np.isfinite(np.asarray(model_maps)).all():  # NaN would score as a plausible-looking number
            what = f"model '{runner.path}'" if runner.path is not None else "the network being trained"
            fix = (
                "its weights are damaged or overflow; re-export or retrain it"
                if runner.path is not None
                else "training diverged; lower --lr and train again"
            )
            raise DBDError(f"{what} returned non-finite values (NaN or inf) while being scored; {fix}")
        for prob, photo_map, mask in zip(model_maps, photo_maps, masks):
            if keep_maps:
                maps.append(prob.astype(np.float32))
            metrics.update(photo_map, mask.astype(np.float32))
            if decisions is not None:
                decisions.update(photo_map, mask.astype(np.float32))
        images.clear()
        masks.clear()

    for image, mask in pairs:
        images.append(image)
        masks.append(mask)
        if len(images) == batch:
            flush()
    if images:
        flush()
    return metrics, (np.stack(maps) if keep_maps else None)


def score_maps(
    maps: Iterable[np.ndarray], pairs: Iterable[tuple[np.ndarray, np.ndarray]], spec: PreprocessSpec
) -> tuple[LiteratureMetrics, DecisionMetrics]:
    """Score maps a model already made (at its input size) with `spec`'s last step against (photo,
    mask) pairs: another refinement of the same model run, without running the model again."""
    metrics, decisions = LiteratureMetrics(), DecisionMetrics()
    for prob, (photo, mask) in zip(maps, pairs):
        photo_map = spec.postprocess(prob, photo)
        metrics.update(photo_map, mask.astype(np.float32))
        decisions.update(photo_map, mask.astype(np.float32))
    return metrics, decisions
