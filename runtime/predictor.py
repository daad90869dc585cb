"""The Predictor: photo in, blur map out, for any model file.

    predictor = Predictor()                          # the shipped student
    predictor = Predictor("exports/dbd_student_int8.tflite", threads=1)
    blur = predictor.predict(read_image("photo.jpg"))   # HxW float32 P(blur) at the photo's size

Any input size: the photo is resized to the model (the file's own preprocessing spec) and the map
resized back. With `tile=T`, a large photo is also cut into overlapping T x T tiles, each run at
the model's size and blended back with smooth weights — finer boundaries on big photos, at the
cost of one run per tile.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from dbd.models.errors import DBDError

from .runners import Runner, open_runner


def default_weights() -> Path:
    from dbd.models.released import released_checkpoint

    return released_checkpoint("dbd_student")


class Predictor:
    def __init__(self, weights: str | Path | None = None, threads: int | None = None, device: str = "cpu",
                 batch: int = 8, tile: int = 0):
        self.runner: Runner = open_runner(weights or default_weights(), threads, device)
        self.spec = self.runner.spec
        self.batch = max(1, batch)
        if tile and tile < 64:
            raise DBDError(f"--tile {tile} is too small; use 0 (off) or a tile size of at least 64 pixels")
        self.tile = tile

    def _model_input(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DBDError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        return self.spec.resize_image(image.astype(np.float32) / np.float32(self.spec.pixel_scale))

    def predict_many(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        """Whole-image maps for many photos, batched where the format allows."""
        images = list(images)
        maps: list[np.ndarray] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            probs = self.runner.run(np.stack([self._model_input(im) for im in chunk]))
            maps += [self.spec.postprocess(p, im.shape[:2]) for p, im in zip(probs, chunk)]
        return maps

    def predict(self, image: np.ndarray) -> np.ndarray:
        whole = self.predict_many([image])[0]
        if not self.tile or max(image.shape[:2]) <= self.tile:
            return whole
        return self._tiled(image, whole)

    def _tiled(self, image: np.ndarray, whole: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        t = self.tile
        step = max(1, int(t * 0.75))  # 25 % overlap
        tops = sorted({min(y, max(0, h - t)) for y in range(0, max(1, h - t + step), step)})
        lefts = sorted({min(x, max(0, w - t)) for x in range(0, max(1, w - t + step), step)})
        boxes = [(y, x) for y in tops for x in lefts]
        # A tent window: tile centres count most, so seams blend smoothly.
        ramp_y = 1.0 - np.abs(np.linspace(-1, 1, min(t, h), dtype=np.float32)) * 0.9
        ramp_x = 1.0 - np.abs(np.linspace(-1, 1, min(t, w), dtype=np.float32)) * 0.9
        window = np.outer(ramp_y, ramp_x)
        acc = np.zeros((h, w), np.float32)
        weight = np.zeros((h, w), np.float32)
        crops = [image[y:y + t, x:x + t] for y, x in boxes]
        for (y, x), prob in zip(boxes, self.predict_many(crops)):
            ph, pw = prob.shape
            acc[y:y + ph, x:x + pw] += prob * window[:ph, :pw]
            weight[y:y + ph, x:x + pw] += window[:ph, :pw]
        # Tiles judge blur locally; the whole-image map keeps the global context. Average the two.
        return 0.5 * (acc / np.maximum(weight, 1e-6)) + 0.5 * whole
