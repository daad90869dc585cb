"""Exporting as a library call: `export_model(...)` does everything dbd-export does and returns an
`ExportReport`; the command line only turns flags into its arguments and prints.

    from dbd.export import export_model
    report = export_model(formats="all", precisions="all", out="exports")
    for outcome in report.outcomes:
        print(outcome.path, outcome.ok, outcome.error)

Formats come from the registry (dbd.runtime.formats): any registered format, dbd's own or a
plug-in, is exported, verified and replaced the same way. A failed file does not raise: its
outcome says why, the previous file is kept, and `report.ok` is False. Bad arguments raise
DBDError (one line naming the argument) before any heavy work.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from dbd.core import DBDError, check_int, sha256_file
from dbd.runtime.formats import FileFormat, get_format, list_formats, unknown_choice

from .calibration import DEFAULT_CALIB

if TYPE_CHECKING:
    from .base import ExportJob
    from .parity import ParityBudget
    from .pipeline import Outcome

DEFAULT_CALIB_N = 64
DEFAULT_PARITY_N = 32
DEFAULT_OUT = Path("exports")
MAX_IMGSZ = 4096  # a side; larger inputs exhaust memory in every converter
MAX_CALIB_N = 1000  # calibration/parity images, all held in memory at the input size
MAX_IMAGES_BYTES = 4 << 30  # and at most 4 GiB of them

Plan = list[tuple[str, tuple[str, ...]]]  # [(format name, precisions to export)]


class ExportProgress:
    """What `export_model` reports while it works; the CLI prints it. Override what you need:
    every method does nothing by default."""

    def started(self, job: ExportJob, plan: Plan, calibrated: bool) -> None:
        """The checkpoint and the images are loaded; `calibrated`: some precision reads the calibration images."""

    def prepared(self, format_name: str, seconds: float, error: str | None) -> None:
        """A format's shared conversion ran (`error`: why every file of that format failed)."""

    def finished(self, outcome: Outcome) -> None:
        """One file was written and verified, or failed (`outcome.ok`, `outcome.error`)."""


@dataclass
class ExportReport:
    """What `export_model` did: one outcome per file, and the export_report.json it rewrote."""

    job: ExportJob
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    path: Path | None = None  # export_report.json in the out folder

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


