"""`dbd-bench`: one table to choose a format by — size, speed on this machine and accuracy
against the teacher — for the teacher, the fp32 student and every exported file.

    dbd-bench --device cpu                         # shipped models + exports/ on CUHK-TE-1
    dbd-bench --weights exports/dbd_student_320_int8.tflite --threads 1
    dbd-bench --check benchmarks/baseline.json     # CI's accuracy-regression gate (non-zero on regression)
    dbd-bench --update-baseline benchmarks/baseline.json

Writes reports/bench/{bench.md, bench.json, curves.png, latency_accuracy.png}.
"""
from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from dbd.models import create_model
from dbd.core import DBDError, check_writable, cli_entry
from dbd.models.summary import count_macs, count_params
from dbd.runtime.datasets import open_dataset
from dbd.runtime.acquisition import CAPTURE_CONDITIONS, captured
from dbd.runtime.evaluate import evaluate
from dbd.runtime.hardware import cpu_info
from dbd.runtime.metrics import DecisionMetrics
from dbd.runtime.tta import TTARecipe, TTARunner
from dbd.runtime.metadata import FILE_FORMATS
from dbd.runtime.runners import open_runner

from . import gate
from .measure import PeakMemory, gemm_peaks, map_psnr, measure_latency, peak_memory_mb
from .report import anatomy_table, robustness_table, table_rows, terminal, write_reports


REPORT_FILES = ("bench.md", "bench.json", "curves.png", "latency_accuracy.png")   # what write_reports writes


def parse_threads(text: str) -> list[int]:
    try:
        values = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise DBDError(f"--threads takes positive integers separated by commas (e.g. 1,{os.cpu_count()}), got {text!r}")
    return values


def sources(args) -> list[Path]:
    """Teacher, student, every export in --exports, then --weights: each file once, in that order."""
    from dbd.models.released import released_checkpoint

    found = [args.teacher or released_checkpoint("dbd_teacher"), args.student or released_checkpoint("dbd_student")]
    if args.exports.is_dir():
        # Hidden and temporary files (a killed export's `.NAME.XXXX.tmp.onnx`) are never model files.
        found += sorted(p for p in args.exports.iterdir() if p.suffix.lower() in FILE_FORMATS
                        and not p.name.startswith(".") and ".tmp" not in p.name)
    found += args.weights or []
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


def bench_row(path: Path, pairs: list, threads: list[int], args, peaks: dict[int, float],
              tta: TTARecipe | None = None) -> dict[str, Any]:
    """One row; with `tta`, the teacher as distillation uses it (accuracy only: it never ships)."""
    with PeakMemory() as memory:   # in this process: only the fallback (memory freed by earlier rows is reused)
        runner = open_runner(path, threads=max(threads), device=args.device)
        runner.run(np.zeros((1, *runner.size, 3), np.float32))
    # Peak memory alongside latency, the same way for every runtime: in a fresh process.
    fresh = peak_memory_mb(path, max(threads), args.device) if args.runs and tta is None else None
    peak_mem = fresh["peak_mb"] if fresh else (memory.mb if args.runs and tta is None else None)
    plain = runner
    if tta is not None:
        runner = TTARunner([plain], tta)
    info = runner.info
    arch = info["arch"] if runner.format == "torch" else info["model"]["arch"]
    config = info["config"] if runner.format == "torch" else info["model"].get("config", {})
    params, gmacs = model_cost(arch, config, runner.size)
    fmt = runner.format + (f"+tta {tta}" if tta is not None else "")
    row: dict[str, Any] = {"id": f"{arch}:{fmt}:{runner.precision}", "model": arch, "format": fmt,
                           "precision": runner.precision, "file": str(path), "size_mb": file_size_mb(path),
                           "params_m": params, "gmacs": gmacs, "peak_mem_mb": peak_mem,
                           "memory": {"method": "fresh process" if fresh else "this process" if peak_mem is not None
                                      else None, "runtime_mb": fresh["runtime_mb"] if fresh else None},
                           "latency": {}}
    decisions = DecisionMetrics()
    metrics, maps = evaluate(runner, pairs, keep_maps=True, decisions=decisions)
    row["metrics"] = {k: v for k, v in metrics.compute().items() if k != "n_images"}
    row["decisions"] = decisions.compute()
    if args.robustness and tta is None:
        row["robustness"] = {c: {k: v for k, v in evaluate(plain, captured(pairs, c, plain.size))[0].compute().items()
                                 if k != "n_images"} for c in CAPTURE_CONDITIONS}
    row["curves"] = {k: [round(float(x), 5) for x in v] for k, v in metrics.curves().items()}
    row["_maps"] = maps
    for t in threads if args.runs and tta is None else []:
        timed = runner if t == max(threads) else open_runner(path, threads=t, device=args.device)
        lat = measure_latency(timed, t, runs=args.runs, warmup=args.warmup)
        rate = gmacs / (lat.median_ms / 1000)
        row["latency"][str(t)] = {"median_ms": lat.median_ms, "p90_ms": lat.p90_ms, "fps": lat.fps, "runs": lat.runs,
                                  "gmacs_per_s": rate, "peak_fraction": rate / peaks[t],
                                  # above 100 % of the fp32 GEMM peak: not a measurement to trust as is
                                  "peak_fraction_reliable": rate <= peaks[t]}
    return row


