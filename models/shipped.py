"""The trained weights shipped inside the package (the embedded default of every command).

    path = released_checkpoint("dbd_student")     # models/weights/dbd_student.safetensors
    model, card = load_released("dbd_student")

They are fp16 safetensors with their model cards (data, split, command, metrics, date); the
commands that reproduce them are in docs/training.md.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dbd.core import DBDError

from .checkpoint import load_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RELEASED = ("dbd_teacher", "dbd_student")


def released_checkpoint(arch: str) -> Path:
    if arch not in RELEASED:
        raise DBDError(f"no released weights for '{arch}'; released models: {', '.join(RELEASED)}")
    path = WEIGHTS_DIR / f"{arch}.safetensors"
    if not path.is_file():
        raise DBDError(
            f"the shipped {arch} weights are missing ({path}); reinstall dbd, or train them with "
            f"`dbd-train {arch.removeprefix('dbd_')}` and pass the checkpoint with --weights"
        )
    return path


def load_released(arch: str) -> tuple[nn.Module, dict]:
    return load_checkpoint(released_checkpoint(arch), expected_arch=arch)
