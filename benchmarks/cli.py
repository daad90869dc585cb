"""`dbd-bench`: one table to choose a format by — size, speed on this machine and accuracy
against the teacher — for the teacher, the fp32 student and every exported file.

    dbd-bench --device cpu                         # shipped models + exports/ on CUHK-TE-1
    dbd-bench --weights exports/dbd_student_320_int8.SUFFIX --threads 1
    dbd-bench --check benchmarks/baseline.json     # CI's accuracy-regression gate (non-zero on regression)
    dbd-bench --update-baseline benchmarks/baseline.json
    dbd-bench --profile                            # where each exported file's time goes, by operator and layer
    dbd-bench --runs 0 --limit 20 --arch aarch64   # + each .tflite/.ncnn under QEMU on phone cores (make arm-tools)

Writes reports/bench/{bench.md, bench.json, curves.png, latency_accuracy.png}. The same from
Python: `dbd.benchmarks.run(...)`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dbd.core import ArgumentParser, DBDError, cli_entry


def parse_threads(text: str) -> list[int]:
    try:
        values = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise DBDError(f"--threads takes positive integers separated by commas (e.g. 1,{os.cpu_count()}), got {text!r}")
    return values


@cli_entry("dbd-bench")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dbd-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", default="cuhk", help="catalogue dataset or folder (default: cuhk)")
    parser.add_argument("--split", default="test", help="split (default: test = CUHK-TE-1; empty: all pairs)")
    parser.add_argument("--polarity", help="mask polarity of a plain folder: blur_white or sharp_white")
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint (default: the shipped one)")
    parser.add_argument(
        "--teacher-tta",
        help="also score the teacher with this TTA recipe, e.g. 384,448+flip, and "
        "compare every row with it (default: the recipe in the teacher's card "
        "that distillation uses; 'none' to skip)",
    )
    parser.add_argument(
        "--robustness", action="store_true", help="also score every row with other downscalers and at JPEG quality 70"
    )
    parser.add_argument(
        "--arch",
        choices=("aarch64",),
        help="also score every .tflite and .ncnn file on this CPU architecture under QEMU user-mode emulation "
        "(a little and a big core, each kernel path; accuracy and Δ/flips against x86, no latency; "
        "needs `make arm-tools`)",
    )
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
    parser.add_argument(
        "--allow-new-rows",
        action="store_true",
        help="with --check: list rows the baseline has no row for instead of failing on them",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark: each exported file's time by operator type and layer, from its runtime's "
        "own profiler (--weights, else every file in --exports; --warmup, then --runs profiled runs at each "
        "--threads; writes profile.md and profile.json into --report)",
    )
    args = parser.parse_args(argv)
    if args.allow_new_rows and not args.check:
        parser.error("--allow-new-rows applies only with --check BASELINE")
    if args.profile:  # dbd.benchmarks.profiling checks its own flags
        from .profiling import run_profile

        return run_profile(args)

    # Imported after parsing: the benchmark pulls in torch and every runtime, --help need not.
    from .bench import run
    from .tables import terminal

    result = run(
        data=args.data,
        split=args.split,
        polarity=args.polarity,
        teacher=args.teacher,
        student=args.student,
        exports=args.exports,
        weights=args.weights,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        limit=args.limit,
        device=args.device,
        teacher_tta=args.teacher_tta,
        robustness=args.robustness,
        arch=args.arch,
        report=args.report,
        check=args.check,
        update_baseline=args.update_baseline,
        allow_new_rows=args.allow_new_rows,
        log=lambda line: print(f"  {line}", flush=True),
    )
    print(result.title)
    print(terminal(result.header, result.body))
    for note in result.notes:
        print(f"  - {note}")
    for name, head, rows in result.sections:
        if rows:
            print(f"\n{name}\n" + terminal(head, rows))
    for path in result.report_files:
        print(f"wrote {path}")
    if result.baseline_written:
        print(f"wrote baseline {result.baseline_written} ({len(result.rows)} rows)")
    if result.checked_against is not None:
        for line in result.not_compared:
            print(f"dbd-bench: NOT COMPARED {line} (--allow-new-rows)")
        if result.regressions:
            for line in result.regressions:
                print(f"dbd-bench: REGRESSION {line}")
            print(f"dbd-bench: {len(result.regressions)} regression(s) against {result.checked_against}")
            return 1
        print(f"dbd-bench: no regression against {result.checked_against} ({result.baseline_rows} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