def compare(row: dict, reference: dict | None) -> dict | None:
    if reference is None or row is reference:
        return None
    return {"d_fbeta": row["metrics"]["fbeta_fixed"] - reference["metrics"]["fbeta_fixed"],
            "d_mae": row["metrics"]["mae"] - reference["metrics"]["mae"],
            "psnr": map_psnr(row["_maps"], reference["_maps"])}


def teacher_recipe(row: dict, flag: str | None) -> TTARecipe | None:
    """The TTA recipe to score a teacher row with: the flag, else the one its card says distillation used."""
    if row["model"] != "dbd_teacher" or row["format"] != "torch":
        return None
    if flag is None:
        from dbd.models.checkpoint import read_card
        flag = read_card(row["file"]).get("distillation", {}).get("tta", "")
    recipe = TTARecipe.parse(flag)
    return None if recipe.plain else recipe


@cli_entry("dbd-bench")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dbd-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", default="cuhk", help="catalogue dataset or folder (default: cuhk)")
    parser.add_argument("--split", default="test", help="split (default: test = CUHK-TE-1; empty: all pairs)")
    parser.add_argument("--polarity", help="mask polarity of a plain folder: blur_white or sharp_white")
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint (default: the shipped one)")
    parser.add_argument("--teacher-tta", help="also score the teacher with this TTA recipe, e.g. 384,448+flip, and "
                                              "compare every row with it (default: the recipe in the teacher's card "
                                              "that distillation uses; 'none' to skip)")
    parser.add_argument("--robustness", action="store_true",
                        help="also score every row with other downscalers and at JPEG quality 70")
    parser.add_argument("--student", type=Path, help="fp32 student checkpoint (default: the shipped one)")
    parser.add_argument("--exports", type=Path, default=Path("exports"), help="folder of exported files to include")
    parser.add_argument("--weights", type=Path, nargs="+", help="more checkpoints or exported files")
    parser.add_argument("--threads", type=parse_threads, default=parse_threads(f"1,{os.cpu_count()}"))
    parser.add_argument("--runs", type=int, default=50, help="timed runs per thread count (0: accuracy only)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pairs (0: all)")
    parser.add_argument("--report", type=Path, default=Path("reports/bench"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", type=Path, metavar="BASELINE", help="fail when a row regresses below the baseline")
    group.add_argument("--update-baseline", type=Path, metavar="BASELINE", help="write this run as the new baseline")
    args = parser.parse_args(argv)
    if args.runs and args.runs < 50:
        raise DBDError(f"--runs {args.runs} is too few for stable percentiles; use at least 50 (or 0 to skip latency)")
    baseline = gate.load_baseline(args.check) if args.check else None
    # Where the results go must be writable BEFORE the benchmark, not found out after it.
    check_writable(args.report, "--report", REPORT_FILES)
    if args.update_baseline:
        check_writable(args.update_baseline.parent, "--update-baseline", [args.update_baseline.name])

    dataset = open_dataset(args.data, split=args.split or None, polarity=args.polarity)
    pairs = [dataset[i] for i in range(len(dataset) if not args.limit else min(args.limit, len(dataset)))]
    data = f"{dataset.name}:{args.split or 'all'}" + (f"[:{args.limit}]" if args.limit else "")
    gemm = gemm_peaks(args.threads) if args.runs else None
    peaks = gemm.best if gemm else {}
    machine = {"cpu": cpu_info(), "gemm_peak": gemm.to_dict() if gemm else None}

    rows, notes = [], []
    for path in sources(args):
        if path.suffix == ".mlpackage" and platform.system() != "Darwin":
            notes.append(f"{path}: not run: CoreML predicts only on macOS (validated at export time)")
            continue
        rows.append(bench_row(path, pairs, args.threads, args, peaks))
        print(f"  benchmarked {path}", flush=True)
        tta = teacher_recipe(rows[-1], args.teacher_tta)
        if tta is not None:
            rows.append(bench_row(path, pairs, args.threads, args, peaks, tta))
            print(f"  benchmarked {path} with TTA {tta}", flush=True)
    # The teacher as distillation uses it (with its TTA) is what every row is compared with.
    teacher = next((r for r in rows if r["model"] == "dbd_teacher" and r["format"].startswith("torch+tta")),
                   next((r for r in rows if r["model"] == "dbd_teacher" and r["format"] == "torch"), None))
    student = next((r for r in rows if r["model"] == "dbd_student" and r["format"] == "torch"), None)
    for r in rows:
        r["vs_teacher"], r["vs_student"] = compare(r, teacher), compare(r, student)
    for r in rows:
        del r["_maps"]
        if gemm is not None and not gemm.reliable:   # more threads measured slower: the machine was busy
            for lat in r["latency"].values():
                lat["peak_fraction_reliable"] = False

    title = f"dbd-bench on {data} ({len(pairs)} images), device {args.device}"
    cpu = machine["cpu"]
    notes += [f"CPU: {cpu['model']} ({cpu['arch']}, {cpu['cores']} cores), ISA: {', '.join(cpu['features']) or 'none known'}"
              f"; torch kernels: {cpu['torch_isa'] or '?'} (int8 gains over float on VNNI/AMX/dot-product CPUs only)"]
    if gemm is not None:
        notes += ["machine peak (fp32 GEMM, best of 5 interleaved runs): "
                  + ", ".join(f"{peaks[t]:.1f} GMAC/s at {t} thread(s)" for t in args.threads)
                  + ("" if gemm.reliable else "; UNRELIABLE: more threads measured slower than fewer (a busy "
                     "machine), so every %peak is marked ?")]
    notes += ["%peak = the row's achieved GMAC/s (model GMACs / median latency) over that peak; '?' marks one "
              "not to trust: above 100 % (int8 on VNNI/AMX can beat the fp32 peak) or an unreliable peak",
              "peak MB = resident memory (native allocations included) to load the file and run one image, "
              "measured in a fresh process above the imported runtime library, alike for every runtime",
              "Δ vs teacher / student: Fβ@0.5 and MAE differences; PSNR of the blur maps at the model's input size"]
    header, body = table_rows(rows, args.threads if args.runs else [])
    print(title)
    print(terminal(header, body))
    for note in notes:
        print(f"  - {note}")
    sections = [("Error anatomy (fractions of all pixels; boundary = within 8 px of a mask boundary)", *anatomy_table(rows)),
                ("Capture robustness (Fβ@0.5 and Δ against the contract's own resize, cv2 linear)", *robustness_table(rows))]
    for name, head, rows_ in sections:
        if rows_:
            print(f"\n{name}\n" + terminal(head, rows_))
    for path in write_reports(rows, header, body, args.report, title, notes, args.threads, sections, machine):
        print(f"wrote {path}")

    if args.update_baseline:
        previous = gate.load_baseline(args.update_baseline) if args.update_baseline.exists() else None
        gate.write_baseline(args.update_baseline, rows, data, previous)
        print(f"wrote baseline {args.update_baseline} ({len(rows)} rows)")
    if baseline is not None:
        failures = gate.check(baseline, rows, data)
        if failures:
            for line in failures:
                print(f"dbd-bench: REGRESSION {line}")
            print(f"dbd-bench: {len(failures)} regression(s) against {args.check}")
            return 1
        print(f"dbd-bench: no regression against {args.check} ({len(baseline['rows'])} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
