"""Exported-file formats as plug-ins: the `FileFormat` interface and the registry of formats.

A format is one object that owns everything about its files: the suffix, the precisions it
offers, how to read the "dbd" metadata document out of its container, the runner that executes
it (`Runner`), and the export side (convert a PyTorch model, check the written file's structure,
describe it). dbd itself never names a format: the runtime, the benchmarks and `dbd-export` look
formats up here by name or by file suffix and ask them.

Formats come from two places:

* the entry-point group `dbd.formats` (`[project.entry-points."dbd.formats"]` in a package's
  pyproject.toml, `name = "module:OBJECT"`), loaded lazily on the first lookup; dbd's own
  formats are declared this way;
* `register_format(obj)` at run time (a format defined in a script or a test).

Formats are listed (and `dbd-export --format all` exports them) by their `order`, then in
registration order: installers do not keep the declaration order of entry points.

A plug-in module is imported whenever formats are looked up, so it must import its heavy libraries
(converters, inference engines, torch) inside the functions that use them: reading a file's
metadata or running another format must not pay for them.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbd.core import DBDError, reraise_interrupt

from .runner_base import Runner

ENTRY_POINT_GROUP = "dbd.formats"
CHECKPOINT_SUFFIX = ".safetensors"  # PyTorch checkpoints: read by the runtime itself, never a plug-in
RESERVED_NAMES = ("all", "torch")  # 'all' is dbd-export's every-format choice, 'torch' the checkpoint runner


@dataclass(frozen=True)
class Availability:
    """Whether a format's files can run on this host; `reason` says why not, in one line."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


class ProfilingUnavailable(DBDError):
    """A format's runtime offers no per-operator profiler here (the message says why, in one line)."""


@dataclass
class ProfiledRun:
    """What a runtime's own profiler recorded over `runs` inferences of one file (`FileFormat.profile`)."""

    profiler: str  # which profiler, in words
    runs: int
    threads: int | None  # the threads the runtime ran with (None: not known)
    nodes: list[tuple[str, str, list[float]]]  # (layer, op type, its ms in each run), in execution order
    total_ms: list[float] | None = None  # the runtime's own time for each whole inference
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FormatOption:
    """A setting only one format reads (dbd-export offers it as the flag --NAME).

    The export job carries it in `job.options` under `key` (NAME with '-' as '_').
    """

    name: str
    help: str
    default: str
    choices: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")


