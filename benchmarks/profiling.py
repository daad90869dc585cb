"""`dbd-bench --profile`: where each exported file's time goes, by operator type and by layer, measured
by the runtimes' own profilers (each format plug-in's `FileFormat.profile`), so the student can be
made faster by evidence.

    dbd-bench --profile                                       # every file in exports/, 1 thread and all cores
    dbd-bench --profile --weights exports/dbd_student_320_int8.tflite --threads 1   # only these files

Every file runs `--warmup` times, then `--runs` times under its runtime's profiler, on one real input:
the first image of `--data`/`--split`, preprocessed by the file's own contract. onnxruntime and LiteRT
run at each `--threads` count; ExecuTorch at its process-wide XNNPACK pool's size; ncnn's wheel and
CoreML on Linux offer no profiler (a line says so). Prints, then writes profile.md and profile.json
(every layer) into `--report`, beside bench.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from dbd.core import MAX_THREADS, DBDError, atomic_write, check_int, check_writable, reraise_interrupt
from dbd.runtime.formats import CHECKPOINT_SUFFIX, ProfiledRun, ProfilingUnavailable, format_of
from dbd.runtime.formats import suffixes as export_suffixes

PROFILE_FILES = ("profile.md", "profile.json")
TOP_LAYERS = 10  # layers listed per profile (profile.json holds them all)
# dbd-bench flags that belong to the benchmark, not to --profile: (argparse dest, flag)
BENCH_ONLY = (
    ("check", "--check"),
    ("update_baseline", "--update-baseline"),
    ("allow_new_rows", "--allow-new-rows"),
    ("robustness", "--robustness"),
    ("teacher_tta", "--teacher-tta"),
    ("teacher", "--teacher"),
    ("student", "--student"),
    ("limit", "--limit"),
    ("arch", "--arch"),
)


@dataclass
class FileProfile:
    """One file at one thread count: its profile, or why it has none."""

    file: Path
    format: str
    precision: str
    threads: int  # the thread count asked for
    run: ProfiledRun | None = None
    reason: str = ""  # why not profiled
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.run is None:
            return f"{self.file.name} ({self.format} {self.precision})"
        ran = self.run.threads or self.threads
        return f"{self.file.name} ({self.format} {self.precision}), {ran} thread{'s' * (ran != 1)}"

    def node_ms(self) -> list[tuple[str, str, float]]:
        """(layer, op type, median ms over the profiled runs) of every node, in execution order: the
        median, as a burst of load elsewhere on a shared machine lengthens a few runs, not the typical one."""
        return [(name, op, float(np.median(times))) for name, op, times in self.run.nodes]

    def whole_ms(self) -> float | None:
        """The runtime's own time for the whole inference, median over the profiled runs."""
        return float(np.median(self.run.total_ms)) if self.run.total_ms else None

    def op_types(self) -> list[dict[str, Any]]:
        """Per op type: nodes, ms per inference, % of the operators' time; slowest first."""
        nodes = self.node_ms()
        total = sum(ms for _, _, ms in nodes) or 1.0
        by_op: dict[str, list[float]] = {}
        for _, op, ms in nodes:
            by_op.setdefault(op, []).append(ms)
        rows = [{"op": op, "nodes": len(v), "ms": sum(v), "percent": 100 * sum(v) / total} for op, v in by_op.items()]
        return sorted(rows, key=lambda r: -r["ms"])

    def layers(self) -> list[dict[str, Any]]:
        """Every node in execution order: ms per inference and % of the operators' time."""
        nodes = self.node_ms()
        total = sum(ms for _, _, ms in nodes) or 1.0
        return [{"layer": name, "op": op, "ms": ms, "percent": 100 * ms / total} for name, op, ms in nodes]

    def inside(self) -> float | None:
        """The share of each whole inference inside the operators' own events, median over the runs
        (unlike the sum of medians, it is not thrown off when a busy machine stalls some runs)."""
        runs, whole = self.run.runs, self.run.total_ms
        if not whole or any(len(times) != runs for _, _, times in self.run.nodes):
            return None
        per_run = np.sum([times for _, _, times in self.run.nodes], axis=0)
        return float(np.median(per_run / np.asarray(whole)))

    def summary(self) -> str:
        nodes, whole, inside = sum(ms for _, _, ms in self.node_ms()), self.whole_ms(), self.inside()
        text = f"{self.run.runs} runs; the operators take {nodes:.2f} ms per inference (the sum of their medians)"
        if whole:
            text += f"; the whole inference {whole:.2f} ms (median)"
        if inside is not None:
            text += f", {100 * inside:.0f} % of it inside the operators"
        return text

    def tables(self, top: int = TOP_LAYERS) -> list[tuple[str, list[str], list[list[str]]]]:
        ops = [[r["op"], str(r["nodes"]), f"{r['ms']:.3f}", f"{r['percent']:.1f}"] for r in self.op_types()]
        slowest = sorted(self.layers(), key=lambda r: -r["ms"])[:top]
        layers = [[r["layer"], r["op"], f"{r['ms']:.3f}", f"{r['percent']:.1f}"] for r in slowest]
        return [
            ("by operator type", ["op type", "nodes", "ms/inference", "%"], ops),
            (f"top {len(layers)} layers", ["layer", "op type", "ms/inference", "%"], layers),
        ]

    def to_dict(self) -> dict[str, Any]:
        found = {"file": str(self.file), "format": self.format, "precision": self.precision}
        found["threads_asked"] = self.threads
        if self.run is None:
            return {**found, "profiled": False, "reason": self.reason}
        return {
            **found,
            "profiled": True,
            "profiler": self.run.profiler,
            "threads": self.run.threads,
            "runs": self.run.runs,
            "inference_ms": self.whole_ms(),
            "operators_ms": sum(ms for _, _, ms in self.node_ms()),
            "inside_operators": self.inside(),
            "op_types": self.op_types(),
            "layers": self.layers(),
            "notes": self.run.notes + self.notes,
        }


