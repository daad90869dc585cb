"""The contract's one resize kernel (used by the preprocessing spec and by the refinement)."""

from __future__ import annotations

import numpy as np


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The contract's one resize kernel: HxW or HxWxC -> `size` = (height, width), bilinear with
    half-pixel centres, no antialiasing, aspect ratio stretched (cv2.INTER_LINEAR). Returns
    `array` itself when it already has that size (cv2 would return an equal copy)."""
    h, w = int(size[0]), int(size[1])
    if array.shape[:2] == (h, w):
        return array
    import cv2  # lazily: dbd.runtime.metadata imports this module and stays light

    return cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)
