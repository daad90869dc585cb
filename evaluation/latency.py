"""Latency, measured one way for dbd-bench and the training report: warm-up calls, then timed
calls of one input at the model's size; the median and the 90th percentile. Several models measured
together take turns call by call, so a load that comes and goes on a shared machine falls on each
alike: such figures compare within one measurement, never across machines or runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dbd.runtime.runner_base import Runner


@dataclass
class Latency:
    threads: int
    median_ms: float
    p90_ms: float
    runs: int

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms


def time_calls(calls: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds of each of `runs` timed calls per label, after `warmup` untimed ones; the calls
    take turns (one of each, then the next round)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(runs):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            times[label].append((time.perf_counter() - start) * 1000)
    return times


def latency(times_ms: list[float], threads: int) -> Latency:
    return Latency(threads, float(np.median(times_ms)), float(np.percentile(times_ms, 90)), len(times_ms))


def measure_latency(runner: Runner, threads: int, runs: int = 50, warmup: int = 10) -> Latency:
    """One runner on one random input at its size (`threads` is recorded: the runner was opened with it)."""
    x = np.random.default_rng(0).random((1, *runner.size, 3), dtype=np.float32)
    return latency(time_calls({"model": lambda: runner.run(x)}, runs, warmup)["model"], threads)
