"""Export, verify, then (and only then) replace: the flow every format and precision goes through.

For each file: the format writes it to a hidden temporary path beside the final one (same folder,
same suffix), `verify` checks it structurally and against PyTorch (the same steps for every format:
the plug-in gives its structural check and its runner), and only a file that passes is
moved over the final name (`os.replace`; a format whose file is a folder, `FileFormat.directory`,
is swapped in with two renames, the old folder removed after). A failed check or a converter error deletes the temporary file and leaves
any previous export untouched. `export_report.json` in the out folder is rewritten atomically after
every file: size, sha256, precision, conversion time, parity figures, ops.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbd.core import DBDError, atomic_write, remove_stale_temps, reraise_interrupt, temp_path
from dbd.runtime.metadata import read_metadata

from .base import ExportFormat, ExportJob, Verification
from .metadata import sha256_path, size_of

REPORT_NAME = "export_report.json"
REPORT_FORMAT = "dbd-export-report/1"


@dataclass
class Outcome:
    format: str
    precision: str
    path: Path  # the final path (written only when ok)
    ok: bool = False
    error: str | None = None  # why it was not written
    size: int | None = None
    sha256: str | None = None
    prepare_s: float = 0.0  # the format's shared conversion (FileFormat.prepare)
    conversion_s: float = 0.0  # this precision's own conversion
    verify_s: float = 0.0
    parity: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    replaced: bool = False  # an older export of the same name was replaced
    metadata: dict[str, Any] | None = None
    calibrated: bool = False  # the export read the calibration images (FileFormat.needs_calibration)


def output_path(out_dir: Path, job: ExportJob, fmt: ExportFormat, precision: str) -> Path:
    h, w = job.spec.input_size
    size = f"{h}" if h == w else f"{h}x{w}"
    return Path(out_dir) / f"{job.arch}_{size}_{precision}{fmt.suffix}"


_STARTED = time.time()  # this process's start (about): temporary files older than it are stale


RUN_TEMP_PREFIX = "dbd-export-"  # $TMPDIR/dbd-export-PID-XXXXXXXX: one export run's temporary folders


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_stale_run_temps(base: Path) -> None:
    """Remove the temporary folders of export runs that were killed (SIGKILL, OOM): their process is gone."""
    for folder in Path(base).glob(f"{RUN_TEMP_PREFIX}*-*"):
        pid = folder.name[len(RUN_TEMP_PREFIX) :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    # Earlier dbd versions made theirs directly in $TMPDIR: those a day old are stale.
    for folder in [*Path(base).glob("dbd-onnx-*"), *Path(base).glob("dbd-tflite-*")]:
        try:
            if folder.is_dir() and not folder.is_symlink() and folder.lstat().st_mtime < time.time() - 86400:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


@contextlib.contextmanager
def run_tempdir():
    """Put every temporary folder of this run (ours and the converters', e.g. onnxruntime's
    `ort.quant.*`) in one folder `$TMPDIR/dbd-export-PID-XXXXXXXX`, removed at the end; the
    folders that killed runs left are removed first."""
    base = Path(tempfile.gettempdir())
    remove_stale_run_temps(base)
    folder = tempfile.mkdtemp(prefix=f"{RUN_TEMP_PREFIX}{os.getpid()}-", dir=base)
    previous = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield Path(folder)
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def replace_path(src: Path, dst: Path) -> bool:
    """Move the verified `src` over `dst` atomically (a folder: swap with two renames). True if dst existed."""
    existed = dst.exists()
    if not src.is_dir():
        os.replace(src, dst)
        return existed
    old = None
    if existed:
        old = dst.with_name(f".{dst.name}.old-{secrets.token_hex(4)}")
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        _remove(old)
    return existed


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def verify(job: ExportJob, fmt: ExportFormat, precision: str, path: Path) -> Verification:
    """Check a written file the same way for every format: its metadata names this format and precision,
    the format's structural checks pass (`check_structure`: raise DBDError, or return notes), and
    its runner's maps of the parity images are within the precision's budget of PyTorch's. Where its
    files cannot run on this host (`available()`), the export fails, unless no export host could run
    them (`structure_only_where_unavailable`, CoreML off macOS): then the file is verified by
    structure only, with no parity figures and a note (the format's own, or why it cannot run here)."""
    from . import parity  # imports torch

    meta = read_metadata(path)
    said = meta["file"]["format"], meta["file"]["precision"]
    if said != (fmt.name, precision):
        raise DBDError(f"'{path}' says it is a {said[0]} {said[1]} file; re-export")
    notes = list(fmt.check_structure(path, meta) or [])
    availability = fmt.available()
    if not availability:
        if not fmt.structure_only_where_unavailable:
            raise DBDError(f"'{path}' cannot be checked against PyTorch here: {availability.reason}")
        return Verification(None, [], notes or [f"parity not measured: {availability.reason}"])
    figures = parity.measure(job.reference_maps(), fmt.runner(path).run(job.parity.unit), job.parity.masks)
    return Verification(figures, parity.check(precision, figures, job.budget), notes)


def export_one(job: ExportJob, fmt: ExportFormat, precision: str, out_dir: Path, prepare_s: float = 0.0) -> Outcome:
    final = output_path(out_dir, job, fmt, precision)
    outcome = Outcome(fmt.name, precision, final, prepare_s=prepare_s, calibrated=fmt.needs_calibration(precision))
    remove_stale_temps([final], _STARTED)
    tmp = temp_path(final)
    try:
        start = time.perf_counter()
        outcome.metadata = fmt.export(job, precision, tmp)
        outcome.conversion_s = time.perf_counter() - start
        wrote = "a folder" if tmp.is_dir() else "a file" if tmp.is_file() else "nothing"
        if wrote != ("a folder" if fmt.directory else "a file"):  # replace_path swaps what is there
            raise DBDError(
                f"format '{fmt.name}' wrote {wrote} for '{tmp}' but declares directory={fmt.directory}; "
                f"fix the format plug-in"
            )
        start = time.perf_counter()
        verification = verify(job, fmt, precision, tmp)
        outcome.verify_s = time.perf_counter() - start
        outcome.parity, outcome.failures = verification.parity, verification.failures
        outcome.notes = list(verification.notes)
        outcome.description = fmt.describe(tmp)
        if not verification.ok:
            outcome.error = "parity check failed: " + "; ".join(verification.failures)
            return outcome
        outcome.size, outcome.sha256 = size_of(tmp), sha256_path(tmp)
        outcome.replaced = replace_path(tmp, final)
        outcome.ok = True
    except DBDError as err:
        # Checks name the file they read, the temporary one; the user knows the final name.
        outcome.error = str(err).replace(str(tmp), str(final))
    except Exception as err:  # noqa: BLE001 - a converter crash fails this file, not the whole run
        reraise_interrupt(err)  # ... but a (wrapped) Ctrl-C stops the run
        if job.verbose:
            traceback.print_exc()
        outcome.error = (
            f"{fmt.name} {precision} conversion failed ({_one_line(err)}); "
            f"rerun with --verbose for the converter's output"
        )
    finally:
        _remove(tmp)
    return outcome


def prepare(job: ExportJob, fmt: ExportFormat) -> tuple[float, str | None]:
    """Run the format's shared conversion; (seconds, error or None)."""
    start = time.perf_counter()
    try:
        fmt.prepare(job)
    except DBDError as err:
        return time.perf_counter() - start, str(err)
    except Exception as err:  # noqa: BLE001
        reraise_interrupt(err)
        if job.verbose:
            traceback.print_exc()
        return time.perf_counter() - start, (
            f"{fmt.name} conversion failed ({_one_line(err)}); rerun with --verbose for the converter's output"
        )
    return time.perf_counter() - start, None


# ---- the report ------------------------------------------------------------------------------


def _report_entry(job: ExportJob, outcome: Outcome) -> dict[str, Any]:
    meta = outcome.metadata or {}
    return {
        "file": outcome.path.name,
        "format": outcome.format,
        "precision": outcome.precision,
        "size_bytes": outcome.size,
        "sha256": outcome.sha256,
        "created": meta.get("file", {}).get("created"),
        "quantization": meta.get("file", {}).get("quantization"),
        "input": {
            k: meta.get("input", {}).get(k)
            for k in ("name", "shape", "layout", "dtype", "normalization", "quantization")
        },
        "output": {k: meta.get("output", {}).get(k) for k in ("name", "shape", "layout", "dtype", "quantization")},
        "conversion_s": round(outcome.conversion_s, 3),
        "shared_conversion_s": round(outcome.prepare_s, 3),
        "verify_s": round(outcome.verify_s, 3),
        "parity": outcome.parity,
        "parity_images": {"data": job.parity.source, "n_images": len(job.parity)} if outcome.parity else None,
        "budget": job.budget.to_dict(),
        "verified": "parity" if outcome.parity else "structure only",
        "notes": outcome.notes,
        "ops": outcome.description.get("ops"),
        "weights": {"file": str(job.weights), "sha256": job.weights_sha256, "arch": job.arch},
        "calibration": (
            {k: v for k, v in job.calibration.describe().items() if k != "names"} if outcome.calibrated else None
        ),
    }


def update_report(out_dir: Path, job: ExportJob, outcomes: list[Outcome], command: str) -> Path:
    """Merge this run into export_report.json (entries of files still on disk are kept)."""
    path = Path(out_dir) / REPORT_NAME
    files: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("format") == REPORT_FORMAT:
                files = {k: v for k, v in old.get("files", {}).items() if (Path(out_dir) / k).exists()}
        except (OSError, json.JSONDecodeError, AttributeError):
            files = {}
    for outcome in outcomes:
        if outcome.ok:
            files[outcome.path.name] = _report_entry(job, outcome)
    report = {
        "format": REPORT_FORMAT,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "last_run": {
            "command": command,
            "python": sys.version.split()[0],
            "written": [o.path.name for o in outcomes if o.ok],
            "failed": [{"file": o.path.name, "error": o.error, "parity": o.parity} for o in outcomes if not o.ok],
        },
        "files": dict(sorted(files.items())),
    }
    text = json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)

    atomic_write(path, write)
    return path
