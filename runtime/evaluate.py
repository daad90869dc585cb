"""Score a PyTorch DBD model on image/mask pairs, the D-DFFNet way: each full photo resized to
the model input, the blur map resized back to the mask's original resolution, then the metrics."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from .metrics import LiteratureMetrics
from .spec import PreprocessSpec


@torch.no_grad()
def evaluate_model(model: nn.Module, spec: PreprocessSpec, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                   device: torch.device | str = "cpu", batch: int = 8) -> LiteratureMetrics:
    """Returns the filled LiteratureMetrics (call .compute() / .curves()); the model's mode is restored."""
    was_training = model.training
    model.eval()
    metrics = LiteratureMetrics()

    def flush(images: list[np.ndarray], masks: list[np.ndarray]) -> None:
        x = torch.from_numpy(np.concatenate([spec.preprocess(im) for im in images])).to(device)
        for prob, image, mask in zip(model(x).float().cpu().numpy(), images, masks):
            metrics.update(spec.postprocess(prob, image.shape[:2]), mask.astype(np.float32))

    images, masks = [], []
    for image, mask in pairs:
        images.append(image)
        masks.append(mask)
        if len(images) == batch:
            flush(images, masks)
            images, masks = [], []
    if images:
        flush(images, masks)
    model.train(was_training)
    return metrics
