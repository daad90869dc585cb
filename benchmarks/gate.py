"""The accuracy-regression gate: a committed baseline per model/format/precision, checked
one-sided (as MMDeploy's regression test does): a row fails when a higher-is-better metric falls
below baseline − tolerance, or MAE rises above baseline + tolerance. Improvements never fail;
`dbd-bench --update-baseline FILE` records new values deliberately.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dbd.core import DBDError, atomic_write
from dbd.evaluation.metrics import METRICS, gated

BASELINE_FORMAT = "dbd-bench-baseline/1"


def default_tolerances() -> dict[str, float]:
    """The gated metrics and their tolerances, as dbd.evaluation.metrics.METRICS declares them."""
    return {key: METRICS[key].tolerance for key in gated()}


MAX_TOLERANCE = 0.1  # every metric lies in [0, 1]: a wider tolerance would let any regression pass


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_baseline(path: Path) -> dict[str, Any]:
    """The baseline at `path`, checked: anything malformed is a one-line DBDError naming the file and key."""
    if path.is_dir():
        raise DBDError(f"baseline '{path}' is a folder; pass the baseline JSON file")
    if not path.is_file():
        raise DBDError(f"baseline '{path}' does not exist; write one with dbd-bench --update-baseline {path}")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DBDError(f"cannot read baseline '{path}' ({err.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise DBDError(f"baseline '{path}' is not UTF-8 text; regenerate it with --update-baseline") from None
    except json.JSONDecodeError as err:
        raise DBDError(
            f"baseline '{path}' is not valid JSON ({err.msg} at line {err.lineno}); fix or regenerate it"
        ) from None
    fix = "fix it or regenerate it with --update-baseline"
    if not isinstance(baseline, dict):
        raise DBDError(f"baseline '{path}' is a JSON {type(baseline).__name__}, not a {BASELINE_FORMAT} object; {fix}")
    if baseline.get("format") != BASELINE_FORMAT or not isinstance(baseline.get("rows"), dict):
        raise DBDError(f"baseline '{path}' is not a {BASELINE_FORMAT} file; regenerate it with --update-baseline")
    if not isinstance(baseline.get("data"), str):
        raise DBDError(f"baseline '{path}' has no 'data' string (the dataset it was measured on); {fix}")
    if not baseline["rows"]:
        raise DBDError(f"baseline '{path}' has no rows, so the gate would compare nothing; {fix}")
    tolerances = baseline.get("tolerances", {})
    if not isinstance(tolerances, dict):
        raise DBDError(f"baseline '{path}': 'tolerances' must be an object of metric: number; {fix}")
    for metric, tol in tolerances.items():
        if metric not in gated():
            raise DBDError(
                f"baseline '{path}': unknown metric 'tolerances.{metric}' (known: {', '.join(gated())}); {fix}"
            )
        if not _number(tol) or not 0 <= tol <= MAX_TOLERANCE:
            raise DBDError(
                f"baseline '{path}': 'tolerances.{metric}' must be a number from 0 to {MAX_TOLERANCE}, "
                f"got {tol!r}; {fix}"
            )
    for row_id, expected in baseline["rows"].items():
        if not isinstance(expected, dict) or not expected:
            raise DBDError(f"baseline '{path}': row '{row_id}' must be a non-empty object of metric: value; {fix}")
        for metric, value in expected.items():
            if metric not in gated():
                raise DBDError(
                    f"baseline '{path}': row '{row_id}' has unknown metric '{metric}' "
                    f"(known: {', '.join(gated())}); {fix}"
                )
            if not _number(value):
                raise DBDError(f"baseline '{path}': '{row_id}.{metric}' must be a finite number, got {value!r}; {fix}")
            if not 0 <= value <= 1:
                raise DBDError(f"baseline '{path}': '{row_id}.{metric}' must be in [0, 1], got {value!r}; {fix}")
    return baseline


def duplicate_rows(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row id that two benchmarked files share (e.g. two int8 .tflite files of the same
    model under different names): only one of them could be compared, so the gate fails on it."""
    first: dict[str, Any] = {}
    lines = []
    for r in rows:
        if r["id"] in first:
            lines.append(
                f"{r['id']}: both '{first[r['id']]}' and '{r.get('file')}' give this row id (same model, format "
                f"and precision), so one would hide the other; keep one of them in the exports folder"
            )
        else:
            first[r["id"]] = r.get("file")
    return lines


