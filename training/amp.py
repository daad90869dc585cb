"""bf16 autocast: always on a CUDA GPU; on a CPU only where it is supported *and* measured faster.

CPUs differ between machines (AVX2 only; AVX-512 with bf16; AMX): bf16 is faster on some and
slower on a CPU that emulates it (timings: docs/training.md, "Machinery"). So `--amp auto`
times a few training steps of the real model at the real batch shape both ways, on a copy of the
model (the run's weights and BatchNorm statistics are not touched), and keeps the faster one.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from dbd.core import DBDError

AMP_CHOICES = ("auto", "on", "off")
# bf16 must save at least this fraction of the step time to be worth its rounding.
MIN_SPEED_GAIN = 0.10


@dataclass
class AmpDecision:
    enabled: bool
    reason: str
    probe_s: dict[str, float] = field(default_factory=dict)  # seconds per step, fp32 / bf16

    def to_dict(self) -> dict:
        return {
            "dtype": "bf16" if self.enabled else "fp32",
            "reason": self.reason,
            **{f"probe_{k}_s": round(v, 4) for k, v in self.probe_s.items()},
        }


def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic (avx512_bf16 or AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _step_seconds(model: nn.Module, x: torch.Tensor, bf16: bool, repeats: int) -> float:
    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        getattr(out, "logits", out).float().mean().backward()  # a TrainForward's output, or a plain map

    step()  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def decide_amp(
    mode: str, model: nn.Module, device: torch.device, batch: int, size: int, repeats: int = 2
) -> AmpDecision:
    """Whether the training steps run under bf16 autocast (`model` is the TrainForward)."""
    if mode not in AMP_CHOICES:
        raise DBDError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got '{mode}'")
    if mode == "off":
        return AmpDecision(False, "--amp off")
    if device.type == "cuda":
        return AmpDecision(True, f"--amp {mode} on a CUDA GPU")
    if not cpu_supports_bf16():
        if mode == "on":
            raise DBDError("--amp on: this CPU has no native bf16 (avx512_bf16 or AMX); use --amp auto or off")
        return AmpDecision(False, "this CPU has no native bf16")
    if mode == "on":
        return AmpDecision(True, "--amp on (CPU with native bf16)")
    probe = copy.deepcopy(model).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    seconds = {"fp32": _step_seconds(probe, x, False, repeats), "bf16": _step_seconds(probe, x, True, repeats)}
    del probe
    faster = seconds["bf16"] < (1 - MIN_SPEED_GAIN) * seconds["fp32"]
    reason = (
        f"probe: {seconds['bf16']:.2f} s/step in bf16 vs {seconds['fp32']:.2f} s in fp32 (batch {batch} at {size}²)"
    )
    return AmpDecision(faster, reason, seconds)
