"""Exporting dbd models: `export_model` (what dbd-export does, as a library call) and the pieces
format plug-ins work with (`base`, `pipeline`, `calibration`, `parity`, `metadata`).

    from dbd.export import export_model
    report = export_model(formats="all", precisions="all", out="exports")

The names below are imported lazily, on first use: format plug-ins live in this package and are
loaded whenever formats are looked up (also to predict), which must not import the export stack.
"""

from __future__ import annotations

from dbd.core.lazy import lazy_exports

_LAZY = {
    "export_model": ".api",
    "ExportProgress": ".api",
    "ExportReport": ".api",
    "ExportJob": ".base",
    "Verification": ".base",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
