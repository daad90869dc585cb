"""Measurements behind dbd-bench: latency, peak memory, the machine's compute peak, accuracy.

Latency: warm-up runs, then at least 50 timed runs of one image at the model's input size,
median and 90th percentile. Peak memory: the process's peak resident set (VmHWM) while the row
loads and runs, above what was resident before (Linux resets the peak through clear_refs).
Compute peak: a large fp32 matrix multiply at the same thread count: the practical ceiling of
multiply-accumulates per second on this machine, to see how close each format gets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dbd.runtime.runners import Runner


@dataclass
class Latency:
    threads: int
    median_ms: float
    p90_ms: float
    runs: int

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms


def measure_latency(runner: Runner, threads: int, runs: int = 50, warmup: int = 10) -> Latency:
    x = np.random.default_rng(0).random((1, *runner.size, 3), dtype=np.float32)
    for _ in range(warmup):
        runner.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(x)
        times.append((time.perf_counter() - start) * 1000)
    return Latency(threads, float(np.median(times)), float(np.percentile(times, 90)), runs)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak RSS above the starting RSS, in MB, for the code inside `with` (Linux; None elsewhere)."""

    def __enter__(self) -> "PeakMemory":
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        self.start = _status_kb("VmRSS")
        self.mb: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kb("VmHWM")
        if peak is not None and self.start is not None:
            self.mb = max(0.0, (peak - self.start) / 1024)


def peak_gmacs_per_s(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained fp32 GEMM rate in GMAC/s (1 MAC = 2 FLOPs) at `threads` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    elapsed = time.perf_counter() - start
    torch.set_num_threads(previous)
    return count * n ** 3 / elapsed / 1e9


def map_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two stacks of probability maps (peak 1); inf when identical."""
    if a.shape != b.shape:
        return float("nan")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
