"""Score any model on image/mask pairs, the D-DFFNet way: each full photo resized to the model
input, the blur map resized back to the mask's original resolution, then the metrics.

One function for every caller — training's validation (a live network), the test-set report and
release (checkpoints) and dbd-bench (every exported format) — because it takes a runner.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .metrics import LiteratureMetrics
from .runners import Runner


def evaluate(runner: Runner, pairs: Iterable[tuple[np.ndarray, np.ndarray]], batch: int = 8,
             keep_maps: bool = False) -> tuple[LiteratureMetrics, np.ndarray | None]:
    """(filled metrics, the maps at the model's input size if `keep_maps`, for Δ/PSNR between models)."""
    spec = runner.spec
    metrics = LiteratureMetrics()
    maps: list[np.ndarray] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []

    def flush() -> None:
        unit = np.stack([spec.resize_image(im.astype(np.float32) / np.float32(spec.pixel_scale)) for im in images])
        for prob, image, mask in zip(runner.run(unit), images, masks):
            if keep_maps:
                maps.append(prob.astype(np.float32))
            metrics.update(spec.postprocess(prob, image.shape[:2]), mask.astype(np.float32))
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
