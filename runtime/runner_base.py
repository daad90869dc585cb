"""The interface every runner implements (PyTorch checkpoints, and each format plug-in's runner for its
exported files): photos in, the file's maps out, under the file's own preprocessing contract. It sits
below the format registry (dbd.runtime.formats names it as what a plug-in's `runner` returns), so the
registry, the metadata reader and the runners import in one direction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from .refine import RefineSpec
from .resize import downscale
from .spec import PreprocessSpec


class Runner(ABC):
    format: str
    precision: str

    def __init__(self, path: Path | None, spec: PreprocessSpec, info: dict[str, Any]):
        self.path, self.spec, self.info = path, spec, info

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.input_size

    @abstractmethod
    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float RGB in [0, 1] at the model size -> (N, H, W) float32 P(blur)."""

    def model_inputs(self, photos: list[np.ndarray], downscaler: str | None = None) -> np.ndarray:
        """RGB uint8 photos of any size -> (N, H, W, 3) float RGB in [0, 1] at the model size: what
        `run` takes (PreprocessSpec.model_input of each; with `downscaler`, another capture
        pipeline's kernel on the uint8 pixels instead, dbd.data.capture)."""
        if downscaler is None:
            return np.stack([self.spec.model_input(p) for p in photos])
        return np.stack([self.spec.to_unit(downscale(p, self.size, downscaler)) for p in photos])

    def predict_photos(
        self, photos: list[np.ndarray], refine: RefineSpec | str | None = None, downscaler: str | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """RGB uint8 photos of any size -> (maps at the model's input size (N, H, W), the same maps
        at each photo's own size): the contract's resize (or `downscaler`'s), the model, the refined
        resize back (`refine`: another last step than the file's own, e.g. "none" for bilinear)."""
        spec = self.spec.with_refine(refine)
        maps = self.run(self.model_inputs(photos, downscaler))
        return maps, [spec.postprocess(m, p) for m, p in zip(maps, photos)]
