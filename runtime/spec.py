"""The preprocessing spec: the one definition of how pixels become the model's input tensor and
how its output becomes a blur map. Training, export metadata, calibration, benchmarks and the
Android app all read it from here (or from the copy embedded in a checkpoint/exported file), so
they cannot drift apart.

The contract, for an RGB uint8 photo of any size:
  1. x = pixels / 255 (float32, RGB channel order)                       `to_unit`
  2. resize x to `input_size` with bilinear interpolation, half-pixel centres (cv2.INTER_LINEAR
     on float data), stretching the aspect ratio                          `resize_image`
     (1 + 2 = `model_input`: what every runner's `run` takes)
  3. x = (x - mean) / std per channel                                     `normalize`
     laid out as `layout`                                                 `to_layout`
     (1 + 2 + 3 = `preprocess`: the model's input tensor in one call)
  4. the model returns P(blur) per pixel (1 = out of focus) at `input_size`; the map is brought
     back to the photo's size by `refine` (dbd.runtime.refine): a fast colour guided filter on the
     logit, guided by the photo, so boundaries follow the photo's edges; `refine.method = "none"`
     is a plain bilinear resize (the contract of files exported before refinement)  `postprocess`

This module is the only place that arithmetic is written: the runners, the Predictor, evaluation,
TTA, export calibration and parity, the exported files' `encode_input` and training's data all
call it. `resize_bilinear`, `normalize`, `to_layout` and `to_pixels` also exist as functions of
plain values, for the exported files' metadata (whose "input" entry carries its own mean/std).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from dbd.core import DBDError

from .refine import RefineSpec, refine_map
from .resize import resize_bilinear

SPEC_FORMAT = "dbd-preprocess/1"
OUTPUT_MEANING = "blur_probability"  # 1 = out of focus (white = blur), like Distill-DBDGAN


def normalize(unit: np.ndarray, mean, std) -> np.ndarray:
    """(..., H, W, 3) RGB in [0, 1] -> float32 (unit - mean) / std per channel."""
    return (np.asarray(unit, np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """(H, W, 3) or (N, H, W, 3) -> the same values as `layout` (NCHW: channels before H, W), contiguous."""
    if layout not in ("NCHW", "NHWC"):
        raise DBDError(
            f"tensor layout '{layout}' is not supported (expected NCHW or NHWC); re-export the model with dbd-export"
        )
    return np.ascontiguousarray(np.moveaxis(x, -1, -3) if layout == "NCHW" else x)


def to_pixels(unit: np.ndarray, pixel_scale: float) -> np.ndarray:
    """RGB in [0, 1] -> float32 pixels 0..pixel_scale: the input of the graphs that fold the
    normalisation in (`normalization: folded` in an export's metadata)."""
    return np.asarray(unit, np.float32) * np.float32(pixel_scale)


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int] = (320, 320)  # (height, width) of the model input
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # in units of pixel/255
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "bilinear"  # half-pixel centres, aspect ratio stretched
    channel_order: str = "RGB"
    layout: str = "NCHW"
    pixel_scale: float = 255.0  # uint8 pixels are divided by this first
    output: str = OUTPUT_MEANING
    refine: RefineSpec = RefineSpec()  # the last step: map -> photo's resolution, edge-aware

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise DBDError(f"input size {h}x{w} must be positive multiples of 32 (the encoders' stride)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise DBDError(f"normalisation needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}")
        for name, value, allowed in (
            ("resize", self.resize, ("bilinear",)),
            ("channel_order", self.channel_order, ("RGB",)),
            ("layout", self.layout, ("NCHW", "NHWC")),
            ("output", self.output, (OUTPUT_MEANING,)),
        ):
            if value not in allowed:
                raise DBDError(f"preprocessing {name} '{value}' is not supported; expected one of {allowed}")

    @classmethod
    def for_model(cls, model: Any, input_size: tuple[int, int] | None = None) -> "PreprocessSpec":
        """The spec a model was built for: its encoder's normalisation and its native input size."""
        cfg = model.pretrained_cfg
        return cls(input_size=tuple(input_size or cfg["input_size"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    def with_refine(self, refine: "RefineSpec | str | None") -> "PreprocessSpec":
        """This spec with another last step: a RefineSpec, "none" (bilinear), "guided" (the default
        guided filter) or None (unchanged)."""
        if refine is None:
            return self
        if isinstance(refine, str):
            if refine not in ("none", "guided"):
                raise DBDError(f"refine '{refine}' is not known; use none (bilinear) or guided")
            refine = RefineSpec.none() if refine == "none" else RefineSpec()
        if not isinstance(refine, RefineSpec):
            raise DBDError(f"refine must be 'none', 'guided' or a RefineSpec, got a {type(refine).__name__}")
        return replace(self, refine=refine)

    @classmethod
    def from_card(cls, card: dict[str, Any], path: Any) -> "PreprocessSpec":
        """The spec of a checkpoint's model card; a malformed one is one line naming the file. (models/
        reads cards without interpreting the spec: it sits below runtime/.)"""
        try:
            return cls.from_dict(card["preprocess"])
        except DBDError as err:
            raise DBDError(f"checkpoint '{path}': {err}") from None

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
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known and k != "refine"}
        try:
            # A spec written before refinement existed has no "refine": its contract is bilinear.
            values["refine"] = RefineSpec.from_dict(data["refine"]) if "refine" in data else RefineSpec.none()
            return cls(**values)
        except (TypeError, ValueError) as err:  # e.g. input_size "320" or mean [0.5, "x", 0.5]
            raise DBDError(
                f"preprocessing spec has a malformed value ({' '.join(str(err).split())}); re-save the model"
            ) from None

    def to_unit(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (any shape) -> float32 pixels / pixel_scale, RGB in [0, 1]."""
        return pixels.astype(np.float32) / np.float32(self.pixel_scale)

    def resize_image(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """HxW(xC) -> `input_size` (or `size`) with the spec's kernel (`resize_bilinear`)."""
        return resize_bilinear(image, self.input_size if size is None else size)

    def model_input(self, photo: np.ndarray) -> np.ndarray:
        """RGB uint8 photo of any size -> float32 (H, W, 3) RGB in [0, 1] at `input_size`: pixels /
        pixel_scale first, then the resize on float data (what a runner's `run` takes, stacked)."""
        return self.resize_image(self.to_unit(photo))

    def normalize(self, unit: np.ndarray) -> np.ndarray:
        """(..., H, W, 3) RGB in [0, 1] -> float32 (unit - mean) / std, still channels-last."""
        return normalize(unit, self.mean, self.std)

    def to_layout(self, x: np.ndarray, layout: str | None = None) -> np.ndarray:
        """Channels-last (H, W, 3) or (N, H, W, 3) -> `layout` (default: the spec's; a PyTorch
        network always takes "NCHW", whatever layout an export of it was made for)."""
        return to_layout(x, self.layout if layout is None else layout)

    def to_pixels(self, unit: np.ndarray) -> np.ndarray:
        """RGB in [0, 1] -> float32 pixels 0..pixel_scale (the folded graphs' input)."""
        return to_pixels(unit, self.pixel_scale)

    def folded_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, bias), float64 per channel, with pixels * scale + bias = (pixels / pixel_scale -
        mean) / std: the one multiply-add a graph that takes plain pixels applies itself."""
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return 1.0 / (float(self.pixel_scale) * std), -mean / std

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> float32 input tensor (1, 3, H, W) or (1, H, W, 3) per `layout`."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DBDError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        return self.to_layout(self.normalize(self.model_input(image))[None])

    def postprocess(self, prob: np.ndarray, photo: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Model output (any of HxW, 1xHxW, 1x1xHxW, HxWx1) and the RGB uint8 photo it was made from
        -> float32 P(blur) at the photo's size (or `out_hw`), refined as `refine` says."""
        prob = np.asarray(prob, np.float32).squeeze()
        if prob.ndim != 2:
            raise DBDError(f"expected a single-channel blur map, got shape {np.shape(prob)}")
        return refine_map(prob, photo, self.refine, out_hw)
