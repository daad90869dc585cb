"""The accuracy-regression gate: a committed baseline per model/format/precision, checked
one-sided (as MMDeploy's regression test does): a row fails when a higher-is-better metric falls
below baseline − tolerance, or MAE rises above baseline + tolerance. Improvements never fail;
`dbd-bench --update-baseline FILE` records new values deliberately.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dbd.models.checkpoint import atomic_write
from dbd.models.errors import DBDError

BASELINE_FORMAT = "dbd-bench-baseline/1"
HIGHER_IS_BETTER = ("fbeta_fixed", "fbeta_adaptive", "fbeta_max", "iou")
LOWER_IS_BETTER = ("mae",)
DEFAULT_TOLERANCES = {"fbeta_fixed": 0.005, "fbeta_adaptive": 0.005, "fbeta_max": 0.005, "iou": 0.005, "mae": 0.003}


def load_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DBDError(f"baseline '{path}' does not exist; write one with dbd-bench --update-baseline {path}")
    try:
        baseline = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DBDError(f"baseline '{path}' is not valid JSON ({err.msg} at line {err.lineno}); fix or regenerate it") from None
    if baseline.get("format") != BASELINE_FORMAT or not isinstance(baseline.get("rows"), dict):
        raise DBDError(f"baseline '{path}' is not a {BASELINE_FORMAT} file; regenerate it with --update-baseline")
    return baseline


def check(baseline: dict[str, Any], rows: list[dict[str, Any]], data: str) -> list[str]:
    """Every regression as one line 'row: metric value vs baseline (tolerance)'; empty = pass."""
    if baseline.get("data") != data:
        return [f"baseline was measured on {baseline.get('data')!r} but this run used {data!r}"]
    tolerances = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    current = {r["id"]: r for r in rows}
    failures = []
    for row_id, expected in baseline["rows"].items():
        row = current.get(row_id)
        if row is None or row.get("metrics") is None:
            failures.append(f"{row_id}: not benchmarked in this run (export it, or remove it from the baseline)")
            continue
        for metric, reference in expected.items():
            value, tol = row["metrics"][metric], tolerances[metric]
            if metric in LOWER_IS_BETTER and value > reference + tol:
                failures.append(f"{row_id}: {metric} rose to {value:.4f} (baseline {reference:.4f}, tolerance +{tol})")
            elif metric in HIGHER_IS_BETTER and value < reference - tol:
                failures.append(f"{row_id}: {metric} fell to {value:.4f} (baseline {reference:.4f}, tolerance -{tol})")
    return failures


def write_baseline(path: Path, rows: list[dict[str, Any]], data: str, previous: dict[str, Any] | None = None) -> None:
    tolerances = (previous or {}).get("tolerances", DEFAULT_TOLERANCES)
    doc = {"format": BASELINE_FORMAT, "data": data, "tolerances": tolerances,
           "rows": {r["id"]: {m: round(r["metrics"][m], 5) for m in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER)}
                    for r in rows if r.get("metrics") is not None}}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n"))
