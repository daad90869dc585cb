"""Running dbd models: `Predictor` (photo in, blur map out, any model file), the runners, the
datasets and the metrics.

    from dbd.runtime import Predictor, read_image
    blur = Predictor().predict(read_image("photo.jpg"))

The names below are imported lazily, on first use, so `import dbd.runtime.metadata` and the CLIs'
`--help` stay light.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Predictor": ".predictor",
    "default_weights": ".predictor",
    "open_runner": ".runners",
    "read_image": ".imageio",
    "read_mask": ".imageio",
    "PreprocessSpec": ".spec",
    "read_metadata": ".metadata",
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
