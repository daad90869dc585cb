"""Checkpoints that cannot run code: safetensors tensors plus a JSON model card.

The card travels inside the safetensors header (key `dbd_card`), so tensors and their
description can never be separated or disagree; a pretty-printed copy is written beside the
file (`NAME.json`) for people and code review. The card holds everything needed to rebuild and
use the model: architecture name and config, preprocessing spec, training data and command,
metrics. Loading refuses pickles, truncated files, foreign files and other architectures, each
with a one-line error.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dbd.core import DBDError, atomic_write, reraise_interrupt

from .registry import create_model

CARD_KEY = "dbd_card"
CARD_FORMAT = "dbd-checkpoint/1"


def save_checkpoint(
    path: str | Path, model: nn.Module, card: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Save `model` (built by `create_model`) with its card; `dtype=torch.float16` halves the file.

    Returns the full card written. Keys of `card` (preprocess, training, metrics, ...) are kept;
    architecture, config, format and date are filled in from the model.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise DBDError(f"checkpoint path '{path}' must end in .safetensors")
    arch = getattr(model, "arch", None)
    if arch is None:
        raise DBDError("only models built with dbd.models.create_model can be checkpointed (no .arch)")
    full_card = {
        "format": CARD_FORMAT,
        "arch": arch,
        "config": model.config,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(card or {}),
    }
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    header = {CARD_KEY: json.dumps(full_card, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    atomic_write(
        path.with_suffix(".json"),
        lambda tmp: Path(tmp).write_text(json.dumps(full_card, indent=2, sort_keys=True) + "\n"),
    )
    return full_card


class ModelCard(dict):
    """A checkpoint's card: a dict whose missing keys raise a one-line DBDError naming the file,
    so `card["preprocess"]` on a card without one is a clear error everywhere, never a KeyError."""

    def __init__(self, data: Any = (), path: str | Path = "<checkpoint>"):
        super().__init__(data)
        self.path = Path(path)

    def __missing__(self, key: str):
        fix = (
            "so its input size and normalisation are unknown; re-save it with "
            "save_checkpoint(path, model, {'preprocess': PreprocessSpec.for_model(model).to_dict()})"
            if key == "preprocess"
            else "re-save it with dbd.models.save_checkpoint"
        )
        raise DBDError(f"checkpoint '{self.path}' has no '{key}' entry in its model card, {fix}")

    def __reduce__(self):  # pickles/copies as a plain dict
        return dict, (dict(self),)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise DBDError(f"checkpoint '{path}' is a folder; pass the .safetensors file itself")
    if not path.is_file():
        raise DBDError(f"checkpoint '{path}' does not exist; check the path (shipped weights: python -m dbd.models)")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except PermissionError as err:
        raise DBDError(f"cannot read checkpoint '{path}' ({err.strerror}); check its permissions") from None
    except OSError as err:
        raise DBDError(
            f"cannot read checkpoint '{path}' ({err.strerror or type(err).__name__}); check the file and its disk"
        ) from None
    # safetensors: an 8-byte header length, then the JSON header's "{". Pickles (torch.save) start
    # with a zip signature (PK) or a pickle protocol opcode (0x80).
    looks_like_safetensors = len(head) == 9 and head[8:9] == b"{"
    if not looks_like_safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise DBDError(
            f"checkpoint '{path}' is a pickle (torch.save), which can run code when loaded; "
            "dbd loads only .safetensors checkpoints written by dbd.models.save_checkpoint"
        )


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card of a dbd checkpoint, without loading its tensors."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except PermissionError as err:
        raise DBDError(f"cannot read checkpoint '{path}' ({err.strerror}); check its permissions") from None
    except Exception as err:  # safetensors raises its own error types for every corruption
        reraise_interrupt(err)
        raise DBDError(
            f"checkpoint '{path}' is truncated or not a safetensors file ({err}); re-download or re-save it"
        ) from None
    if CARD_KEY not in metadata:
        raise DBDError(
            f"checkpoint '{path}' has no dbd model card: it was not written by dbd "
            "(save it with dbd.models.save_checkpoint)"
        )
    try:
        card = json.loads(metadata[CARD_KEY])
    except json.JSONDecodeError:
        raise DBDError(f"checkpoint '{path}' has a corrupt model card; re-save it") from None
    if not isinstance(card, dict):
        raise DBDError(f"checkpoint '{path}' has a model card that is not a JSON object; re-save it")
    if card.get("format") != CARD_FORMAT:
        raise DBDError(f"checkpoint '{path}' has card format {card.get('format')!r}, this dbd reads {CARD_FORMAT!r}")
    for key, kind in (("config", dict), ("preprocess", dict), ("arch", str)):
        if key in card and not isinstance(card[key], kind):
            raise DBDError(
                f"checkpoint '{path}' has a model card whose '{key}' is a {type(card[key]).__name__}, "
                f"not a {'JSON object' if kind is dict else 'string'}; re-save it"
            )
    return ModelCard(card, path)


def load_checkpoint(
    path: str | Path, expected_arch: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (as float32); returns (model, card)."""
    path = Path(path)
    card = read_card(path)
    arch = card.get("arch")
    if expected_arch is not None and arch != expected_arch:
        raise DBDError(
            f"checkpoint '{path}' holds a '{arch}' but a '{expected_arch}' is needed; pass a {expected_arch} checkpoint"
        )
    model = create_model(arch, pretrained=False, **card.get("config", {}))
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except PermissionError as err:
        raise DBDError(f"cannot read checkpoint '{path}' ({err.strerror}); check its permissions") from None
    except Exception as err:
        reraise_interrupt(err)
        raise DBDError(f"checkpoint '{path}' is truncated or corrupt ({err}); re-download or re-save it") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DBDError(
                f"checkpoint '{path}' holds non-finite weights (NaN or inf) in '{name}': the training that "
                "wrote it diverged or the file is damaged; use an earlier checkpoint or retrain"
            )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        detail = (
            f"missing {missing[:2]}"
            if missing
            else f"unexpected {unexpected[:2]}"
            if unexpected
            else f"shape mismatch at {wrong_shape[:2]}"
        )
        raise DBDError(
            f"checkpoint '{path}' does not fit the '{arch}' architecture ({detail}); "
            "it was written by another version of the model"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval(), card
