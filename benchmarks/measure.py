"""Measurements behind dbd-bench: latency, peak memory, the machine's compute peak, accuracy.

Latency is measured by dbd.evaluation.latency (one way for the bench and the training report). Peak memory: measured the same way for every runtime, in a fresh
process (`peak_memory_mb`): the peak resident set (VmHWM, so native allocations of every runtime
library count as much as torch's) while the file loads and runs one image, above the resident set
once the runtime library is imported. In this process, memory freed by an earlier row stays
resident and is reused, which read as 0 MB for some rows. Compute peak: a large fp32 matrix
multiply at the same thread count, best of several runs interleaved across thread counts (a
loaded machine once measured the 2-thread peak below the 1-thread one): the practical ceiling of
multiply-accumulates per second here, to see how close each format gets. `dbd.runtime.hardware.cpu_info` records the
CPU model and the ISA features that decide whether int8 beats float (VNNI, AMX, dot-product).
"""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dbd.evaluation.metrics import psnr_db
from dbd.runtime.spec import resize_bilinear


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory() -> None:
    """Hand freed heap back to the OS, so that new allocations show up in the resident set."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """Peak RSS above the starting RSS, in MB, for the code inside `with` (Linux; None elsewhere).

    The peak is the kernel's VmHWM, reset through clear_refs; where that reset is not allowed, a
    thread samples VmRSS every millisecond instead."""

    def __enter__(self) -> "PeakMemory":
        _release_freed_memory()
        self.mb: float | None = None
        self._sampled, self._stop = 0, threading.Event()
        self._thread = None
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self._hwm = True
        except OSError:
            self._hwm = False
        self.start = _status_kb("VmRSS")
        if not self._hwm and self.start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled, _status_kb("VmRSS") or 0)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        peak = _status_kb("VmHWM") if self._hwm else max(self._sampled, _status_kb("VmRSS") or 0)
        if peak is not None and self.start is not None:
            self.mb = max(0.0, (peak - self.start) / 1024)


# What a checkpoint's runner imports; an exported file's format says what its runner imports
# (FileFormat.runtime_modules). The child imports them before measuring, so the peak is the file's.
CHECKPOINT_RUNTIME_MODULES = ("torch", "dbd.models")

_MEMORY_CHILD = r"""
import importlib, json, sys
import numpy as np
from dbd.benchmarks.measure import CHECKPOINT_RUNTIME_MODULES, PeakMemory, _status_kb
from dbd.runtime.formats import CHECKPOINT_SUFFIX, find_format
from dbd.runtime.runners import open_runner
path, threads, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fmt = find_format(path)     # loads the format plug-ins too: they are not the file's memory either
modules = fmt.runtime_modules if fmt is not None else CHECKPOINT_RUNTIME_MODULES if path.endswith(CHECKPOINT_SUFFIX) else ()
for name in modules:
    importlib.import_module(name)
runtime_kb = _status_kb("VmRSS")
with PeakMemory() as memory:
    runner = open_runner(path, threads=threads, device=device)
    runner.run(np.zeros((1, *runner.size, 3), np.float32))
print(json.dumps({"peak_mb": memory.mb, "runtime_mb": None if runtime_kb is None else runtime_kb / 1024}))
"""


def peak_memory_mb(path: Path, threads: int, device: str = "cpu", timeout: float = 600) -> dict | None:
    """{'peak_mb': resident memory to load `path` and run one image, above the runtime library,
    'runtime_mb': the process's resident set with the library imported}, measured in a fresh
    process so that every row and runtime is measured alike; None where that cannot be measured."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, str(path), str(threads), device],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        found = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        found = None
    return found if found and found.get("peak_mb") is not None else None


def peak_gmacs_per_s(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained fp32 GEMM rate in GMAC/s (1 MAC = 2 FLOPs) at `threads` threads, one run."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return count * n**3 / elapsed / 1e9


@dataclass
class GemmPeaks:
    """Best fp32 GEMM rate per thread count over interleaved runs, with every run kept."""

    best: dict[int, float]
    runs: dict[int, list[float]]

    @property
    def reliable(self) -> bool:
        """False when more threads measured slower than fewer: the machine was busy while measuring."""
        ordered = [self.best[t] for t in sorted(self.best)]
        return all(b >= a * 0.95 for a, b in zip(ordered, ordered[1:]))

    def to_dict(self) -> dict:
        return {
            "best_gmacs_per_s": {str(t): v for t, v in self.best.items()},
            "runs_gmacs_per_s": {str(t): v for t, v in self.runs.items()},
            "reliable": self.reliable,
        }


def gemm_peaks(threads: list[int], repeats: int = 5, seconds: float = 0.25) -> GemmPeaks:
    """The machine's fp32 GEMM peak per thread count: the best of `repeats` short runs, the thread
    counts interleaved (1, 2, 1, 2, ...) so that a burst of load elsewhere lowers one run of each,
    not every run of one; the best is the closest to what the hardware can do."""
    runs: dict[int, list[float]] = {t: [] for t in threads}
    for _ in range(repeats):
        for t in threads:
            runs[t].append(peak_gmacs_per_s(t, seconds=seconds))
    return GemmPeaks({t: max(v) for t, v in runs.items()}, runs)


def map_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two stacks of probability maps (runtime.metrics.psnr_db), the second resized
    to the first's size when the models ran at different sizes; nan for stacks of different lengths."""
    if a.shape[0] != b.shape[0]:
        return float("nan")
    if a.shape != b.shape:  # e.g. a teacher run at 384² against a student at 320²: compare at a's size
        b = np.stack([resize_bilinear(m, a.shape[1:3]) for m in b])
    return psnr_db(a, b)
