"""dbd-bench output: a terminal table, and Markdown, JSON and plots in the report folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dbd.core import atomic_write
from dbd.evaluation.metrics import ANATOMY, LITERATURE, METRICS


def _f(value: Any, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return format(value, fmt)


def _model_cells(rows: list[dict[str, Any]]) -> dict[int, str]:
    """id(row) -> its model column: the model's name, with its input size where the rows hold that
    model at several sizes (e.g. a student exported at 256² and at 320²: same name, same row id)."""
    plain = [r for r in rows if "+tta" not in r["format"]]  # a TTA row's views have sizes of their own
    sizes: dict[str, set] = {}
    for r in plain:
        sizes.setdefault(r["model"], set()).add(tuple(r.get("input_size") or ()))
    cells = {id(r): r["model"] for r in rows}
    for r in plain:
        h, w = (tuple(r.get("input_size") or ()) + (None, None))[:2]
        several = len(sizes[r["model"]]) > 1 and h is not None
        cells[id(r)] = (
            f"{r['model']} {h}²" if several and h == w else f"{r['model']} {h}x{w}" if several else r["model"]
        )
    return cells


def speed_table(rows: list[dict[str, Any]], threads: list[int]) -> tuple[list[str], list[list[str]]]:
    """Size and speed, one row per model file (the rows scored from another row's maps have none)."""
    header = ["model", "format", "prec", "MB", "params M", "GMACs"]
    for t in threads:
        header += [f"ms@{t}t", f"p90@{t}t", f"FPS@{t}t", f"%peak@{t}t"]
    header += ["peak MB"]
    model = _model_cells(rows)
    body = []
    for r in rows:
        if r.get("accuracy_only"):
            continue
        line = [model[id(r)], r["format"], r["precision"], _f(r["size_mb"], ".2f"), _f(r["params_m"], ".2f")]
        line += [_f(r["gmacs"], ".2f")]
        for t in threads:
            lat = r.get("latency", {}).get(str(t))
            line += (
                [_f(lat["median_ms"], ".1f"), _f(lat["p90_ms"], ".1f"), _f(lat["fps"], ".1f"), _peak_cell(lat)]
                if lat
                else ["–"] * 4
            )
        body.append(line + [_f(r.get("peak_mem_mb"), ".0f")])
    return header, body


def accuracy_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Accuracy on the scored pairs and against the teacher and the fp32 student, one row per model
    file and last step (map: guided refinement or bilinear)."""
    header = ["model", "format", "prec", "map"] + [METRICS[k].label for k in LITERATURE]
    header += ["ΔFβ teacher", "ΔMAE teacher", "PSNR teacher", "ΔFβ student", "PSNR student"]
    emulated = any(r.get("vs_x86") for r in rows)  # dbd-bench --arch: the emulated rows against x86
    if emulated:
        header += ["ΔFβ x86", "ΔMAE x86", "flips x86", "max ΔP x86"]
    model = _model_cells(rows)
    body = []
    for r in rows:
        m, vt, vs = r.get("metrics") or {}, r.get("vs_teacher") or {}, r.get("vs_student") or {}
        line = (
            [model[id(r)], r["format"], r["precision"], r.get("refine", "–")]
            + [_f(m.get(k), METRICS[k].fmt) for k in LITERATURE]
            + [_f(vt.get("d_fbeta"), "+.4f"), _f(vt.get("d_mae"), "+.4f"), _f(vt.get("psnr"), ".1f")]
            + [_f(vs.get("d_fbeta"), "+.4f"), _f(vs.get("psnr"), ".1f")]
        )
        if emulated:
            vx = r.get("vs_x86") or {}
            flips = vx.get("flips")
            line += [_f(vx.get("d_fbeta"), "+.4f"), _f(vx.get("d_mae"), "+.4f")]
            line += [_f(None if flips is None else 100 * flips, ".3f") + ("%" if flips is not None else "")]
            line += [_f(vx.get("max_abs"), ".2g")]
        body.append(line)
    return header, body


def _peak_cell(lat: dict[str, Any]) -> str:
    """%peak, with '?' where it is not to be trusted: never a bare figure above 100 %."""
    fraction = lat["peak_fraction"]
    reliable = lat.get("peak_fraction_reliable", True) and fraction <= 1.0
    return _f(fraction * 100, ".0f") + ("" if reliable else "?")


def refine_table(rows: list[dict[str, Any]], refine_ms: dict[str, float] | None) -> tuple[list[str], list[list[str]]]:
    """The guided refinement's cost per photo size beside each refined row's model latency at 1 thread."""
    if not refine_ms:
        return [], []
    timed = [r for r in rows if r.get("refine") == "guided" and r.get("latency", {}).get("1")]
    header = ["photo", "refine ms"] + [
        f"{r['model'].removeprefix('dbd_')} {r['format']} {r['precision']} ms" for r in timed
    ]
    body = [
        [size, _f(ms, ".1f")] + [_f(r["latency"]["1"]["median_ms"], ".1f") for r in timed]
        for size, ms in refine_ms.items()
    ]
    return header, body


def anatomy_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Where each model decides wrong (runtime.metrics.DecisionMetrics), as fractions of all pixels."""
    header = ["model", "format", "prec", "map"] + [METRICS[k].label for k in ANATOMY]
    model = _model_cells(rows)
    body = [
        [model[id(r)], r["format"], r["precision"], r.get("refine", "–")]
        + [_f(r["decisions"].get(k), METRICS[k].fmt) for k in ANATOMY]
        for r in rows
        if r.get("decisions")
    ]
    return header, body


def robustness_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Fβ@0.5 (and its change) when photos reach each model through another capture pipeline."""
    scored = [r for r in rows if r.get("robustness")]
    if not scored:
        return [], []
    conditions = list(scored[0]["robustness"])
    header = ["model", "format", "prec"] + [f"Fβ {c}" for c in conditions] + ["worst ΔFβ", "worst ΔMAE"]
    model = _model_cells(rows)
    body = []
    for r in scored:
        rob = r["robustness"]
        base = rob[conditions[0]]
        d_f = [rob[c]["fbeta_fixed"] - base["fbeta_fixed"] for c in conditions]
        d_m = [rob[c]["mae"] - base["mae"] for c in conditions]
        body.append(
            [model[id(r)], r["format"], r["precision"]]
            + [f"{rob[c]['fbeta_fixed']:.4f} ({d:+.4f})" for c, d in zip(conditions, d_f)]
            + [_f(min(d_f), "+.4f"), _f(max(d_m), "+.4f")]
        )
    return header, body


def terminal(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def markdown(
    header: list[str],
    body: list[list[str]],
    title: str,
    notes: list[str],
    sections: list[tuple[str, list[str], list[list[str]]]] = (),
) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += [""] + [f"- {n}" for n in notes]
    for name, head, rows in sections:
        if rows:
            lines += ["", f"## {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plots(rows: list[dict[str, Any]], folder: Path, threads: int) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.get("curves")]
    written = []
    fig, (pr, ft) = plt.subplots(1, 2, figsize=(12, 5))
    for r in scored:
        label = f"{r['model']} {r['format']} {r['precision']} {r.get('refine', '')}".strip()
        c = r["curves"]
        pr.plot(c["recall"], c["precision"], label=label)
        ft.plot(c["thresholds"], c["fbeta"], label=label)
    pr.set(xlabel="recall", ylabel="precision", title="PR curves (blur = positive)", xlim=(0, 1), ylim=(0.5, 1))
    ft.set(xlabel="threshold", ylabel="Fβ (β²=0.3)", title="Fβ vs threshold", xlim=(0, 1))
    pr.legend(fontsize=7), ft.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, folder / "curves.png"))
    fig, ax = plt.subplots(figsize=(9, 5))
    timed = [r for r in scored if r.get("latency", {}).get(str(threads))]
    markers = "os^vD<>pP*Xh"
    for i, r in enumerate(timed):  # a legend entry each, not labels beside points that overlap
        lat = r["latency"][str(threads)]
        label = f"{r['model'].removeprefix('dbd_')} {r['format']} {r['precision']}"
        ax.scatter(lat["median_ms"], r["metrics"]["fbeta_fixed"], marker=markers[i % len(markers)], s=50, label=label)
    ax.set(
        xscale="log",
        xlabel=f"latency median, ms ({threads} thread{'s' if threads > 1 else ''}; log scale)",
        ylabel="Fβ@0.5",
        title="latency vs accuracy (each file with its own last step)",
    )
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    if timed:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    written.append(_save(fig, folder / "latency_accuracy.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path


def write_reports(
    rows,
    header,
    body,
    folder: Path,
    title: str,
    notes: list[str],
    threads: list[int],
    sections: list[tuple[str, list[str], list[list[str]]]] = (),
    machine: dict | None = None,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "bench.md", folder / "bench.json"
    atomic_write(md, lambda tmp: Path(tmp).write_text(markdown(header, body, title, notes, sections)))
    atomic_write(
        js,
        lambda tmp: Path(tmp).write_text(
            json.dumps({"title": title, "notes": notes, "machine": machine, "rows": rows}, indent=1) + "\n"
        ),
    )
    return [md, js, *plots(rows, folder, threads[0])]