def exported_files(exports: str | Path | None, weights: Iterable[str | Path] | None) -> list[Path]:
    """`weights` when given, else every exported file in `exports` (as dbd-bench lists them): each once."""
    found: list[Path] = []
    if not weights and exports is not None and Path(exports).is_dir():
        known = export_suffixes()
        found += sorted(
            p
            for p in Path(exports).iterdir()
            if p.suffix.lower() in known and not p.name.startswith(".") and ".tmp" not in p.name
        )
    found += [Path(p) for p in weights or []]
    missing = [p for p in found if not p.exists()]
    if missing:
        raise DBDError(f"'{missing[0]}' does not exist; pass existing exported files to --weights")
    return list(dict.fromkeys(found))


def profile_input(data: str, split: str | None, polarity: str | None) -> tuple[Any, str]:
    """The first photo of the dataset (RGB uint8) and words saying which it is."""
    from dbd.data.datasets import open_dataset

    dataset = open_dataset(data, split=split or None, polarity=polarity)
    if len(dataset) == 0:
        raise DBDError(f"--data {data} (split {split or 'all'}) holds no image to profile with; pass another --data")
    samples = getattr(dataset, "samples", None)  # a folder dataset names its files; a synthetic one does not
    name = f" ({Path(samples[0].image_path).name})" if samples else ""
    where = f"{getattr(dataset, 'name', data)}:{split or 'all'}"
    return dataset[0][0], f"the first image of {where}{name}, preprocessed by each file's own contract"


def profile_file(path: Path, photo, threads: list[int], runs: int, warmup: int) -> list[FileProfile]:
    """`path` profiled at each thread count (once, for a runtime whose thread pool is fixed)."""
    from dbd.runtime.metadata import encode_input, read_metadata
    from dbd.runtime.spec import PreprocessSpec

    if path.suffix.lower() == CHECKPOINT_SUFFIX:
        reason = "a PyTorch checkpoint: --profile profiles exported files (export it with dbd-export)"
        return [FileProfile(path, "torch", "fp32", max(threads), reason=reason)]
    fmt = format_of(path)
    meta = read_metadata(path)  # a file that is not what its suffix says is refused here, in one line
    made = [FileProfile(path, fmt.name, meta["file"]["precision"], t) for t in threads]
    availability = fmt.available()
    if not availability:
        made[0].reason = availability.reason
        return made[:1]
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    x = encode_input(meta, spec.model_input(photo)[None])
    for i, one in enumerate(made):
        try:
            one.run = fmt.profile(path, x, one.threads, runs, warmup)
            if not one.run.nodes:
                raise ProfilingUnavailable(f"{one.run.profiler} recorded no operator")
        except ProfilingUnavailable as err:
            one.reason = str(err)
            return [one]
        except DBDError:
            raise
        except Exception as err:  # noqa: BLE001 - a runtime's own exception types, for one file
            reraise_interrupt(err)
            first = (str(err).splitlines() or [""])[0][:160]
            raise DBDError(f"profiling '{path}' failed ({type(err).__name__}: {first}); re-export it") from None
        if one.run.threads and one.run.threads != one.threads:  # a fixed pool: the other counts run alike
            one.notes.append(
                f"ran with the runtime's process-wide pool of {one.run.threads} threads, not {one.threads}"
            )
            return made[: i + 1]
    return made