class FileFormat(ABC):
    """One exported-file format. Subclass it, fill in the attributes and the abstract methods,
    and register an instance (entry point or `register_format`).

    Runtime side: `read_metadata(path)`, `runner(path, threads, device)` and, optionally, `profile(...)`
    (per-operator times from the runtime's own profiler, for `dbd-bench --profile`).
    Export side (`job` is a `dbd.export.base.ExportJob`):

    * `prepare(job)`: optional, the conversion every precision shares (kept on the job with
      `job.memo(self, make)`), done once per job and timed on its own;
    * `export(job, precision, dest)`: write the converted model with its "dbd" metadata embedded
      to `dest` (a temporary path beside the final one, same suffix); return the metadata;
    * `check_structure(path, meta)`: optional, the structural checks of the written file against its
      metadata (raise DBDError; may return notes for the report);
    * `describe(path)`: what is inside the file ({"ops": {op: count}, "inputs", "outputs", ...}).

    dbd-export verifies every written file the same way (`dbd.export.pipeline.verify`): the metadata
    names the format and precision, `check_structure` passes, and, where `available()`, the maps of
    `runner(path)` on real images are within the precision's parity budget of PyTorch's; where the
    files cannot run here, the export fails, or, for a format with `structure_only_where_unavailable`,
    the file is verified by its structure only.
    """

    name: str = ""  # lower-case identifier: --format NAME, metadata file.format
    suffix: str = ""  # ".ext" of its files (lower case)
    directory: bool = False  # its "file" is a folder (a package), replaced as a whole
    precisions: tuple[str, ...] = ()  # what --precision all exports, in that order
    default_precision: str = ""
    calibrated_precisions: tuple[str, ...] = ()  # precisions whose export reads calibration images
    runtime_modules: tuple[str, ...] = ()  # the modules its runner imports (checked by available())
    # The modules its export side imports, for an optional format (its own install extra): where one is
    # missing, `dbd-export --format all` leaves the format out (naming it explicitly still fails, saying why).
    export_modules: tuple[str, ...] = ()
    options: tuple[FormatOption, ...] = ()  # settings of this format only (dbd-export flags)
    order: int = 100  # place in listings and in --format all (lower first)
    # Where available() is false, may dbd-export verify its files by structure alone? Only for a
    # format no export host can run (CoreML off macOS); any other format fails its export there.
    structure_only_where_unavailable: bool = False

    def needs_calibration(self, precision: str) -> bool:
        """Does exporting `precision` read the calibration images (static int8 quantisation)?"""
        return precision in self.calibrated_precisions

    def available(self) -> Availability:
        """Can this host run the format's files? By default: are its runtime modules installed."""
        missing = [name for name in self.runtime_modules if not _importable(name)]
        if missing:
            return Availability(
                False,
                f"running {self.suffix} files needs the Python package(s) "
                f"{', '.join(missing)}, which are not installed (pip install -e '.[export]')",
            )
        return Availability(True)

    def exportable(self) -> bool:
        """Are the modules of its export side (`export_modules`) installed?"""
        return all(_importable(name) for name in self.export_modules)

    def option(self, job: Any, key: str) -> str:
        """The value of one of this format's `options` for an export job (its default when unset)."""
        declared = {o.key: o for o in self.options}
        if key not in declared:
            raise KeyError(f"format {self.name!r} declares no option {key!r}")
        return (getattr(job, "options", None) or {}).get(key, declared[key].default)

    # ---- runtime side --------------------------------------------------------------------------

    @abstractmethod
    def read_metadata(self, path: Path) -> str | None:
        """The "dbd" JSON string embedded in the file, or None when it has none.

        `path` exists and is a regular file (a folder for `directory` formats). Raise DBDError for a
        file that is not of this format, ValueError (or struct.error, IndexError, UnicodeDecodeError)
        for a corrupt one: the caller reports it as truncated or invalid.
        """

    @abstractmethod
    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> Runner:
        """A runner over the file; `available()` has been checked."""

    # ---- export side ---------------------------------------------------------------------------

    def prepare(self, job: Any) -> None:
        """Optional: the conversion every precision of this format shares (kept on the job), timed apart."""

    @abstractmethod
    def export(self, job: Any, precision: str, dest: Path) -> dict[str, Any]:
        """Write the converted model with its "dbd" metadata to `dest`; return the metadata."""

    def check_structure(self, path: Path, meta: dict[str, Any]) -> list[str] | None:
        """Optional: check the written file at `path` against its metadata `meta` (whose format and
        precision dbd-export has checked) without running it; raise DBDError for a file that is not what
        `meta` says. Returns notes for the report, or None. The parity run is dbd-export's, with `runner`."""
        return None

    @abstractmethod
    def describe(self, path: Path) -> dict[str, Any]:
        """Inspect the file: {"ops": {op: count}, "inputs": [...], "outputs": [...], ...}."""

    def tools(self) -> dict[str, str]:
        """Versions of the conversion tools, for the metadata and the report."""
        return {}

    def profile(self, path: Path, x: Any, threads: int, runs: int, warmup: int) -> ProfiledRun:
        """Optional (`dbd-bench --profile`): run the file `warmup` times, then `runs` times under its
        runtime's own profiler, on `x` (one input as `run_one` takes it: the file's layout and dtype)."""
        raise ProfilingUnavailable(f"no per-operator profiler is hooked up for {self.suffix} files")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.suffix}>"


