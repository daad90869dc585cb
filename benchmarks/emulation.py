"""`dbd-bench --arch aarch64`: the accuracy of every exported file that has an aarch64 runtime
(.tflite with LiteRT, .ncnn folders with ncnn) as a phone's CPU computes it, under QEMU user-mode
emulation, beside the same file on this machine.

For each such file, each emulated CPU (`CPUS`: a little core, cortex-a55, and a big core,
cortex-a76) and each kernel path a phone may take (`KERNELS`: LiteRT with its default XNNPACK
delegate or with its builtin kernels alone; ncnn with fp16 storage and arithmetic on or off):

1. the file's input tensors are made HERE, by the runtime's own preprocessing (`Runner.model_inputs`
   and the file's `encode_input`), for the same pairs as the x86 rows, and saved to a .npy;
2. `arm_worker.py` runs under `qemu-aarch64 -cpu CPU` with the arm64 Debian python of the kit: the
   model alone, input tensor in, raw output out (it imports numpy and the runtime's aarch64 wheel,
   never dbd or torch);
3. the raw outputs are decoded (`decode_output`) and scored HERE with the file's own last step
   (`score_maps`: the same `PreprocessSpec.postprocess` as the x86 rows), then with the other last
   step (`other_refine_row`), and compared with the x86 maps of the same file.

The rows join the accuracy table with `vs_x86` (ΔFβ@0.5, ΔMAE, the fraction of decision flips at 0.5
and the largest |ΔP(blur)|, on the maps at the model's input size) and no latency: emulated time is
not a phone's. The kit (QEMU >= 10, the sysroot, the wheels) is what `make arm-tools` puts in
.tools/arm64/ (or DBD_ARM_KIT); `find_kit` refuses in one line when it is absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from dbd.core import DBDError
from dbd.evaluation.scoring import score_maps
from dbd.runtime.formats import find_format
from dbd.runtime.metadata import decode_output, encode_input

from .refine_rows import accuracy_row, other_refine_row

ARCHES = ("aarch64",)
CPUS = (("little", "cortex-a55"), ("big", "cortex-a76"))  # (class, QEMU -cpu) of the emulated cores
KERNELS = {  # format -> its kernel paths on an aarch64 phone, as arm_worker.py names them
    "tflite": ("xnnpack", "builtin"),
    "ncnn": ("fp16-on", "fp16-off"),
}
KERNEL_WORDS = {
    "tflite": "xnnpack = LiteRT with its default XNNPACK delegate (what a phone's CPU runs by default), "
    "builtin = LiteRT's builtin kernels without the delegate (BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
    "ncnn": "fp16-on / fp16-off = ncnn with fp16 storage, packing and arithmetic on (its phone default) / off",
}
RUNTIME_PACKAGES = {"tflite": "ai-edge-litert", "ncnn": "ncnn"}  # the aarch64 wheel each format runs with
MIN_QEMU = (10, 0)  # QEMU 7.2 (Debian bookworm) gives wrong int8 results and crashes in user mode
KIT_ENV = "DBD_ARM_KIT"
INSTALL_HINT = (
    "run `make arm-tools` (QEMU 10 user mode, an arm64 Debian trixie sysroot and the aarch64 "
    "ai-edge-litert/ncnn wheels, into .tools/arm64/)"
)
WORKER = Path(__file__).with_name("arm_worker.py")
THRESHOLD = 0.5  # the decision whose flips are counted (the metrics' fixed threshold)
TIMEOUT_S = (600, 300)  # a worker is stopped after 600 s + 300 s per image (emulation hung)


@dataclass(frozen=True)
class Kit:
    """The emulation kit of `make arm-tools`: qemu-aarch64, the arm64 sysroot and the wheels' folder."""

    root: Path
    qemu: Path
    qemu_version: str
    sysroot: Path
    site: Path

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3"

    def command(self, cpu: str, *args: str) -> list[str]:
        """The aarch64 python of the sysroot on an emulated `cpu`, with `args`."""
        return [str(self.qemu), "-cpu", cpu, "-L", str(self.sysroot), str(self.python), *args]

    def env(self) -> dict[str, str]:
        """This environment without the host python's and loader's settings, the kit's wheels on the path."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_"))}
        return {**env, "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}

    def wheel_version(self, package: str) -> str | None:
        """The version of `package` unpacked in site/ (from its .dist-info folder), or None."""
        stem = re.sub(r"[-_.]+", "_", package).lower()
        for info in self.site.glob("*.dist-info"):
            name, _, ver = info.name.removesuffix(".dist-info").rpartition("-")
            if re.sub(r"[-_.]+", "_", name).lower() == stem:
                return ver
        return None


def kit_dir() -> Path:
    """DBD_ARM_KIT, else .tools/arm64 of the checkout this package runs from, else of the current folder."""
    if os.environ.get(KIT_ENV):
        return Path(os.environ[KIT_ENV])
    checkout = Path(__file__).resolve().parents[1] / ".tools" / "arm64"
    here = Path.cwd() / ".tools" / "arm64"
    return here if not checkout.is_dir() and here.is_dir() else checkout


def find_kit(formats: Iterable[str] = (), root: str | Path | None = None) -> Kit:
    """The kit at `root` (default `kit_dir()`), checked: QEMU >= 10 and, for each of `formats`, the
    aarch64 wheel of the version this environment runs. Absent or stale: one-line DBDError naming
    `make arm-tools`."""
    root = Path(root) if root is not None else kit_dir()
    qemu, sysroot, site = root / "qemu-aarch64", root / "sysroot", root / "site"
    for need in (qemu, sysroot / "usr" / "bin" / "python3", site):
        if not need.exists():
            raise DBDError(f"--arch aarch64: the emulation kit is missing ({need} not found); {INSTALL_HINT}")
    try:
        said = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise DBDError(f"--arch aarch64: {qemu} does not run ({err}); {INSTALL_HINT}") from None
    found = re.search(r"version (\d+)\.(\d+)(\.\d+)?", said)
    if found is None or (int(found[1]), int(found[2])) < MIN_QEMU:
        got = found[0].removeprefix("version ") if found else "of an unknown version"
        raise DBDError(
            f"--arch aarch64: {qemu} is QEMU {got}, older than {'.'.join(map(str, MIN_QEMU))} (older user modes "
            f"give wrong int8 results); {INSTALL_HINT}"
        )
    kit = Kit(root, qemu, found[0].removeprefix("version "), sysroot, site)
    for fmt in formats:
        package = RUNTIME_PACKAGES[fmt]
        try:
            wanted = version(package)
        except PackageNotFoundError:
            continue  # the format does not run here either: bench leaves its files out
        have = kit.wheel_version(package)
        if have != wanted:
            raise DBDError(
                f"--arch aarch64: the kit's aarch64 {package} is {have or 'missing'} but this environment runs "
                f"{package} {wanted}; {INSTALL_HINT}"
            )
    return kit


def check_arch(arch: str, files: Iterable[Path], gate: bool = False) -> Kit:
    """Before any benchmark: `arch` is known, the gate is not asked for, some file has an aarch64
    runtime, and the kit can run them. Returns the kit."""
    if arch not in ARCHES:
        raise DBDError(f"--arch {arch!r} is not emulated; choose from {', '.join(ARCHES)}")
    if gate:
        raise DBDError(
            f"--arch {arch} adds emulated rows, which the accuracy gate does not compare; "
            f"run --check/--update-baseline without --arch"
        )
    formats = {fmt.name for fmt in map(find_format, files) if fmt is not None and fmt.name in KERNELS}
    kit = find_kit(sorted(formats))
    if not formats:
        raise DBDError(
            f"--arch {arch}: none of the benchmarked files is a .tflite file or an .ncnn folder (the formats "
            f"with an aarch64 runtime); export one with dbd-export --format tflite, or pass one with --weights"
        )
    return kit


def _job(kit: Kit, cpu: str, spec: dict[str, Any], path: Path) -> list[str]:
    """Write the worker's job file; the command that runs it on `cpu`."""
    path.write_text(json.dumps(spec), encoding="utf-8")
    return kit.command(cpu, str(WORKER), str(path))


