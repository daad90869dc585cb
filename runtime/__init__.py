"""Running dbd models: `Predictor` (photo in, blur map out, any model file), `predict` (images,
folders and videos in, blur maps, masks and overlays written out: what dbd-predict runs), the
runners and the preprocessing contract. Data (datasets, synthetic data, capture variation) is in
dbd.data, scoring (metrics, TTA) in dbd.evaluation.

    from dbd.runtime import Predictor, predict, read_image
    blur = Predictor().predict(read_image("photo.jpg"))
    result = predict(["holidays/"], out="predictions")

The names below are imported lazily, on first use, so `import dbd.runtime.metadata` and the CLIs'
`--help` stay light.
"""

from __future__ import annotations

from dbd.core.lazy import lazy_exports

_LAZY = {
    "Predictor": ".predictor",
    "default_weights": ".predictor",
    "predict": ".predict_files",
    "PredictionResult": ".predict_files",
    "open_runner": ".runners",
    "read_image": ".imageio",
    "read_mask": ".imageio",
    "PreprocessSpec": ".spec",
    "read_metadata": ".metadata",
    "FileFormat": ".formats",
    "register_format": ".formats",
    "get_format": ".formats",
    "list_formats": ".formats",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