def _names(value: str | Iterable[str] | None, what: str) -> list[str]:
    """'a', 'a,b' or ['a', 'b'] -> ['a', 'b'] (lower case, stripped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in items):
        raise DBDError(f"{what} must be names (strings), got {value!r}")
    names = [v.strip().lower() for v in items if v.strip()]
    if not names:
        raise DBDError(f"{what} is empty; pass a name or 'all'")
    return names


def resolve_plan(formats: str | Iterable[str] = "all", precisions: str | Iterable[str] | None = None) -> Plan:
    """[(format name, precisions)] for the choices; unknown names -> one-line error with a suggestion.

    `precisions` None: each format's default; 'all': every precision of each format; else the
    named ones, each of which every format named explicitly must offer (with --format all, a
    format offering none of them is left out: e.g. ncnn has no int8).
    """
    names: list[str] = []
    named: set[str] = set()  # formats named explicitly, not through 'all'
    for name in _names(formats, "--format"):
        # 'all': every format whose export tools are installed (an optional format's extra may be absent)
        chosen = [n for n in list_formats() if get_format(n).exportable()] if name == "all" else [get_format(name).name]
        named.update(chosen if name != "all" else ())
        names += [n for n in chosen if n not in names]
    wanted = _names(precisions, "--precision") if precisions is not None else None
    plan = []
    for name in names:
        fmt = get_format(name)
        if wanted is None:
            plan.append((name, (fmt.default_precision,)))
            continue
        for precision in wanted:
            if precision != "all" and precision not in fmt.precisions and name in named:
                raise DBDError(
                    unknown_choice("precision", precision, list(fmt.precisions) + ["all"]) + f" (for {name})"
                )
        offered = [p for f in names for p in get_format(f).precisions]
        unknown = [p for p in wanted if p != "all" and p not in offered]
        if unknown:  # offered by none of the chosen formats
            raise DBDError(unknown_choice("precision", unknown[0], list(dict.fromkeys(offered)) + ["all"]))
        if name not in named and "all" not in wanted and not set(wanted) & set(fmt.precisions):
            continue
        chosen = fmt.precisions if "all" in wanted else tuple(p for p in fmt.precisions if p in wanted)
        plan.append((name, chosen))
    return plan


def parse_imgsz(value: str | int | Iterable[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """N, 'N', 'HxW' or (H, W) -> (H, W), positive multiples of 32; None -> `default`."""
    if value is None:
        return tuple(default)
    text = str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        values = [value]
    elif isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        values, text = list(value), "x".join(str(v) for v in value)
    else:
        parts = text.lower().replace(",", "x").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise DBDError(
                f"--imgsz '{text}' is not a size; pass N or HxW (multiples of 32), e.g. --imgsz 320"
            ) from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0 or values[0] % 32 or values[1] % 32:
        raise DBDError(
            f"--imgsz '{text}' must be N or HxW with positive multiples of 32 (the encoders' stride), e.g. 320"
        )
    if max(values) > MAX_IMGSZ:
        raise DBDError(f"--imgsz '{text}' is too large: each side must be at most {MAX_IMGSZ}, e.g. 320")
    return values[0], values[1]


def check_options(options: dict[str, str] | None) -> dict[str, str]:
    """Format-specific settings (FormatOption.key -> value) checked against what formats declare."""
    declared = {}
    for name in list_formats():
        for option in get_format(name).options:
            declared.setdefault(option.key, option)
    checked = {}
    for key, value in (options or {}).items():
        key = str(key).replace("-", "_")
        if key not in declared:
            raise DBDError(
                unknown_choice("export option", key, sorted(declared))
                if declared
                else f"unknown export option '{key}': no installed format declares options"
            )
        option = declared[key]
        if option.choices and value not in option.choices:
            raise DBDError(f"--{option.name} {value!r}: " + unknown_choice("value", str(value), list(option.choices)))
        checked[key] = value
    return checked


def make_job(
    weights: Path | None,
    imgsz: str | int | None = None,
    calib: str = DEFAULT_CALIB,
    calib_n: int = DEFAULT_CALIB_N,
    parity_n: int = DEFAULT_PARITY_N,
    polarity: str | None = None,
    budget: ParityBudget | None = None,
    calibrate: bool = True,
    options: dict[str, str] | None = None,
    verbose: bool = False,
    int8_float: str | Iterable[str] | None = None,
) -> ExportJob:
    """Load the checkpoint and the real images: the ExportJob every format works from (unknown
    `options` and a test split as `calib` are refused first)."""
    from dbd.models.base import DBDNet
    from dbd.models.checkpoint import load_checkpoint
    from dbd.models.shipped import released_checkpoint
    from dbd.runtime.spec import PreprocessSpec

    from .base import ExportJob
    from .calibration import load_images, open_calibration_dataset
    from .mixed_precision import default_modules, resolve_modules
    from .parity import ParityBudget

    options = check_options(options)
    open_calibration_dataset(calib, polarity)  # refuse test splits before any heavy work
    weights = Path(weights) if weights is not None else released_checkpoint("dbd_student")
    model, card = load_checkpoint(weights)
    if not isinstance(model, DBDNet):
        raise DBDError(
            f"checkpoint '{weights}' holds a '{card.get('arch')}', which is not a blur-detection network; "
            f"pass a dbd_student or dbd_teacher checkpoint"
        )
    base_spec = PreprocessSpec.from_card(card, weights) if "preprocess" in card else PreprocessSpec.for_model(model)
    spec = dataclasses.replace(base_spec, input_size=parse_imgsz(imgsz, base_spec.input_size), layout="NCHW")
    h, w = spec.input_size
    held = ((calib_n if calibrate else 0) + parity_n) * h * w * 3 * 4
    if held > MAX_IMAGES_BYTES:
        raise DBDError(
            f"--calib-n {calib_n} and --parity-n {parity_n} at {h}x{w} would hold {held / 2**30:.1f} GiB of images "
            f"in memory (at most {MAX_IMAGES_BYTES >> 30} GiB); pass fewer images or a smaller --imgsz"
        )
    if int8_float is None:
        float_modules = default_modules(model)
    elif isinstance(int8_float, str) and int8_float.strip().lower() == "none":
        float_modules = ()
    else:
        float_modules = resolve_modules(
            model, int8_float.split(",") if isinstance(int8_float, str) else list(int8_float)
        )
    calibration, parity_images = load_images(calib, spec, calib_n, parity_n, polarity, calibrate=calibrate)
    return ExportJob(
        model=model.float().eval(),
        card=card,
        weights=weights,
        weights_sha256=sha256_file(weights),
        spec=spec,
        calibration=calibration,
        parity=parity_images,
        budget=budget or ParityBudget(),
        options=options,
        verbose=verbose,
        int8_float=float_modules,
    )


def _prepare_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DBDError(f"--out '{out}' cannot be used as the output folder ({err.strerror}); pass a folder") from None
    if not os.access(out, os.W_OK):
        raise DBDError(f"--out '{out}' is not writable; pass a folder you can write to")
    return out


def export_model(
    weights: str | Path | None = None,
    formats: str | Iterable[str] = ("all",),
    precisions: str | Iterable[str] | None = None,
    out: str | Path = DEFAULT_OUT,
    imgsz: str | int | tuple[int, int] | None = None,
    calib: str = DEFAULT_CALIB,
    calib_n: int = DEFAULT_CALIB_N,
    parity_n: int = DEFAULT_PARITY_N,
    polarity: str | None = None,
    budget: ParityBudget | None = None,
    options: dict[str, str] | None = None,
    int8_float: str | Iterable[str] | None = None,
    verbose: bool = False,
    command: str | None = None,
    progress: ExportProgress | None = None,
) -> ExportReport:
    """Export `weights` (default: the shipped student) to `formats` x `precisions` in `out`.

    formats: names or 'all' (a list, or one string, commas allowed); precisions: None (each
    format's default), 'all' or names; imgsz: N, 'HxW' or (H, W) (default: the checkpoint's);
    calib: the calibration dataset (a training split: test splits are refused); budget: the parity
    budgets (dbd.export.parity.ParityBudget); options: format-specific settings, {key: value} as
    each format's `options` declare them (dbd-export --help lists them); int8_float: modules int8 keeps in
    float, 'none' for full int8 (default: the architecture's); command: what export_report.json
    records as the command (default: this call).

    Each file is exported to a temporary path, verified (structure and parity against PyTorch on
    real images), and only then moved over the final name; export_report.json is rewritten after
    every file. Returns the outcomes; failures are in `report.failed`, not raised.
    """
    plan = resolve_plan(formats, precisions)
    for flag, value in (("calib_n", calib_n), ("parity_n", parity_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DBDError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
        check_int(value, f"--{flag.replace('_', '-')}", minimum=1, maximum=MAX_CALIB_N)
    parse_imgsz(imgsz, (32, 32))  # a bad size is found now, not after loading the model and the images
    if not isinstance(out, (str, os.PathLike)):
        raise DBDError(f"out must be a folder path (str or Path), got {out!r} ({type(out).__name__})")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise DBDError(f"weights must be a checkpoint path (str or Path), got {weights!r} ({type(weights).__name__})")
    from .parity import ParityBudget

    if budget is not None and not isinstance(budget, ParityBudget):
        raise DBDError(f"budget must be a dbd.export.parity.ParityBudget, got {type(budget).__name__}")

    from .pipeline import Outcome, export_one, output_path, prepare, run_tempdir, update_report

    formats_: list[FileFormat] = [get_format(name) for name, _ in plan]
    calibrated = any(fmt.needs_calibration(p) for fmt, (_, precisions_) in zip(formats_, plan) for p in precisions_)
    job = make_job(
        weights,
        imgsz,
        calib,
        calib_n,
        parity_n,
        polarity=polarity,
        budget=budget,
        calibrate=calibrated,
        options=options,
        verbose=verbose,
        int8_float=int8_float,
    )
    progress = progress or ExportProgress()
    progress.started(job, plan, calibrated)
    reference = job.reference_maps()  # PyTorch's maps of the parity images, once, before any format is timed
    finite = np.isfinite(reference).reshape(len(reference), -1).all(axis=1)
    if not finite.all():  # e.g. negative BatchNorm variances: converters crash (LiteRT) or fail late on NaN
        raise DBDError(
            f"checkpoint '{job.weights}' gives non-finite blur maps (NaN or inf) on real images (first: "
            f"'{job.parity.names[int(np.argmin(finite))]}'), so no file was exported; retrain or fix the "
            f"checkpoint (e.g. its BatchNorm running variances)"
        )

    out_dir = _prepare_out(Path(out))
    if command is None:
        command = (
            f"dbd.export.export_model(weights={str(job.weights)!r}, formats={[n for n, _ in plan]!r}, "
            f"precisions={sorted({p for _, ps in plan for p in ps})!r}, out={str(out_dir)!r})"
        )
    report = ExportReport(job, plan)
    with run_tempdir():  # the converters' temporary folders too: removed at the end, or by the next run
        for fmt, (name, precisions_) in zip(formats_, plan):
            seconds, error = prepare(job, fmt)
            progress.prepared(name, seconds, error)
            for precision in precisions_:
                if error:
                    outcome = Outcome(
                        name, precision, output_path(out_dir, job, fmt, precision), error=error, prepare_s=seconds
                    )
                else:
                    outcome = export_one(job, fmt, precision, out_dir, prepare_s=seconds)
                report.outcomes.append(outcome)
                progress.finished(outcome)
                update_report(out_dir, job, report.outcomes, command)
    report.path = update_report(out_dir, job, report.outcomes, command)
    return report


__all__ = [
    "DEFAULT_CALIB",
    "DEFAULT_CALIB_N",
    "DEFAULT_OUT",
    "DEFAULT_PARITY_N",
    "ExportProgress",
    "ExportReport",
    "check_options",
    "export_model",
    "make_job",
    "parse_imgsz",
    "resolve_plan",
]