def markdown(title: str, notes: list[str], profiles: list[FileProfile], top: int) -> str:
    lines = [f"# {title}", ""] + [f"- {n}" for n in notes]
    for p in profiles:
        lines += ["", f"## {p.label}", ""]
        if p.run is None:
            lines += [f"Not profiled: {p.reason}."]
            continue
        lines += [f"{p.run.profiler}: {p.summary()}."] + [f"Note: {n}." for n in p.run.notes + p.notes]
        for name, head, rows in p.tables(top):
            lines += ["", f"{name[0].upper()}{name[1:]}:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def check_args(args) -> None:
    """--profile's own checks, before anything runs: one line per problem, naming the flag."""
    for dest, flag in BENCH_ONLY:
        if getattr(args, dest, None):
            raise DBDError(f"--profile profiles exported files and does not take {flag}; drop {flag} or --profile")
    if args.device != "cpu":
        raise DBDError(f"--profile runs on the CPU; drop --device {args.device}")
    check_int(args.runs, "--runs (profiled runs with --profile)", minimum=1)
    check_int(args.warmup, "--warmup", minimum=0)
    check_int(max(args.threads), "--threads", maximum=MAX_THREADS)


def run_profile(args, emit: Callable[[str], None] = print) -> int:
    """dbd-bench --profile (cli.main calls it with the parsed flags)."""
    from dbd.runtime.hardware import cpu_info
    from dbd.runtime.metadata import read_metadata

    from .tables import terminal

    check_args(args)
    files = exported_files(args.exports, args.weights)
    if not files:
        raise DBDError(
            f"--profile found no exported file in '{args.exports}'; export with dbd-export or pass --weights FILE"
        )
    for path in files:  # a file no runtime reads is refused before anything runs
        if path.suffix.lower() != CHECKPOINT_SUFFIX:
            format_of(path)
            read_metadata(path)
    if args.report is not None:
        check_writable(args.report, "--report", PROFILE_FILES)
    photo, source = profile_input(args.data, args.split, args.polarity)
    cpu = cpu_info()
    title = "dbd-bench --profile: where each file's time goes, from the runtimes' own profilers"
    notes = [
        f"input: {source}",
        f"{args.warmup} warm-up runs, then {args.runs} profiled runs per file and thread count",
        f"CPU: {cpu['model']} ({cpu['arch']}, {cpu['cores']} cores), ISA: {', '.join(cpu['features']) or 'none known'}",
        "ms/inference: the runtime's own time for the operator (or layer), median over the profiled runs; "
        "%: of the operators' summed time",
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    emit(title)
    for n in notes:
        emit(f"  - {n}")
    profiles: list[FileProfile] = []
    for path in files:
        for p in profile_file(path, photo, args.threads, args.runs, args.warmup):
            profiles.append(p)
            emit(f"\n{p.label}")
            if p.run is None:
                emit(f"  not profiled: {p.reason}")
                continue
            emit(f"  {p.run.profiler}: {p.summary()}")
            for n in p.run.notes + p.notes:
                emit(f"  note: {n}")
            for name, head, rows in p.tables():
                emit(f"  {name}:\n" + "\n".join("    " + line for line in terminal(head, rows).splitlines()))
    if load is not None:  # whole-inference times include waiting for a core on a busy machine
        notes.append(
            f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores"
        )
        emit(f"\n  - {notes[-1]}")
    if args.report is not None:
        report = Path(args.report)
        md, js = report / "profile.md", report / "profile.json"
        atomic_write(md, lambda tmp: Path(tmp).write_text(markdown(title, notes, profiles, TOP_LAYERS)))
        document = {"title": title, "notes": notes, "cpu": cpu, "profiles": [p.to_dict() for p in profiles]}
        atomic_write(js, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=1) + "\n"))
        emit(f"\nwrote {md}\nwrote {js}")
    return 0