def run_emulated(
    kit: Kit, tasks: list[dict[str, Any]], jobs: int | None = None, log: Callable[[str], None] | None = None
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Run every task (`cmd`, `outputs`, `label`, `n`) under QEMU, `jobs` at a time (default: the
    cores); (raw outputs, the worker's report) of each, in order. Stopped workers are killed."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    pending, running, done = list(enumerate(tasks)), {}, {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, task = pending.pop(0)
                log_path = Path(task["outputs"]).with_suffix(".log")
                stderr = open(log_path, "wb")  # noqa: SIM115 - closed when the worker ends
                proc = subprocess.Popen(
                    task["cmd"], stdout=subprocess.PIPE, stderr=stderr, env=kit.env(), stdin=subprocess.DEVNULL
                )
                running[i] = (proc, stderr, log_path, time.monotonic())
            for i, (proc, stderr, log_path, started) in list(running.items()):
                task = tasks[i]
                if proc.poll() is None:
                    if time.monotonic() - started > TIMEOUT_S[0] + TIMEOUT_S[1] * task["n"]:
                        proc.kill()
                        proc.wait()
                        stderr.close()
                        raise DBDError(
                            f"{task['label']}: the emulated run took over {TIMEOUT_S[0] + TIMEOUT_S[1] * task['n']} s "
                            f"and was stopped; try fewer pairs with --limit"
                        )
                    continue
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                stderr.close()
                del running[i]
                if proc.returncode != 0 or not Path(task["outputs"]).is_file():
                    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
                    why = lines[-1].strip()[:200] if lines else f"exit code {proc.returncode}"
                    raise DBDError(f"{task['label']} failed under emulation ({why}); {INSTALL_HINT}")
                try:
                    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
                except json.JSONDecodeError:
                    report = {}
                done[i] = (np.load(task["outputs"]), report)
                if log:
                    log(f"emulated {task['label']}: {task['n']} images in {report.get('seconds', 0):.0f} s")
            if running:
                time.sleep(0.2)
    finally:
        for proc, stderr, _, _ in running.values():
            proc.kill()
            proc.wait()
            stderr.close()
    return [done[i] for i in range(len(tasks))]


def versus_x86(row: dict[str, Any], x86: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """An emulated row against the same file and last step on this machine: ΔFβ@0.5, ΔMAE (scored
    maps), and on the maps at the model's input size the fraction of pixels on the other side of 0.5
    (`flips`), the largest |ΔP(blur)| (`max_abs`; in output quantisation steps too for an int8 output)."""
    a, b = row["_maps"], x86["_maps"]
    diff = float(np.abs(a.astype(np.float64) - b).max())
    out = {
        "d_fbeta": row["metrics"]["fbeta_fixed"] - x86["metrics"]["fbeta_fixed"],
        "d_mae": row["metrics"]["mae"] - x86["metrics"]["mae"],
        "flips": float(np.mean((a >= THRESHOLD) != (b >= THRESHOLD))),
        "max_abs": diff,
        "bit_exact": bool(np.array_equal(a, b)),
    }
    quant = info["output"].get("quantization")
    if quant:
        out["max_steps"] = int(round(diff / quant["scale"]))
    return out


def emulated_rows(
    rows: list[dict[str, Any]],
    pairs: list,
    kit: Kit,
    *,
    arch: str = "aarch64",
    jobs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The emulated rows (each with `_maps`, like bench's rows) of every x86 row in `rows` whose file
    has an aarch64 runtime, on the same `pairs`; and the notes that explain them."""
    from dbd.runtime.runners import open_runner

    own = {}  # file -> the x86 row of its own last step (bench's first row of each file)
    x86 = {}  # (file, last step) -> x86 row
    for r in rows:
        if r.get("arch") or "+tta" in r["format"] or r["format"] not in KERNELS:
            continue
        own.setdefault(r["file"], r)
        x86[(r["file"], r["refine"])] = r
    made: list[dict[str, Any]] = []
    if not own:
        return made, [f"--arch {arch}: no .tflite or .ncnn file ran on this machine, so none was emulated"]
    with tempfile.TemporaryDirectory(prefix="dbd-arm-") as tmp:
        folder = Path(tmp)
        tasks, runners = [], {}
        for k, (file, row) in enumerate(own.items()):
            runner = open_runner(file, threads=1)
            runners[file] = runner
            inputs = folder / f"{k}.inputs.npy"
            np.save(inputs, np.stack([encode_input(runner.info, runner.model_inputs([p]))[0] for p, _ in pairs]))
            spec = {
                "runtime": row["format"],
                "model": str(Path(file).resolve()),
                "inputs": str(inputs),
                "input_name": runner.info["input"]["name"],
                "output_name": runner.info["output"]["name"],
                "output_shape": runner.info["output"]["shape"],
            }
            for cpu_class, cpu in CPUS:
                for kernels in KERNELS[row["format"]]:
                    name = f"{k}.{cpu}.{kernels}"
                    outputs = folder / f"{name}.outputs.npy"
                    job = {**spec, "kernels": kernels, "outputs": str(outputs)}
                    tasks.append(
                        {
                            "cmd": _job(kit, cpu, job, folder / f"{name}.json"),
                            "outputs": str(outputs),
                            "label": f"'{file}' on {cpu} ({kernels})",
                            "n": len(pairs),
                            "file": file,
                            "cpu": cpu,
                            "cpu_class": cpu_class,
                            "kernels": kernels,
                        }
                    )
        results = run_emulated(kit, tasks, jobs=jobs, log=log)
    reports = []
    for task, (raw, report) in zip(tasks, results):
        file, runner = task["file"], runners[task["file"]]
        maps = decode_output(runner.info, raw)
        expected = own[file]["_maps"].shape
        if maps.shape != expected or not np.isfinite(maps).all():
            what = f"maps of shape {maps.shape}, not {expected}," if maps.shape != expected else "non-finite values"
            raise DBDError(f"{task['label']} returned {what} under emulation; re-export it with dbd-export")
        base = own[file]
        fmt = f"{base['format']}@{task['cpu']}/{task['kernels']}"
        metrics, decisions = score_maps(maps, pairs, runner.spec)
        emulation = {
            "arch": arch,
            "cpu": task["cpu"],
            "cpu_class": task["cpu_class"],
            "kernels": task["kernels"],
            "qemu": kit.qemu_version,
            "runtime": {RUNTIME_PACKAGES[base["format"]]: report.get(base["format"])},
            "python": report.get("python"),
            "asimdhp": report.get("asimdhp"),
            "seconds": report.get("seconds"),
        }
        row = accuracy_row(  # no latency: emulated time is not a phone's
            base,
            metrics,
            decisions,
            id=f"{base['model']}:{fmt}:{base['precision']}:{base['refine']}",
            format=fmt,
            arch=arch,
            emulation=emulation,
            _maps=maps,
        )
        other = other_refine_row(row, runner.spec, pairs)
        for r in (row, other):
            r["curves"] = None  # the plots keep the x86 rows
            r["vs_x86"] = versus_x86(r, x86[(file, r["refine"])], runner.info)
            made.append(r)
        reports.append(report)
    versions = ", ".join(
        f"{package} {kit.wheel_version(package)}"
        for fmt, package in RUNTIME_PACKAGES.items()
        if any(r["format"] == fmt for r in own.values())
    )
    python = next((r.get("python") for r in reports if r.get("python")), "?")
    fp16 = [r.get("asimdhp") for r in reports if r.get("asimdhp") is not None]
    notes = [
        f"{arch} rows (FORMAT@CPU/KERNELS): each .tflite/.ncnn file run under QEMU {kit.qemu_version} user-mode "
        f"emulation, {' and '.join(f'{c} = {k} core' for k, c in CPUS)}, one thread (arm64 Debian python {python}, "
        f"{versions}), fed the input tensors this machine's preprocessing made and scored here with the same "
        f"last steps; accuracy only: emulated time is not a phone's",
        "kernel paths: "
        + "; ".join(words for fmt, words in KERNEL_WORDS.items() if any(r["format"] == fmt for r in own.values()))
        + (f" (the emulated cores report fp16 arithmetic, asimdhp: {'yes' if all(fp16) else 'no'})" if fp16 else ""),
        "Δ x86: against the same file with the same last step on this machine (ΔFβ@0.5, ΔMAE); flips = fraction "
        "of pixels of the model's map (at its input size) on the other side of 0.5 than the x86 map; "
        "max ΔP = the largest |difference| of P(blur) there (0: bit-exact)",
    ]
    return made, notes


__all__ = [
    "ARCHES",
    "CPUS",
    "KERNELS",
    "Kit",
    "check_arch",
    "emulated_rows",
    "find_kit",
    "kit_dir",
    "run_emulated",
    "versus_x86",
]
