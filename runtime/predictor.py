"""The Predictor: photo in, blur map out, for any model file.

    predictor = Predictor()                          # the shipped student
    predictor = Predictor("exports/dbd_student_320_int8.SUFFIX", threads=1)   # any registered format
    blur = predictor.predict(read_image("photo.jpg"))   # HxW float32 P(blur) at the photo's size

Any input size: the photo is resized to the model (the file's own preprocessing spec) and the map
brought back to the photo's resolution by the spec's last step, an edge-aware guided filter on
the logit (`refine="none"`: a plain bilinear resize, as files exported before it). With `tile=T`, a large photo is also cut into overlapping T x T tiles, each run at
the model's size and blended back with smooth weights — finer boundaries on big photos, at the
cost of one run per tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from dbd.core import MAX_THREADS, DBDError

from .formats import describe_suffixes
from .refine import RefineSpec
from .runners import Runner, open_runner


def default_weights() -> Path:
    from dbd.models.shipped import released_checkpoint

    return released_checkpoint("dbd_student")


DEVICES = ("cpu", "cuda")


class NonFiniteOutput(DBDError):
    """The model returned NaN or inf: a fault of the model file, not of the photo."""


def _check_image(image: object, index: int | None = None) -> None:
    which = "image" if index is None else f"image {index}"
    if not isinstance(image, np.ndarray):
        hint = " (a path: read it with dbd.runtime.read_image first)" if isinstance(image, (str, Path)) else ""
        raise DBDError(f"{which}: expected an RGB uint8 HxWx3 numpy array, got a {type(image).__name__}{hint}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DBDError(f"{which}: expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DBDError(f"{which}: the image is empty ({image.shape[0]}x{image.shape[1]} pixels); pass a real photo")


class Predictor:
    def __init__(
        self,
        weights: str | Path | None = None,
        threads: int | None = None,
        device: str = "cpu",
        batch: int = 8,
        tile: int = 0,
        refine: RefineSpec | str | None = None,
    ):
        if weights is not None and (not isinstance(weights, (str, Path)) or not str(weights).strip()):
            raise DBDError(
                f"weights={weights!r} is not a model file; pass the path of a .safetensors checkpoint or "
                f"a {describe_suffixes()} export, or None for the shipped student"
            )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise DBDError(f"threads must be a positive whole number (or None: all cores), got {threads!r}")
        if threads is not None and threads > MAX_THREADS:
            raise DBDError(f"threads={threads} is too many; pass at most {MAX_THREADS} (or None: all cores)")
        if device not in DEVICES:
            raise DBDError(f"device {device!r} is not supported; use one of {', '.join(DEVICES)}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise DBDError(f"batch must be a positive whole number, got {batch!r}")
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0:
            raise DBDError(f"tile must be 0 (off) or a tile size in pixels, got {tile!r}")
        if tile and tile < 64:
            raise DBDError(f"--tile {tile} is too small; use 0 (off) or a tile size of at least 64 pixels")
        self.runner: Runner = open_runner(default_weights() if weights is None else weights, threads, device)
        # The last step of the contract: the file's own refinement, unless `refine` says otherwise
        # ("none": plain bilinear, "guided": the default guided filter, or a RefineSpec).
        self.spec = self.runner.spec.with_refine(refine)
        self.batch = batch
        self.tile = tile

    def _model_input(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        return self.spec.model_input(image)

    def predict_many(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        """Whole-image maps for many photos, batched where the format allows."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise DBDError("predict_many takes a list of images; for one image call predict(image)")
        images = list(images)
        for i, image in enumerate(images):
            _check_image(image, i)
        maps: list[np.ndarray] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            probs = np.asarray(self.runner.run(np.stack([self._model_input(im) for im in chunk])))
            if not np.isfinite(probs).all():
                raise NonFiniteOutput(
                    f"model '{self.runner.path}' returned non-finite values (NaN or inf): its "
                    f"weights are damaged or overflow; re-export or retrain it"
                )
            maps += [self.spec.postprocess(p, im) for p, im in zip(probs, chunk)]
        return maps

    def predict(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
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
        crops = [image[y : y + t, x : x + t] for y, x in boxes]
        for (y, x), prob in zip(boxes, self.predict_many(crops)):
            ph, pw = prob.shape
            acc[y : y + ph, x : x + pw] += prob * window[:ph, :pw]
            weight[y : y + ph, x : x + pw] += window[:ph, :pw]
        # Tiles judge blur locally; the whole-image map keeps the global context. Average the two.
        return 0.5 * (acc / np.maximum(weight, 1e-6)) + 0.5 * whole
