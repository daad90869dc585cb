"""The preprocessing spec: the one definition of how pixels become the model's input tensor and
how its output becomes a blur map. Training, export metadata, calibration, benchmarks and the
Android app all read it from here (or from the copy embedded in a checkpoint/exported file), so
they cannot drift apart.

The contract, for an RGB uint8 photo of any size:
  1. x = pixels / 255 (float32, RGB channel order)
  2. resize x to `input_size` with bilinear interpolation, half-pixel centres (cv2.INTER_LINEAR
     on float data), stretching the aspect ratio
  3. x = (x - mean) / std per channel, laid out as `layout`
  4. the model returns P(blur) per pixel (1 = out of focus) at `input_size`; the map is resized
     back to the photo's size with the same bilinear interpolation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from dbd.core import DBDError

SPEC_FORMAT = "dbd-preprocess/1"
OUTPUT_MEANING = "blur_probability"   # 1 = out of focus (white = blur), like Distill-DBDGAN


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int] = (320, 320)         # (height, width) of the model input
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # in units of pixel/255
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "bilinear"                         # half-pixel centres, aspect ratio stretched
    channel_order: str = "RGB"
    layout: str = "NCHW"
    pixel_scale: float = 255.0                       # uint8 pixels are divided by this first
    output: str = OUTPUT_MEANING

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise DBDError(f"input size {h}x{w} must be positive multiples of 32 (the encoders' stride)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise DBDError(f"normalisation needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}")
        for name, value, allowed in (("resize", self.resize, ("bilinear",)), ("channel_order", self.channel_order, ("RGB",)),
                                     ("layout", self.layout, ("NCHW", "NHWC")), ("output", self.output, (OUTPUT_MEANING,))):
            if value not in allowed:
                raise DBDError(f"preprocessing {name} '{value}' is not supported; expected one of {allowed}")

    @classmethod
    def for_model(cls, model: Any, input_size: tuple[int, int] | None = None) -> "PreprocessSpec":
        """The spec a model was built for: its encoder's normalisation and its native input size."""
        cfg = model.pretrained_cfg
        return cls(input_size=tuple(input_size or cfg["input_size"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        if not isinstance(data, dict):
            raise DBDError(f"preprocessing spec is a {type(data).__name__}, not a JSON object; re-save the model")
        if data.get("format") != SPEC_FORMAT:
            raise DBDError(f"preprocessing spec has format {data.get('format')!r}; this dbd reads {SPEC_FORMAT!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise DBDError(f"preprocessing spec has unknown fields {unknown}; it was written by a newer dbd")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:  # e.g. input_size "320" or mean [0.5, "x", 0.5]
            raise DBDError(f"preprocessing spec has a malformed value ({' '.join(str(err).split())}); "
                           f"re-save the model") from None

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> float32 input tensor (1, 3, H, W) or (1, H, W, 3) per `layout`."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DBDError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        x = self.resize_image(image.astype(np.float32) / self.pixel_scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return (x.transpose(2, 0, 1) if self.layout == "NCHW" else x)[None].astype(np.float32)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        if image.shape[:2] == (h, w):
            return image
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)

    def postprocess(self, prob: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
        """Model output (any of HxW, 1xHxW, 1x1xHxW, HxWx1) -> float32 P(blur) at the photo's size."""
        prob = np.asarray(prob, np.float32).squeeze()
        if prob.ndim != 2:
            raise DBDError(f"expected a single-channel blur map, got shape {np.shape(prob)}")
        h, w = original_hw
        if prob.shape != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(prob, 0.0, 1.0)
