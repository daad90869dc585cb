"""`run`: the benchmark behind dbd-bench — size, speed on this machine and accuracy against the
teacher for the teacher, the fp32 student and every exported file — as one library call.

    from dbd.benchmarks import run
    result = run(runs=0, limit=20)                    # accuracy only, on the first 20 CUHK-TE-1 pairs
    for row in result.rows:
        print(row["id"], row["metrics"]["fbeta_fixed"])

It loads the files, measures and scores each, compares every row with the teacher and the student,
writes the reports (bench.md, bench.json, curves.png, latency_accuracy.png) and, when asked,
updates or checks the accuracy baseline (`gate`). Settings and output folders are checked before
anything is measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from dbd.core import MAX_THREADS, DBDError, check_int, check_writable
from dbd.data.capture import CAPTURE_CONDITIONS, captured, downscaler_of
from dbd.data.datasets import open_dataset
from dbd.evaluation.latency import measure_latency
from dbd.evaluation.metrics import DecisionMetrics
from dbd.evaluation.scoring import evaluate
from dbd.evaluation.tta import TTARecipe, TTARunner
from dbd.models import create_model
from dbd.models.shipped import role_of
from dbd.models.summary import count_macs, count_params
from dbd.runtime.formats import find_format
from dbd.runtime.formats import suffixes as export_suffixes
from dbd.runtime.hardware import cpu_info
from dbd.runtime.refine import RefineSpec
from dbd.runtime.runners import open_runner

from . import gate
from .measure import PeakMemory, gemm_peaks, map_psnr, peak_memory_mb
from .refine_rows import other_refine_row, refine_cost, refine_label
from .tables import accuracy_table, anatomy_table, refine_table, robustness_table, speed_table, write_reports

REPORT_FILES = ("bench.md", "bench.json", "curves.png", "latency_accuracy.png")  # what write_reports writes
MIN_RUNS = 50  # fewer timed runs give unstable percentiles


def model_files(
    teacher: str | Path | None = None,
    student: str | Path | None = None,
    exports: str | Path | None = "exports",
    weights: Iterable[str | Path] | None = None,
) -> list[Path]:
    """Teacher, student (default: the shipped ones), every export in `exports`, then `weights`:
    each file once, in that order."""
    from dbd.models.shipped import released_checkpoint

    found = [teacher or released_checkpoint("teacher"), student or released_checkpoint("student")]
    if exports is not None and Path(exports).is_dir():
        # Hidden and temporary files (a killed export's `.NAME.XXXX.tmp.SUFFIX`) are never model files.
        known = export_suffixes()
        found += sorted(
            p
            for p in Path(exports).iterdir()
            if p.suffix.lower() in known and not p.name.startswith(".") and ".tmp" not in p.name
        )
    if isinstance(weights, (str, os.PathLike)):  # one file, not a sequence of characters
        weights = [weights]
    found += list(weights or [])
    unique = list(dict.fromkeys(Path(p) for p in found))
    missing = [p for p in unique if not p.exists()]
    if missing:
        raise DBDError(f"'{missing[0]}' does not exist; pass existing checkpoints or exported files")
    return unique


_COST: dict[str, tuple[float, float]] = {}


def model_cost(arch: str, config: dict, size: tuple[int, int]) -> tuple[float, float]:
    """(params in M, GMACs) of an architecture at an input size (cached: exports share their source)."""
    key = repr((arch, sorted(config.items()), size))
    if key not in _COST:
        model = create_model(arch, **config)
        _COST[key] = (count_params(model) / 1e6, count_macs(model, size) / 1e9)
    return _COST[key]


def file_size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def bench_row(
    path: Path,
    pairs: list,
    threads: list[int],
    peaks: dict[int, float],
    *,
    device: str,
    runs: int,
    warmup: int,
    robustness: bool,
    tta: TTARecipe | None = None,
) -> list[dict[str, Any]]:
    """The file's row (its own last step), then the same maps scored with the other last step
    (`other_refine_row`); with `tta`, only the teacher as distillation uses it (accuracy only: it
    never ships).
    Its `_maps` (the blur maps, for the comparisons) is removed by `run` before reporting."""
    with PeakMemory() as memory:  # in this process: only the fallback (memory freed by earlier rows is reused)
        runner = open_runner(path, threads=max(threads), device=device)
        runner.run(np.zeros((1, *runner.size, 3), np.float32))
    # Peak memory alongside latency, the same way for every runtime: in a fresh process.
    fresh = peak_memory_mb(path, max(threads), device) if runs and tta is None else None
    peak_mem = fresh["peak_mb"] if fresh else (memory.mb if runs and tta is None else None)
    plain = runner
    if tta is not None:
        runner = TTARunner([plain], tta)
    info = runner.info
    arch = info["arch"] if runner.format == "torch" else info["model"]["arch"]
    config = info["config"] if runner.format == "torch" else info["model"].get("config", {})
    params, gmacs = model_cost(arch, config, runner.size)
    fmt = runner.format + (f"+tta {tta}" if tta is not None else "")
    refine = refine_label(runner.spec.refine)
    row: dict[str, Any] = {
        "id": f"{arch}:{fmt}:{runner.precision}:{refine}",
        "model": arch,
        "role": role_of(info, arch),  # "teacher"/"student" (the card's training stage) or None
        "format": fmt,
        "precision": runner.precision,
        "refine": refine,  # the map's last step: "guided" (edge-aware) or "bilinear"
        "refine_spec": runner.spec.refine.to_dict(),
        "input_size": list(runner.size),
        "file": str(path),
        "size_mb": file_size_mb(path),
        "params_m": params,
        "gmacs": gmacs,
        "peak_mem_mb": peak_mem,
        "memory": {
            "method": "fresh process" if fresh else "this process" if peak_mem is not None else None,
            "runtime_mb": fresh["runtime_mb"] if fresh else None,
        },
        "latency": {},
    }
    decisions = DecisionMetrics()
    metrics, maps = evaluate(runner, pairs, keep_maps=True, decisions=decisions)
    row["metrics"] = {k: v for k, v in metrics.compute().items() if k != "n_images"}
    row["decisions"] = decisions.compute()
    if robustness and tta is None:
        row["robustness"] = {
            c: {
                k: v
                for k, v in evaluate(plain, captured(pairs, c), downscaler=downscaler_of(c))[0].compute().items()
                if k != "n_images"
            }
            for c in CAPTURE_CONDITIONS
        }
    row["curves"] = {k: [round(float(x), 5) for x in v] for k, v in metrics.curves().items()}
    row["_maps"] = maps
    for t in threads if runs and tta is None else []:
        timed = runner if t == max(threads) else open_runner(path, threads=t, device=device)
        lat = measure_latency(timed, t, runs=runs, warmup=warmup)
        rate = gmacs / (lat.median_ms / 1000)
        row["latency"][str(t)] = {
            "median_ms": lat.median_ms,
            "p90_ms": lat.p90_ms,
            "fps": lat.fps,
            "runs": lat.runs,
            "gmacs_per_s": rate,
            "peak_fraction": rate / peaks[t],
            # above 100 % of the fp32 GEMM peak: not a measurement to trust as is
            "peak_fraction_reliable": rate <= peaks[t],
        }
    return [row] if tta is not None else [row, other_refine_row(row, runner.spec, pairs)]


def compare(row: dict, reference: dict | None) -> dict | None:
    if reference is None or row is reference:
        return None
    return {
        "d_fbeta": row["metrics"]["fbeta_fixed"] - reference["metrics"]["fbeta_fixed"],
        "d_mae": row["metrics"]["mae"] - reference["metrics"]["mae"],
        "psnr": map_psnr(row["_maps"], reference["_maps"]),
    }


def reference_rows(rows: list[dict], refine: str) -> tuple[dict | None, dict | None]:
    """What the rows with last step `refine` are compared with, found by role (whatever the arch's
    name): the teacher as distillation uses it (its TTA row, else its torch row) and the fp32 student
    (its torch row), both with that same last step (guided with guided); None where there is none."""
    same = [r for r in rows if r["refine"] == refine]
    teachers = [r for r in same if r.get("role") == "teacher"]
    teacher = next(
        (r for r in teachers if r["format"].startswith("torch+tta")),
        next((r for r in teachers if r["format"] == "torch"), None),
    )
    student = next((r for r in same if r.get("role") == "student" and r["format"] == "torch"), None)
    return teacher, student


def teacher_recipe(row: dict, flag: str | None) -> TTARecipe | None:
    """The TTA recipe to score a teacher row with: the flag, else the one its card says distillation used."""
    if row.get("role") != "teacher" or row["format"] != "torch":
        return None
    if flag is None:
        from dbd.models.checkpoint import read_card

        flag = read_card(row["file"]).get("distillation", {}).get("tta", "")
    recipe = TTARecipe.parse(flag)
    return None if recipe.plain else recipe


@dataclass
class BenchResult:
    rows: list[dict[str, Any]]  # one per model file (and the teacher with TTA), as bench.json holds them
    data: str  # what was scored, e.g. 'cuhk:test[:20]' (the baseline's 'data')
    title: str
    notes: list[str]  # the machine, the peak, how to read the columns
    machine: dict[str, Any]  # CPU and fp32 GEMM peak
    header: list[str]  # the main table, as text cells
    body: list[list[str]]
    sections: list[tuple[str, list[str], list[list[str]]]]  # (name, header, body) of the other tables
    report_files: list[Path] = field(default_factory=list)
    baseline_written: Path | None = None
    checked_against: Path | None = None  # the baseline of the gate, when one was checked
    baseline_rows: int = 0  # how many rows that baseline holds
    regressions: list[str] = field(default_factory=list)  # one line each; empty = no regression
    not_compared: list[str] = field(default_factory=list)  # rows the baseline has none for (allow_new_rows)

    @property
    def passed(self) -> bool:
        """True unless the gate was checked and found a regression."""
        return not self.regressions


def run(
    *,
    data: str | Path = "cuhk",
    split: str | None = "test",
    polarity: str | None = None,
    teacher: str | Path | None = None,
    student: str | Path | None = None,
    exports: str | Path | None = "exports",
    weights: Iterable[str | Path] | None = None,
    threads: Iterable[int] | None = None,
    runs: int = 50,
    warmup: int = 10,
    limit: int = 0,
    device: str = "cpu",
    teacher_tta: str | None = None,
    robustness: bool = False,
    arch: str | None = None,
    report: str | Path | None = "reports/bench",
    check: str | Path | None = None,
    update_baseline: str | Path | None = None,
    allow_new_rows: bool = False,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark the teacher, the student, every file in `exports` and `weights` on `data`/`split`
    (split None or '': every pair; `limit`: only the first N pairs).

    `threads`: thread counts to time (default: 1 and all cores); `runs`: timed runs per thread count,
    at least 50, or 0 for accuracy only; `teacher_tta`: also score the teacher with this TTA recipe
    (default: the one in its card; 'none' to skip); `robustness`: also score other capture
    pipelines; `arch`: also score every .tflite/.ncnn file under emulation of that CPU architecture
    ("aarch64": `dbd.benchmarks.emulation`, accuracy only); `report`: folder of the reports (None:
    write none); `update_baseline`: write this
    run as the new baseline there; `check`: compare with that baseline (`result.regressions`; a
    row the baseline has none for is a failure too, unless `allow_new_rows`: then it is listed in
    `result.not_compared`);
    `log`: called with a line as each file is done.
    """
    if isinstance(threads, (str, bytes)):
        raise DBDError(f"threads takes a list of positive integers (e.g. [1, {os.cpu_count()}]), got {threads!r}")
    threads = sorted(set(threads)) if threads is not None else sorted({1, os.cpu_count() or 1})
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
        raise DBDError(f"--threads takes positive integers (e.g. 1,{os.cpu_count()}), got {threads}")
    check_int(max(threads), "--threads", maximum=MAX_THREADS)
    runs = check_int(runs, "--runs", minimum=0)
    warmup = check_int(warmup, "--warmup", minimum=0)
    limit = check_int(limit, "--limit (0: every pair)", minimum=0)
    if runs and runs < MIN_RUNS:
        raise DBDError(
            f"--runs {runs} is too few for stable percentiles; use at least {MIN_RUNS} (or 0 to skip latency)"
        )
    if limit < 0:
        raise DBDError(f"--limit must be 0 (every pair) or a number of pairs, got {limit}")
    baseline = gate.load_baseline(Path(check)) if check else None
    if arch:  # the emulation kit and what it can run are checked before anything is measured
        from .emulation import check_arch

        kit = check_arch(arch, model_files(teacher, student, exports, weights), gate=bool(check or update_baseline))
    # Where the results go must be writable BEFORE the benchmark, not found out after it.
    if report is not None:
        check_writable(report, "--report", REPORT_FILES)
    if update_baseline:
        update_baseline = Path(update_baseline)
        check_writable(update_baseline.parent, "--update-baseline", [update_baseline.name])

    dataset = open_dataset(data, split=split or None, polarity=polarity)
    pairs = [dataset[i] for i in range(len(dataset) if not limit else min(limit, len(dataset)))]
    data_label = f"{dataset.name}:{split or 'all'}" + (f"[:{limit}]" if limit else "")
    gemm = gemm_peaks(threads) if runs else None
    peaks = gemm.best if gemm else {}
    machine = {"cpu": cpu_info(), "gemm_peak": gemm.to_dict() if gemm else None}
    settings = {"device": device, "runs": runs, "warmup": warmup, "robustness": robustness}

    rows, notes = [], []
    for path in model_files(teacher, student, exports, weights):
        fmt = find_format(path)
        availability = fmt.available() if fmt is not None else None
        if availability is not None and not availability:  # e.g. a format whose runtime is macOS-only
            notes.append(f"{path}: not run: {availability.reason}")
            continue
        made = bench_row(path, pairs, threads, peaks, **settings)
        rows += made
        if log:
            log(f"benchmarked {path}")
        tta = teacher_recipe(made[0], teacher_tta)
        if tta is not None:
            rows += bench_row(path, pairs, threads, peaks, **settings, tta=tta)
            if log:
                log(f"benchmarked {path} with TTA {tta}")

    if arch:  # the same files on an emulated phone CPU: rows of the same table, against their x86 rows
        from .emulation import emulated_rows

        emulated, arch_notes = emulated_rows(rows, pairs, kit, arch=arch, log=log)
        rows += emulated
        notes += arch_notes

    for r in rows:  # against the teacher and the fp32 student with the same last step
        teacher_row, student_row = reference_rows(rows, r["refine"])
        r["vs_teacher"], r["vs_student"] = compare(r, teacher_row), compare(r, student_row)
    for r in rows:
        del r["_maps"]
        if gemm is not None and not gemm.reliable:  # more threads measured slower: the machine was busy
            for lat in r["latency"].values():
                lat["peak_fraction_reliable"] = False

    title = f"dbd-bench on {data_label} ({len(pairs)} images), device {device}"
    cpu = machine["cpu"]
    notes += [
        f"CPU: {cpu['model']} ({cpu['arch']}, {cpu['cores']} cores), ISA: {', '.join(cpu['features']) or 'none known'}"
        f"; torch kernels: {cpu['torch_isa'] or '?'} (int8 gains over float on VNNI/AMX/dot-product CPUs only)"
    ]
    if gemm is not None:
        notes += [
            "machine peak (fp32 GEMM, best of 5 interleaved runs): "
            + ", ".join(f"{peaks[t]:.1f} GMAC/s at {t} thread(s)" for t in threads)
            + (
                ""
                if gemm.reliable
                else "; UNRELIABLE: more threads measured slower than fewer (a busy "
                "machine), so every %peak is marked ?"
            )
        ]
    notes += [
        "%peak = the row's achieved GMAC/s (model GMACs / median latency) over that peak; '?' marks one "
        "not to trust: above 100 % (int8 on VNNI/AMX can beat the fp32 peak) or an unreliable peak",
        "peak MB = resident memory (native allocations included) to load the file and run one image, "
        "measured in a fresh process above the imported runtime library, alike for every runtime",
        "Δ vs teacher / student: Fβ@0.5 and MAE differences; PSNR of the blur maps at the model's input size",
    ]
    header, body = accuracy_table(rows)
    if runs:  # the refinement's own cost, beside the models' latency on one thread
        refined = next((r for r in rows if r["refine"] == "guided"), None)  # every file has a guided row
        if refined is not None:
            spec = RefineSpec.from_dict(refined["refine_spec"])
            machine["refine_ms"] = refine_cost(spec, tuple(refined["input_size"]))
    sections = [
        ("Size and speed", *speed_table(rows, threads if runs else [])),
        (
            "Refinement cost (one thread, median of 10 runs, ms), beside each refined file's model latency at 1 thread",
            *refine_table(rows, machine.get("refine_ms")),
        ),
        ("Error anatomy (fractions of all pixels; boundary = within 8 px of a mask boundary)", *anatomy_table(rows)),
        ("Capture robustness (Fβ@0.5 and Δ against the contract's own resize, cv2 linear)", *robustness_table(rows)),
    ]
    result = BenchResult(
        rows=rows,
        data=data_label,
        title=title,
        notes=notes,
        machine=machine,
        header=header,
        body=body,
        sections=sections,
    )
    if report is not None:
        result.report_files = write_reports(rows, header, body, Path(report), title, notes, threads, sections, machine)
    if update_baseline:
        previous = gate.load_baseline(update_baseline) if update_baseline.exists() else None
        gate.write_baseline(update_baseline, rows, data_label, previous)
        result.baseline_written = update_baseline
    if baseline is not None:
        result.checked_against = Path(check)
        result.baseline_rows = len(baseline["rows"])
        result.regressions = gate.check(baseline, rows, data_label, allow_new_rows=allow_new_rows)
        result.not_compared = gate.unbaselined_rows(baseline, rows) if allow_new_rows else []
    return result
