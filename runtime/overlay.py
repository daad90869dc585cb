"""What `dbd.runtime.predict` draws from a blur map: the 8-bit map, the thresholded mask and the
overlay over the photo. The web and Android demos reproduce `overlay` pixel for pixel (their parity
tests compare against it), so a change here is a change of their reference too.
"""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_STYLES = ("tint", "heat")
TINT_RGB = np.array([255, 40, 40], np.float32)  # blur regions in red


def overlay(image: np.ndarray, prob: np.ndarray, style: str, threshold: float) -> np.ndarray:
    """RGB uint8: 'tint' reddens pixels with P(blur) >= threshold; 'heat' blends a JET heat map."""
    if style == "heat":
        heat = cv2.applyColorMap(np.round(prob * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        return cv2.addWeighted(image, 0.5, heat, 0.5, 0)
    alpha = np.where(prob >= threshold, 0.45, 0.0).astype(np.float32)[..., None]
    return np.round(image * (1 - alpha) + TINT_RGB * alpha).astype(np.uint8)


def blur_map_u8(prob: np.ndarray) -> np.ndarray:
    """The map as 8-bit grey: 0 = sharp, 255 = out of focus."""
    return np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)


def blur_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """8-bit grey: 255 where P(blur) >= threshold, else 0."""
    return np.where(prob >= threshold, 255, 0).astype(np.uint8)
