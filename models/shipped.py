"""The trained weights shipped inside the package (the embedded default of every command), one
release per role (the training stage: teacher or student).

    path = released_checkpoint("student")         # models/weights/dbd_student.safetensors
    path = released_checkpoint("dbd_student")     # the same: a released architecture's name works too
    model, card = load_released("student")
    role_of(card)                                 # "student": the card's training stage

They are fp16 safetensors with their model cards (data, split, command, metrics, date); the
commands that reproduce them are in docs/training.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dbd.core import DBDError

from .checkpoint import load_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RELEASES: dict[str, str] = {"teacher": "dbd_teacher", "student": "dbd_student"}  # role -> released arch
ROLES = tuple(RELEASES)
RELEASED = tuple(RELEASES.values())  # the released architectures' names (what older callers test against)


def released_arch(name: str) -> str:
    """The released architecture of a role ("student" -> "dbd_student"); a released architecture's
    name is returned as is."""
    if name in RELEASES:
        return RELEASES[name]
    if name in RELEASED:
        return name
    raise DBDError(
        f"no released weights for '{name}'; released: "
        + ", ".join(f"{role} ({arch})" for role, arch in RELEASES.items())
    )


def role_of(card: dict[str, Any] | None, arch: str | None = None) -> str | None:
    """The role ("teacher", "student") of a model card or an exported file's metadata (both carry the
    card's `training` section): its training stage; for a file without one (made before stages were
    recorded), the role of a released architecture's name; None for anything else."""
    stage = ((card or {}).get("training") or {}).get("stage")
    if stage in ROLES:
        return stage
    if arch is None and card:
        arch = card.get("arch") or (card.get("model") or {}).get("arch")
    return next((role for role, name in RELEASES.items() if name == arch), None)


def released_checkpoint(name: str) -> Path:
    """The shipped checkpoint of a role ("student") or of a released architecture ("dbd_student")."""
    arch = released_arch(name)
    path = WEIGHTS_DIR / f"{arch}.safetensors"
    if not path.is_file():
        role = next(r for r, a in RELEASES.items() if a == arch)
        raise DBDError(
            f"the shipped {arch} weights are missing ({path}); reinstall dbd, or train them with "
            f"`dbd-train {role}` and pass the checkpoint with --weights"
        )
    return path


def load_released(name: str) -> tuple[nn.Module, dict]:
    return load_checkpoint(released_checkpoint(name), expected_arch=released_arch(name))
