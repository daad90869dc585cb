"""How a photo reaches the model outside our own pipeline: other downscalers, JPEG recompression,
sensor noise. Used twice: as label-preserving training augmentation (dbd.training.data) and as the
robustness table of dbd-bench and the report (each model scored with every downscaler and at
JPEG quality 70), so training and measurement vary the capture in exactly the same ways.

Nothing here blurs or sharpens part of an image: a downscaler filters the whole frame uniformly
and JPEG/noise do not move the in-focus/out-of-focus contrast that defines the label.
"""

from __future__ import annotations

import cv2
import numpy as np

from dbd.core import DBDError
from dbd.runtime.resize import DOWNSCALERS, downscale  # noqa: F401  (capture conditions name them)


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8 through a JPEG encode/decode at `quality` (1-100)."""
    if not 1 <= int(quality) <= 100:
        raise DBDError(f"JPEG quality must be in 1..100, got {quality}")
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DBDError(f"JPEG encoding failed for an image of shape {image.shape}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def sensor_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian noise of `sigma` grey levels on RGB uint8 (per pixel and channel)."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


class CaptureAugment:
    """Random capture pipeline for training: with probability `p` a sample gets a downscaler drawn
    from DOWNSCALERS, and maybe mild sensor noise and JPEG recompression before it (at the crop's
    own resolution, as a camera would); otherwise the contract's own resize."""

    def __init__(
        self,
        p: float,
        jpeg_quality: tuple[int, int] = (50, 95),
        noise_sigma: tuple[float, float] = (0.5, 3.0),
        p_jpeg: float = 0.5,
        p_noise: float = 0.3,
    ):
        if not 0.0 <= p <= 1.0:
            raise DBDError(f"--acquisition must be a probability in [0, 1], got {p}")
        self.p, self.jpeg_quality, self.noise_sigma = p, jpeg_quality, noise_sigma
        self.p_jpeg, self.p_noise = p_jpeg, p_noise

    def __call__(self, rng: np.random.Generator, crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 crop -> RGB uint8 at `size` (height, width)."""
        if self.p <= 0 or rng.random() >= self.p:
            return downscale(crop, size, "cv2_linear")
        if rng.random() < self.p_noise:
            crop = sensor_noise(rng, crop, rng.uniform(*self.noise_sigma))
        if rng.random() < self.p_jpeg:
            crop = jpeg_recompress(crop, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        return downscale(crop, size, DOWNSCALERS[int(rng.integers(len(DOWNSCALERS)))])


# The robustness table's conditions: the contract's own resize first (the reference), then each
# other downscaler straight to the model input, then JPEG at quality 70 before the contract's resize.
CAPTURE_CONDITIONS = DOWNSCALERS + ("jpeg70",)


def captured(pairs, condition: str):
    """(image, mask) pairs as the camera delivers them under a capture `condition`: recompressed for
    jpeg70, unchanged otherwise. A downscaler condition acts where the photo is resized to the model
    (`downscaler_of`, passed to evaluate): the map is still refined with the full photo as the guide,
    as an app that downscales its frames for the model but has the frame itself."""
    if condition not in CAPTURE_CONDITIONS:
        raise DBDError(f"unknown capture condition '{condition}'; use one of {', '.join(CAPTURE_CONDITIONS)}")
    for image, mask in pairs:
        yield (jpeg_recompress(image, 70) if condition == "jpeg70" else image), mask


def downscaler_of(condition: str) -> str | None:
    """The resize kernel a capture condition replaces the contract's with (None: the contract's own)."""
    return condition if condition in DOWNSCALERS and condition != "cv2_linear" else None
