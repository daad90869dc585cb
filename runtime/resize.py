"""The contract's one resize kernel (used by the preprocessing spec and by the refinement), and the
other capture pipelines' downscalers that robustness scoring puts in its place."""

from __future__ import annotations

import numpy as np

from dbd.core import DBDError


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The contract's one resize kernel: HxW or HxWxC -> `size` = (height, width), bilinear with
    half-pixel centres, no antialiasing, aspect ratio stretched (cv2.INTER_LINEAR). Returns
    `array` itself when it already has that size (cv2 would return an equal copy)."""
    h, w = int(size[0]), int(size[1])
    if array.shape[:2] == (h, w):
        return array
    import cv2  # lazily: dbd.runtime.metadata imports this module and stays light

    return cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)


# The contract's own resize first (runtime.spec: bilinear, half-pixel centres, no antialiasing);
# then what a camera ISP, Android's Bitmap scaling or a browser's canvas typically do instead.
DOWNSCALERS = ("cv2_linear", "cv2_area", "pil_bilinear", "pil_bicubic")


def downscale(image: np.ndarray, size: tuple[int, int], kernel: str) -> np.ndarray:
    """RGB uint8 HxWx3 -> uint8 at `size` = (height, width) with the named resampling kernel.

    PIL's bilinear and bicubic widen their kernel when reducing (antialiasing); cv2's do not.
    """
    h, w = size
    if kernel == "cv2_linear":  # the contract's own kernel (PreprocessSpec), here on uint8 pixels
        return resize_bilinear(image, size)
    if kernel == "cv2_area":
        import cv2

        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if kernel in ("pil_bilinear", "pil_bicubic"):
        from PIL import Image

        resample = Image.Resampling.BILINEAR if kernel == "pil_bilinear" else Image.Resampling.BICUBIC
        return np.asarray(Image.fromarray(image).resize((w, h), resample))
    raise DBDError(f"unknown downscaler '{kernel}'; use one of {', '.join(DOWNSCALERS)}")
