"""Exporting dbd models: `export_model` (what dbd-export does, as a library call) and the pieces
format plug-ins work with (`base`, `pipeline`, `calibration`, `parity`, `metadata`).

    from dbd.export import export_model
    report = export_model(formats="all", precisions="all", out="exports")

The names below are imported lazily, on first use: format plug-ins live in this package and are
loaded whenever formats are looked up (also to predict), which must not import the export stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_model": ".run",
    "ExportProgress": ".run",
    "ExportReport": ".run",
    "ExportJob": ".base",
    "Verification": ".base",
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