def unbaselined_rows(baseline: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """One line per benchmarked row that the baseline has no row for (so nothing compared it)."""
    known = baseline.get("rows") or {}
    return [
        f"{r['id']} ('{r.get('file')}'): the baseline has no row for it, so it was not compared"
        for r in rows
        if r["id"] not in known and r.get("metrics") is not None
    ]


def check(
    baseline: dict[str, Any], rows: list[dict[str, Any]], data: str, *, allow_new_rows: bool = False
) -> list[str]:
    """Every regression as one line 'row: metric value vs baseline (tolerance)'; empty = pass.

    A gate that compares nothing fails: a baseline without rows is refused by `load_baseline`, a
    row not benchmarked in this run fails, and so does a metric that is missing or not finite.
    Two files giving the same row id fail, and so does a benchmarked row the baseline has no row
    for, unless `allow_new_rows` (then `unbaselined_rows` lists them, and the caller says so)."""
    if baseline.get("data") != data:
        return [f"baseline was measured on {baseline.get('data')!r} but this run used {data!r}"]
    if not baseline.get("rows"):
        return ["the baseline has no rows: nothing was compared"]
    tolerances = {**default_tolerances(), **baseline.get("tolerances", {})}
    current = {r["id"]: r for r in rows}
    failures = duplicate_rows(rows)
    if not allow_new_rows:
        failures += [
            f"{line} (add it with --update-baseline, or pass --allow-new-rows)"
            for line in unbaselined_rows(baseline, rows)
        ]
    for row_id, expected in baseline["rows"].items():
        row = current.get(row_id)
        if row is None or row.get("metrics") is None:
            failures.append(f"{row_id}: not benchmarked in this run (export it, or remove it from the baseline)")
            continue
        for metric, reference in expected.items():
            value, tol = row["metrics"].get(metric), tolerances[metric]
            if not _number(value):
                failures.append(f"{row_id}: {metric} is {value!r} in this run, not a finite number")
            elif METRICS[metric].regressed(value, reference, tol):
                moved, sign = ("fell", "-") if METRICS[metric].higher_is_better else ("rose", "+")
                failures.append(
                    f"{row_id}: {metric} {moved} to {value:.4f} (baseline {reference:.4f}, tolerance {sign}{tol})"
                )
    return failures


def write_baseline(path: Path, rows: list[dict[str, Any]], data: str, previous: dict[str, Any] | None = None) -> None:
    duplicates = duplicate_rows([r for r in rows if r.get("metrics") is not None])
    if duplicates:
        raise DBDError(f"{duplicates[0]}; '{path}' was left as it was")
    tolerances = (previous or {}).get("tolerances", default_tolerances())
    doc = {
        "format": BASELINE_FORMAT,
        "data": data,
        "tolerances": tolerances,
        "rows": {
            r["id"]: {m: round(r["metrics"][m], 5) for m in gated()} for r in rows if r.get("metrics") is not None
        },
    }
    if not doc["rows"]:
        raise DBDError(f"no row was benchmarked, so there is no baseline to write to '{path}'; nothing written")
    bad = [f"{row_id}.{m}" for row_id, values in doc["rows"].items() for m, v in values.items() if not _number(v)]
    if bad:
        raise DBDError(
            f"'{bad[0]}' is not a finite number in this run, so it cannot be a baseline; '{path}' was left as it was"
        )
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n"))