def _importable(module: str) -> bool:
    # The top-level package only: find_spec of a dotted name would import its parents.
    try:
        return importlib.util.find_spec(module.partition(".")[0]) is not None
    except (ImportError, ValueError):
        return False


# ---- the registry -------------------------------------------------------------------------------

_FORMATS: dict[str, FileFormat] = {}  # by name, in registration order
_LOAD_ERRORS: dict[str, str] = {}  # entry-point name -> why its plug-in could not be loaded
_DISCOVERED = False
_LOCK = threading.RLock()  # re-entrant: a plug-in module may register while being loaded
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _discover() -> None:
    """Load the entry-point group once (under _LOCK). A broken plug-in is recorded, not fatal."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = entry.load()
        except Exception as err:  # noqa: BLE001 - one broken plug-in must not take the other formats down
            reraise_interrupt(err)
            first = (str(err).splitlines() or [""])[0][:160]
            _LOAD_ERRORS[entry.name] = f"its plug-in {entry.value} failed to import ({type(err).__name__}: {first})"
            continue
        source = f"entry point {entry.name} = {entry.value}"
        try:
            fmt = _checked(found, source)
            if fmt.name != entry.name:
                raise DBDError(
                    f"{source} gives a format named '{fmt.name}'; the entry-point name must be the format's name"
                )
            _add(fmt, source)
        except DBDError as err:
            _LOAD_ERRORS[entry.name] = str(err)


def _checked(obj: Any, source: str) -> FileFormat:
    """`obj` as a FileFormat instance (a subclass is instantiated) whose declarations make sense."""
    fmt = obj() if isinstance(obj, type) and issubclass(obj, FileFormat) else obj
    if not isinstance(fmt, FileFormat):
        raise DBDError(f"{source}: {obj!r} is not a dbd.runtime.formats.FileFormat; register an instance of a subclass")
    problems = []
    if not isinstance(fmt.name, str) or not _NAME.fullmatch(fmt.name) or fmt.name in RESERVED_NAMES:
        problems.append(f"name {fmt.name!r} must be a lower-case identifier other than {', '.join(RESERVED_NAMES)}")
    if (
        not isinstance(fmt.suffix, str)
        or not re.fullmatch(r"\.[a-z0-9_]+", fmt.suffix)
        or fmt.suffix == CHECKPOINT_SUFFIX
    ):
        problems.append(f"suffix {fmt.suffix!r} must be '.' + lower-case letters/digits, not {CHECKPOINT_SUFFIX}")
    if not fmt.precisions or fmt.default_precision not in fmt.precisions:
        problems.append(f"default_precision {fmt.default_precision!r} must be one of its precisions {fmt.precisions!r}")
    if not set(fmt.calibrated_precisions) <= set(fmt.precisions):
        problems.append(f"calibrated_precisions {fmt.calibrated_precisions!r} must be among its precisions")
    if problems:
        raise DBDError(f"{source}: format {type(fmt).__name__}: {problems[0]}")
    return fmt


def _add(fmt: FileFormat, source: str) -> None:
    """Put a checked format into the registry, unless its name or suffix belongs to another format."""
    current = _FORMATS.get(fmt.name)
    if current is not None and type(current) is not type(fmt):
        raise DBDError(
            f"{source}: format name '{fmt.name}' is already taken by {type(current).__module__}."
            f"{type(current).__name__}; give the new format another name"
        )
    clash = next((f for f in _FORMATS.values() if f.suffix == fmt.suffix and f.name != fmt.name), None)
    if clash is not None:
        raise DBDError(
            f"{source}: suffix {fmt.suffix} of format '{fmt.name}' is already the suffix of format "
            f"'{clash.name}'; a file's suffix must name one format"
        )
    _FORMATS[fmt.name] = fmt


def register_format(obj: Any) -> Any:
    """Register a format (a FileFormat instance, or a subclass: one instance is made) and return
    `obj`, so it also works as a class decorator. Registering the same class again replaces the
    earlier instance; another class under a taken name or suffix is refused (DBDError)."""
    with _LOCK:
        _discover()
        _add(_checked(obj, "register_format"), "register_format")
    return obj


def unregister_format(name: str) -> FileFormat | None:
    """Remove a format from the registry (e.g. a test's own format when the test ends)."""
    with _LOCK:
        _discover()
        return _FORMATS.pop(name, None)


def _ordered() -> list[FileFormat]:
    return sorted(_FORMATS.values(), key=lambda f: f.order)  # stable: ties keep registration order


def list_formats() -> list[str]:
    """Names of the registered formats, by `order` (the order `--format all` exports them in)."""
    with _LOCK:
        _discover()
        return [f.name for f in _ordered()]


def get_format(name: str) -> FileFormat:
    """The format called `name` (case-insensitive); unknown -> DBDError with a suggestion."""
    with _LOCK:
        _discover()
        key = str(name).strip().lower()
        if key in _FORMATS:
            return _FORMATS[key]
        if key in _LOAD_ERRORS:
            raise DBDError(
                f"format '{key}' is not available: {_LOAD_ERRORS[key]}; reinstall the package that provides it"
            )
        raise DBDError(unknown_choice("format", str(name), [f.name for f in _ordered()] + ["all"]))


def find_format(path: str | Path) -> FileFormat | None:
    """The format whose suffix `path` has (case-insensitive), or None."""
    suffix = Path(path).suffix.lower()
    with _LOCK:
        _discover()
        return next((f for f in _ordered() if f.suffix == suffix), None)


def suffixes() -> list[str]:
    """The registered formats' file suffixes, by `order`."""
    with _LOCK:
        _discover()
        return [f.suffix for f in _ordered()]


def describe_suffixes(joiner: str = "or") -> str:
    """'.a, .b or .c': the registered suffixes for messages."""
    known = suffixes()
    if len(known) <= 1:
        return "".join(known) or "(no export format is installed)"
    return f"{', '.join(known[:-1])} {joiner} {known[-1]}"


def format_of(path: str | Path) -> FileFormat:
    """The format of an exported file, from its name; a checkpoint or an unknown suffix -> DBDError."""
    path = Path(path)
    fmt = find_format(path)
    if fmt is not None:
        return fmt
    if path.suffix.lower() == CHECKPOINT_SUFFIX:
        raise DBDError(
            f"'{path}': checkpoints must end in lower-case {CHECKPOINT_SUFFIX}, not '{path.suffix}'; "
            f"rename it to '{path.with_suffix(CHECKPOINT_SUFFIX).name}'"
        )
    broken = f" (not loaded: {'; '.join(f'{k}: {v}' for k, v in _LOAD_ERRORS.items())})" if _LOAD_ERRORS else ""
    raise DBDError(
        f"'{path}' is not a model file dbd reads: expected a {CHECKPOINT_SUFFIX} checkpoint or a "
        f"{describe_suffixes()} export (export one with dbd-export){broken}"
    )


def unknown_choice(what: str, value: str, known: list[str]) -> str:
    """'unknown WHAT 'VALUE'; did you mean 'X'? choose from A, B, C' (the suggestion when one is close)."""
    close = difflib.get_close_matches(str(value).lower(), known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown {what} '{value}'; {hint}choose from {', '.join(known)}"


__all__ = [
    "Availability",
    "CHECKPOINT_SUFFIX",
    "ENTRY_POINT_GROUP",
    "FileFormat",
    "FormatOption",
    "ProfiledRun",
    "ProfilingUnavailable",
    "describe_suffixes",
    "find_format",
    "format_of",
    "get_format",
    "list_formats",
    "register_format",
    "suffixes",
    "unknown_choice",
    "unregister_format",
]
