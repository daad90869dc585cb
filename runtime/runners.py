"""Runners behind one interface: PyTorch checkpoints here, and the base class of the runners that
format plug-ins (dbd.runtime.formats) provide for their exported files (dbd's own: dbd.runtime.engines).

A runner takes images already resized to the model's input size, as (N, H, W, 3) float RGB in
[0, 1], and returns (N, H, W) float32 P(blur). Everything format-specific — normalisation,
layout, int8/uint8 quantisation — comes from the file's own metadata (`read_metadata`) or the
checkpoint's model card, so a caller cannot feed a file wrongly.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np

from dbd.core import DBDError

from .formats import CHECKPOINT_SUFFIX, format_of
from .metadata import decode_output, encode_input, read_metadata
from .runner_base import Runner
from .spec import PreprocessSpec


class TorchRunner(Runner):
    format, precision = "torch", "fp32"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        import torch

        from dbd.models.checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise DBDError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        model, card = load_checkpoint(path, map_location="cpu")
        if not isinstance(card.get("preprocess"), dict):  # never a bare KeyError on a foreign card
            raise DBDError(
                f"checkpoint '{path}' has no 'preprocess' entry in its model card, so its input size and "
                f"normalisation are unknown; re-save it with save_checkpoint(path, model, "
                f"{{'preprocess': PreprocessSpec.for_model(model).to_dict()}})"
            )
        self.model, self.device, self.torch = model.to(device).eval(), torch.device(device), torch
        super().__init__(path, PreprocessSpec.from_card(card, path), card)

    @classmethod
    def from_model(cls, model, spec: PreprocessSpec, device="cpu") -> "TorchRunner":
        """A runner over a live network (training's validation); the caller owns its train/eval mode."""
        import torch

        runner = cls.__new__(cls)
        Runner.__init__(
            runner, None, spec, {"arch": getattr(model, "arch", None), "config": getattr(model, "config", {})}
        )
        runner.model, runner.device, runner.torch = model, torch.device(device), torch
        return runner

    def encode(self, unit_rgb: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) RGB in [0, 1] -> the network's input, normalised (N, 3, H, W) float32."""
        return self.spec.to_layout(self.spec.normalize(unit_rgb), "NCHW")

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            prob = self.model(torch.from_numpy(self.encode(unit_rgb)).to(self.device))
        return prob[:, 0].float().cpu().numpy()


class ExportedRunner(Runner):
    """The base of every exported file's runner: the spec, precision and I/O contract come from the
    file's "dbd" metadata, and `run` applies that contract around `run_one`.

    A subclass sets `format` (its format's name), loads the file in `__init__` after calling
    `super().__init__(path)` (so a file without valid metadata is refused before any engine loads
    it), and implements `run_one`.
    """

    def __init__(self, path: Path):
        meta = read_metadata(path)
        self.precision = meta["file"]["precision"]
        super().__init__(path, PreprocessSpec.from_dict(meta["preprocess"]), meta)

    def check_input_shape(self, actual: list) -> None:
        """The file's real input tensor must be what its metadata promises (else it was tampered with)."""
        declared = [int(v) for v in self.info["input"]["shape"]]
        if [int(v) if isinstance(v, int) else -1 for v in actual] != declared:
            raise DBDError(
                f"'{self.path}' declares input shape {declared} in its metadata but its graph takes "
                f"{list(actual)}; re-export it with dbd-export"
            )

    @abstractmethod
    def run_one(self, x: np.ndarray) -> np.ndarray:
        """One encoded input (batch 1, the file's layout and dtype) -> the file's raw output."""

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        # Exports have a static batch of 1 (what phones run): one image per call.
        x = encode_input(self.info, unit_rgb)
        return decode_output(self.info, np.concatenate([self.run_one(one[None]) for one in x]))


def open_runner(path: str | Path, threads: int | None = None, device: str = "cpu") -> Runner:
    """The runner for a .safetensors checkpoint or an exported file of any registered format."""
    path = Path(path)
    if path.suffix == CHECKPOINT_SUFFIX:
        return TorchRunner(path, threads, device)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin"):
        raise DBDError(
            f"'{path}' is a pickle checkpoint, which dbd does not load (it can run code); "
            "pass a .safetensors checkpoint written by dbd-train or an exported model"
        )
    fmt = format_of(path)
    availability = fmt.available()
    if not availability:
        raise DBDError(f"'{path}' cannot run on this machine: {availability.reason}")
    return fmt.runner(path, threads, device)
