"""`dbd-export`: export a dbd checkpoint (the shipped student by default) to ONNX, TFLite and CoreML.

    dbd-export                                   # every format at its default precision
    dbd-export --format tflite                   # int8, camera-native (pixels in, P(blur) out)
    dbd-export --format all --precision all      # 9 files
    dbd-export --weights runs/teacher/best.safetensors --format onnx

Default precision per format: onnx fp32, tflite int8, coreml fp16 (`all`: every precision of the
format). int8 is calibrated on real images of a TRAINING split (default: CUHK-TR-1, `--calib`);
test splits are refused. Every file is checked against PyTorch on other real images before it
replaces an older export (budgets: fp32 max|Δ| <= 1e-4, fp16 PSNR >= 40 dB, int8 PSNR >= 30 dB and
|ΔFβ| <= 0.005); a failed check exits 1 and keeps the previous file. Each file embeds its "dbd"
metadata (read it with dbd.runtime.metadata.read_metadata); export_report.json in the out folder
lists every file with size, sha256, precision, conversion time and parity figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

from dbd.core import DBDError, cli_entry

PROG = "dbd-export"
FORMAT_NAMES = ("onnx", "tflite", "coreml")
PRECISION_NAMES = ("fp32", "fp16", "int8")
DEFAULT_CALIB_N = 64
DEFAULT_PARITY_N = 32


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, through cli_entry, instead of usage + exit
        raise DBDError(f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    from .parity import ParityBudget

    budget = ParityBudget()
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="all", help="onnx, tflite, coreml or all (default: all)")
    parser.add_argument("--precision", default=None,
                        help="fp32, fp16, int8 or all (default per format: onnx fp32, tflite int8, coreml fp16)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a dbd .safetensors checkpoint (default: the shipped dbd_student); the teacher works too")
    parser.add_argument("--imgsz", default=None,
                        help="input size N or HxW, multiples of 32 (default: the checkpoint's, 320)")
    parser.add_argument("--calib", default="cuhk",
                        help="calibration images: a dataset name, NAME:SPLIT or a folder with images/ + masks/ "
                             "(default: cuhk = CUHK-TR-1, the training split; test splits are refused)")
    parser.add_argument("--polarity", choices=("blur_white", "sharp_white"), default=None,
                        help="mask polarity of a --calib folder that is not a catalogued dataset")
    parser.add_argument("--calib-n", type=int, default=DEFAULT_CALIB_N, help=f"calibration images (default {DEFAULT_CALIB_N})")
    parser.add_argument("--parity-n", type=int, default=DEFAULT_PARITY_N,
                        help=f"parity-check images, chosen after the calibration ones (default {DEFAULT_PARITY_N})")
    parser.add_argument("--out", type=Path, default=Path("exports"), help="output folder (default: exports/)")
    parser.add_argument("--onnx-exporter", choices=("dynamo", "legacy"), default="dynamo",
                        help="torch.onnx exporter (default dynamo, falling back to legacy if it fails)")
    parser.add_argument("--int8-float", default=None, metavar="MODULES",
                        help="int8: comma-separated modules kept in float for accuracy, or 'none' for full int8 "
                             "(default: the architecture's choice; the student keeps encoder.features.0,1)")
    group = parser.add_argument_group("parity budgets")
    group.add_argument("--fp32-max-abs", type=float, default=budget.fp32_max_abs, help="fp32: max |Δ| of the blur maps")
    group.add_argument("--fp16-min-psnr", type=float, default=budget.fp16_min_psnr, help="fp16: min PSNR (dB)")
    group.add_argument("--int8-min-psnr", type=float, default=budget.int8_min_psnr, help="int8: min PSNR (dB)")
    group.add_argument("--int8-max-dfbeta", type=float, default=budget.int8_max_dfbeta,
                       help="int8: max |ΔFβ| against the masks (Fβ at 0.5, blur positive)")
    parser.add_argument("--verbose", action="store_true", help="show the converters' own output and tracebacks")
    return parser


def resolve_plan(format_arg: str, precision_arg: str | None) -> list[tuple[str, tuple[str, ...]]]:
    """[(format name, precisions)] for the flags; unknown names -> one-line error with a suggestion."""
    from .base import get_format, list_formats, unknown_choice

    fmt = format_arg.strip().lower()
    names = list_formats() if fmt == "all" else [get_format(fmt).name]
    plan = []
    for name in names:
        format_ = get_format(name)
        if precision_arg is None:
            precisions = (format_.default_precision,)
        else:
            precision = precision_arg.strip().lower()
            if precision == "all":
                precisions = format_.precisions
            elif precision in format_.precisions:
                precisions = (precision,)
            else:
                known = list(format_.precisions) + ["all"]
                raise DBDError(unknown_choice("precision", precision_arg, known) + f" (for {name})")
        plan.append((name, precisions))
    return plan


def parse_imgsz(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if text is None:
        return tuple(default)
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise DBDError(f"--imgsz '{text}' is not a size; pass N or HxW (multiples of 32), e.g. --imgsz 320") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0 or values[0] % 32 or values[1] % 32:
        raise DBDError(f"--imgsz '{text}' must be N or HxW with positive multiples of 32 (the encoders' stride), e.g. 320")
    return values[0], values[1]


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
        print(f"  FAILED  {outcome.precision:5s} {path}  {outcome.error}; previous file kept" if outcome.path.exists()
              else f"  FAILED  {outcome.precision:5s} {path}  {outcome.error}; nothing written")
        if outcome.parity:
            print(f"          figures: {summary(outcome.parity)}")
    for note in outcome.notes:
        print(f"          note: {note}")
    if outcome.description and verbose_ops:
        print(f"          ops: {_ops_line(outcome.description)}")
    if outcome.ok:
        print(f"          run:  dbd-predict --weights {shlex.quote(path)} PHOTO.jpg")
        print(f"          bench: dbd-bench --weights {shlex.quote(path)}")


def make_job(weights: Path | None, imgsz: str | None = None, calib: str = "cuhk", calib_n: int = DEFAULT_CALIB_N,
             parity_n: int = DEFAULT_PARITY_N, polarity: str | None = None, budget=None, calibrate: bool = True,
             onnx_exporter: str = "dynamo", verbose: bool = False, int8_float: str | None = None):
    """Load the checkpoint and the real images: the ExportJob every format works from."""
    from dbd.models.base import DBDNet
    from dbd.models.checkpoint import load_checkpoint
    from dbd.models.released import released_checkpoint
    from dbd.runtime.spec import PreprocessSpec

    from .base import ExportJob
    from .calibration import load_images
    from .metadata import sha256_file
    from .mixed_precision import default_modules, resolve_modules
    from .parity import ParityBudget

    weights = Path(weights) if weights is not None else released_checkpoint("dbd_student")
    model, card = load_checkpoint(weights)
    if not isinstance(model, DBDNet):
        raise DBDError(f"checkpoint '{weights}' holds a '{card.get('arch')}', which is not a blur-detection network; "
                       f"pass a dbd_student or dbd_teacher checkpoint")
    base_spec = PreprocessSpec.from_dict(card["preprocess"]) if "preprocess" in card else PreprocessSpec.for_model(model)
    spec = dataclasses.replace(base_spec, input_size=parse_imgsz(imgsz, base_spec.input_size), layout="NCHW")
    if int8_float is None:
        float_modules = default_modules(model)
    elif int8_float.strip().lower() == "none":
        float_modules = ()
    else:
        float_modules = resolve_modules(model, int8_float.split(","))
    calibration, parity_images = load_images(calib, spec, calib_n, parity_n, polarity, calibrate=calibrate)
    return ExportJob(model=model.float().eval(), card=card, weights=weights, weights_sha256=sha256_file(weights),
                     spec=spec, calibration=calibration, parity=parity_images, budget=budget or ParityBudget(),
                     onnx_exporter=onnx_exporter, verbose=verbose, int8_float=float_modules)


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = resolve_plan(args.format, args.precision)
    for flag in ("calib_n", "parity_n"):
        if getattr(args, flag) < 1:
            raise DBDError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")

    from .calibration import open_calibration_dataset
    from .parity import ParityBudget

    open_calibration_dataset(args.calib, args.polarity)      # refuse test splits before any heavy work
    need_calibration = any("int8" in precisions and name != "coreml" for name, precisions in plan)
    budget = ParityBudget(args.fp32_max_abs, args.fp16_min_psnr, args.int8_min_psnr, args.int8_max_dfbeta)
    job = make_job(args.weights, args.imgsz, args.calib, args.calib_n, args.parity_n, polarity=args.polarity,
                   budget=budget, calibrate=need_calibration, onnx_exporter=args.onnx_exporter, verbose=args.verbose,
                   int8_float=args.int8_float)
    calibration, parity_images, size = job.calibration, job.parity, job.spec.input_size

    from .base import get_format
    from .pipeline import Outcome, export_one, output_path, prepare, update_report

    h, w = size
    print(f"{PROG}: {job.arch} from {_rel(job.weights)} (sha256 {job.weights_sha256[:12]}), input {w}x{h}")
    if need_calibration:
        print(f"  int8 calibration: {len(calibration)} images of {calibration.source} (seeded selection)")
        print(f"  int8 keeps in float: {', '.join(job.int8_float) or 'nothing (full int8)'}")
    print(f"  parity check: {len(parity_images)} images of {parity_images.source} against PyTorch fp32")
    for note in calibration.notes + parity_images.notes:
        print(f"  note: {note}")
    job.reference_maps()     # PyTorch's maps of the parity images, once, before any format is timed

    out_dir = args.out
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DBDError(f"--out '{out_dir}' cannot be used as the output folder ({err.strerror}); pass a folder") from None
    if not os.access(out_dir, os.W_OK):
        raise DBDError(f"--out '{out_dir}' is not writable; pass a folder you can write to")
    command = shlex.join([PROG, *(argv if argv is not None else sys.argv[1:])])
    outcomes: list[Outcome] = []
    for name, precisions in plan:
        fmt = get_format(name)
        seconds, error = prepare(job, fmt)
        print(f"{name}: shared conversion {seconds:.1f} s" + (f" FAILED: {error}" if error else ""))
        for precision in precisions:
            if error:
                outcome = Outcome(name, precision, output_path(out_dir, job, fmt, precision), error=error, prepare_s=seconds)
            else:
                outcome = export_one(job, fmt, precision, out_dir, prepare_s=seconds)
            print_outcome(outcome)
            outcomes.append(outcome)
            update_report(out_dir, job, outcomes, command)
    report = update_report(out_dir, job, outcomes, command)
    print(f"report: {_rel(report)}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        print(f"{PROG}: error: {first.path.name}: {first.error}{more}; previous exports were kept, "
              f"see {_rel(report)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
