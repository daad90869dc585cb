"""Benchmarking dbd models: `run` (what dbd-bench does: size, speed and accuracy of every model
file, the reports and the accuracy-regression gate) and its parts (`measure`, `tables`, `gate`).

    from dbd.benchmarks import run
    result = run(runs=0, limit=20, report=None)      # accuracy only, first 20 pairs, no report files

`run` is imported lazily, on first use, so `import dbd.benchmarks.gate` and dbd-bench's `--help`
do not load torch.
"""

from __future__ import annotations

from dbd.core.lazy import lazy_exports

_LAZY = {
    "run": ".bench",
    "BenchResult": ".bench",
    "model_files": ".bench",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
