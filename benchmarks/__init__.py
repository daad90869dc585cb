"""Benchmarking dbd models: `run` (what dbd-bench does: size, speed and accuracy of every model
file, the reports and the accuracy-regression gate) and its parts (`measure`, `report`, `gate`).

    from dbd.benchmarks import run
    result = run(runs=0, limit=20, report=None)      # accuracy only, first 20 pairs, no report files

`run` is imported lazily, on first use, so `import dbd.benchmarks.gate` and dbd-bench's `--help`
do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run": ".bench",
    "BenchResult": ".bench",
    "model_files": ".bench",
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
