"""The machine a number was measured on: CPU model and the ISA features that decide how fast each
precision runs. Speeds compare only on the same CPU, so training cards and dbd-bench reports both
record it (training may not import the benchmarks package, hence it lives here)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

_ISA_FLAGS = {  # /proc/cpuinfo flag -> the name readers know
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
    "asimd": "NEON",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "bf16": "BF16",
    "sve": "SVE",
    "sve2": "SVE2",
    "sme": "SME",
}


def cpu_info() -> dict:
    """The CPU's model and the ISA features that decide how fast each precision runs (int8 gains
    on VNNI/AMX/dot-product CPUs, not on AVX2-only ones): {'model', 'features', 'cores', 'torch_isa'}."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    if not flags and platform.system() == "Darwin":  # Apple silicon: NEON, dot-product, bf16, i8mm
        try:
            out = subprocess.run(["sysctl", "-a"], capture_output=True, text=True, timeout=10).stdout
            flags = {
                k.split(":")[0].rsplit("FEAT_", 1)[-1].lower()
                for k in out.splitlines()
                if "hw.optional.arm.FEAT_" in k and k.endswith(": 1")
            }
            flags |= {"asimd"} | ({"asimddp"} if "dotprod" in flags else set())
            model = (
                model
                or subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import torch

        torch_isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch missing or too old: the flags still say it
        torch_isa = None
    return {
        "model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "features": [name for flag, name in _ISA_FLAGS.items() if flag in flags],
        "cores": os.cpu_count(),
        "torch_isa": torch_isa,
    }
