"""Running dbd models: `Predictor` (photo in, blur map out, any model file), `predict` (images,
folders and videos in, blur maps, masks and overlays written out: what dbd-predict runs), the
runners, the datasets and the metrics.

    from dbd.runtime import Predictor, predict, read_image
    blur = Predictor().predict(read_image("photo.jpg"))
    result = predict(["holidays/"], out="predictions")

The names below are imported lazily, on first use, so `import dbd.runtime.metadata` and the CLIs'
`--help` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Predictor": ".predictor",
    "default_weights": ".predictor",
    "predict": ".prediction",
    "PredictionResult": ".prediction",
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
