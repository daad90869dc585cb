"""`dbd-export`: export a dbd checkpoint (the shipped student by default) to every installed format.

    dbd-export                                   # every format at its default precision
    dbd-export --format NAME                     # one format (names and defaults: below)
    dbd-export --format all --precision all      # every format x every precision
    dbd-export --weights runs/teacher/best.safetensors --format NAME

int8 is calibrated on real images of a TRAINING split (default: CUHK-TR-1, `--calib`); test splits
are refused. Every file is checked against PyTorch on other real images before it replaces an
older export (budgets: fp32 max|Δ| <= 1e-4, fp16 PSNR >= 40 dB, int8 PSNR >= 30 dB and
|ΔFβ| <= 0.005); a failed check exits 1 and keeps the previous file. Each file embeds its "dbd"
metadata (read it with dbd.runtime.metadata.read_metadata); export_report.json in the out folder
lists every file with size, sha256, precision, conversion time and parity figures.
The same from Python: `dbd.export.export_model(...)`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dbd.core import ArgumentParser, cli_entry

from .api import (
    DEFAULT_CALIB,
    DEFAULT_CALIB_N,
    DEFAULT_OUT,
    DEFAULT_PARITY_N,
    ExportProgress,
    make_job,  # noqa: F401 - scripts and tests build jobs through the CLI module too
)

PROG = "dbd-export"


def build_parser() -> argparse.ArgumentParser:
    from dbd.runtime.formats import get_format, list_formats

    from .parity import ParityBudget

    budget = ParityBudget()
    formats = [get_format(name) for name in list_formats()]
    precisions = list(dict.fromkeys(p for fmt in formats for p in fmt.precisions))
    listing = "\n".join(
        f"  {fmt.name:8s} {fmt.suffix:12s} precisions {', '.join(fmt.precisions)} (default {fmt.default_precision})"
        for fmt in formats
    )
    parser = ArgumentParser(
        prog=PROG,
        description=f"{__doc__}\ninstalled formats:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--format", default="all", help=f"{', '.join(fmt.name for fmt in formats)} or all (default: all)"
    )
    parser.add_argument(
        "--precision",
        default=None,
        help=f"{', '.join(precisions)} or all (default per format: "
        f"{', '.join(f'{fmt.name} {fmt.default_precision}' for fmt in formats)})",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="a dbd .safetensors checkpoint (default: the shipped dbd_student); the teacher works too",
    )
    parser.add_argument(
        "--imgsz", default=None, help="input size N or HxW, multiples of 32 (default: the checkpoint's, 320)"
    )
    parser.add_argument(
        "--calib",
        default=DEFAULT_CALIB,
        help="calibration images: a dataset name, NAME:SPLIT or a folder with images/ + masks/ "
        "(default: cuhk = CUHK-TR-1, the training split; test splits are refused)",
    )
    parser.add_argument(
        "--polarity",
        choices=("blur_white", "sharp_white"),
        default=None,
        help="mask polarity of a --calib folder that is not a catalogued dataset",
    )
    parser.add_argument(
        "--calib-n", type=int, default=DEFAULT_CALIB_N, help=f"calibration images (default {DEFAULT_CALIB_N})"
    )
    parser.add_argument(
        "--parity-n",
        type=int,
        default=DEFAULT_PARITY_N,
        help=f"parity-check images, chosen after the calibration ones (default {DEFAULT_PARITY_N})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}/)")
    parser.add_argument(
        "--int8-float",
        default=None,
        metavar="MODULES",
        help="int8: comma-separated modules kept in float for accuracy, or 'none' for full int8 "
        "(default: the architecture's choice; the student keeps encoder.features.0,1)",
    )
    taken = set()
    for fmt in formats:  # each format's own settings, e.g. which converter it uses
        for option in fmt.options:
            if option.name in taken:
                continue
            taken.add(option.name)
            parser.add_argument(
                f"--{option.name}",
                dest=f"option_{option.key}",
                default=option.default,
                choices=option.choices or None,
                help=f"{fmt.name}: {option.help} (default {option.default})",
            )
    group = parser.add_argument_group("parity budgets")
    group.add_argument("--fp32-max-abs", type=float, default=budget.fp32_max_abs, help="fp32: max |Δ| of the blur maps")
    group.add_argument("--fp16-min-psnr", type=float, default=budget.fp16_min_psnr, help="fp16: min PSNR (dB)")
    group.add_argument("--int8-min-psnr", type=float, default=budget.int8_min_psnr, help="int8: min PSNR (dB)")
    group.add_argument(
        "--int8-max-dfbeta",
        type=float,
        default=budget.int8_max_dfbeta,
        help="int8: max |ΔFβ| against the masks (Fβ at 0.5, blur positive)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the converters' own output and tracebacks")
    return parser


def _megabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.2f} MB"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _ops_line(description: dict) -> str:
    ops = description.get("ops") or {}
    line = ", ".join(f"{k} {v}" for k, v in ops.items())
    extra = []
    if "layout_transposes" in description:
        extra.append(f"builtin ops only, {description['layout_transposes']} layout Transpose")
    if description.get("weight_dtypes"):
        extra.append("constants " + ", ".join(f"{k} {v}" for k, v in description["weight_dtypes"].items()))
    return line + (f"  [{'; '.join(extra)}]" if extra else "")


def print_outcome(outcome, verbose_ops: bool = True) -> None:
    from .parity import summary

    path = _rel(outcome.path)
    timing = f"{outcome.conversion_s:.1f} s"
    if outcome.ok:
        verdict = summary(outcome.parity) if outcome.parity else "structure checked, parity not measured"
        print(f"  ok      {outcome.precision:5s} {path}  {_megabytes(outcome.size)}  {timing}  {verdict}")
    else:
        print(
            f"  FAILED  {outcome.precision:5s} {path}  {outcome.error}; previous file kept"
            if outcome.path.exists()
            else f"  FAILED  {outcome.precision:5s} {path}  {outcome.error}; nothing written"
        )
        if outcome.parity:
            print(f"          figures: {summary(outcome.parity)}")
    for note in outcome.notes:
        print(f"          note: {note}")
    if outcome.description and verbose_ops:
        print(f"          ops: {_ops_line(outcome.description)}")
    if outcome.ok:
        print(f"          run:  dbd-predict --weights {shlex.quote(path)} PHOTO.jpg")
        print(f"          bench: dbd-bench --weights {shlex.quote(path)}")


class _Printer(ExportProgress):
    """dbd-export's running printout of what export_model does."""

    def started(self, job, plan, calibrated: bool) -> None:
        calibration, parity_images = job.calibration, job.parity
        h, w = job.spec.input_size
        print(f"{PROG}: {job.arch} from {_rel(job.weights)} (sha256 {job.weights_sha256[:12]}), input {w}x{h}")
        if calibrated:
            print(f"  int8 calibration: {len(calibration)} images of {calibration.source} (seeded selection)")
            print(f"  int8 keeps in float: {', '.join(job.int8_float) or 'nothing (full int8)'}")
        print(f"  parity check: {len(parity_images)} images of {parity_images.source} against PyTorch fp32")
        for note in calibration.notes + parity_images.notes:
            print(f"  note: {note}")

    def prepared(self, format_name: str, seconds: float, error: str | None) -> None:
        print(f"{format_name}: shared conversion {seconds:.1f} s" + (f" FAILED: {error}" if error else ""))

    def finished(self, outcome) -> None:
        print_outcome(outcome)


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .api import export_model
    from .parity import ParityBudget

    options = {name[len("option_") :]: value for name, value in vars(args).items() if name.startswith("option_")}
    report = export_model(
        weights=args.weights,
        formats=args.format,
        precisions=args.precision,
        out=args.out,
        imgsz=args.imgsz,
        calib=args.calib,
        calib_n=args.calib_n,
        parity_n=args.parity_n,
        polarity=args.polarity,
        budget=ParityBudget(args.fp32_max_abs, args.fp16_min_psnr, args.int8_min_psnr, args.int8_max_dfbeta),
        options=options,
        int8_float=args.int8_float,
        verbose=args.verbose,
        command=shlex.join([PROG, *(argv if argv is not None else sys.argv[1:])]),
        progress=_Printer(),
    )
    print(f"report: {_rel(report.path)}")
    if report.failed:
        first = report.failed[0]
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        print(
            f"{PROG}: error: {first.path.name}: {first.error}{more}; previous exports were kept, "
            f"see {_rel(report.path)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
