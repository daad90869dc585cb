"""One runner per model format behind one interface: PyTorch checkpoints, ONNX (onnxruntime),
TFLite (LiteRT with XNNPACK) and CoreML (macOS only).

A runner takes images already resized to the model's input size, as (N, H, W, 3) float RGB in
[0, 1], and returns (N, H, W) float32 P(blur). Everything format-specific — normalisation,
layout, int8/uint8 quantisation — comes from the file's own metadata (`read_metadata`) or the
checkpoint's model card, so a caller cannot feed a file wrongly.
"""
from __future__ import annotations

import contextlib
import os
import platform
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from dbd.core import DBDError, reraise_interrupt

from .metadata import decode_output, encode_input, file_format, read_metadata
from .spec import PreprocessSpec


class Runner(ABC):
    format: str
    precision: str

    def __init__(self, path: Path | None, spec: PreprocessSpec, info: dict[str, Any]):
        self.path, self.spec, self.info = path, spec, info

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.input_size

    @abstractmethod
    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float RGB in [0, 1] at the model size -> (N, H, W) float32 P(blur)."""

    def predict_photos(self, photos: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """RGB uint8 photos of any size -> (maps at the model's input size (N, H, W), the same maps
        at each photo's own size): the contract's resize, the model, the resize back."""
        spec = self.spec
        unit = np.stack([spec.resize_image(p.astype(np.float32) / np.float32(spec.pixel_scale)) for p in photos])
        maps = self.run(unit)
        return maps, [spec.postprocess(m, p.shape[:2]) for m, p in zip(maps, photos)]


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
        if not isinstance(card.get("preprocess"), dict):   # never a bare KeyError on a foreign card
            raise DBDError(f"checkpoint '{path}' has no 'preprocess' entry in its model card, so its input size and "
                           f"normalisation are unknown; re-save it with save_checkpoint(path, model, "
                           f"{{'preprocess': PreprocessSpec.for_model(model).to_dict()}})")
        self.model, self.device, self.torch = model.to(device).eval(), torch.device(device), torch
        try:
            spec = PreprocessSpec.from_dict(card["preprocess"])
        except DBDError as err:
            raise DBDError(f"checkpoint '{path}': {err}") from None
        super().__init__(path, spec, card)

    @classmethod
    def from_model(cls, model, spec: PreprocessSpec, device="cpu") -> "TorchRunner":
        """A runner over a live network (training's validation); the caller owns its train/eval mode."""
        import torch

        runner = cls.__new__(cls)
        Runner.__init__(runner, None, spec, {"arch": getattr(model, "arch", None), "config": getattr(model, "config", {})})
        runner.model, runner.device, runner.torch = model, torch.device(device), torch
        return runner

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = (np.asarray(unit_rgb, np.float32) - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32)
        with torch.inference_mode():
            prob = self.model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self.device))
        return prob[:, 0].float().cpu().numpy()


class _ExportedRunner(Runner):
    def __init__(self, path: Path):
        meta = read_metadata(path)
        self.precision = meta["file"]["precision"]
        super().__init__(path, PreprocessSpec.from_dict(meta["preprocess"]), meta)

    def check_input_shape(self, actual: list) -> None:
        """The file's real input tensor must be what its metadata promises (else it was tampered with)."""
        declared = [int(v) for v in self.info["input"]["shape"]]
        if [int(v) if isinstance(v, int) else -1 for v in actual] != declared:
            raise DBDError(f"'{self.path}' declares input shape {declared} in its metadata but its graph takes "
                           f"{list(actual)}; re-export it with dbd-export")


class OnnxRunner(_ExportedRunner):
    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for corrupt files
            reraise_interrupt(err)   # ...and may wrap a Ctrl-C received while it loads
            raise DBDError(f"onnxruntime cannot load '{path}' ({str(err).splitlines()[0][:120]}); re-export it") from None
        self.input_name = self.info["input"]["name"]
        self.check_input_shape(self.session.get_inputs()[0].shape)

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        # Exports have a static batch of 1 (what phones run): one image per call.
        x = encode_input(self.info, unit_rgb)
        raw = np.concatenate([self.session.run(None, {self.input_name: one[None]})[0] for one in x])
        return decode_output(self.info, raw)


class TFLiteRunner(_ExportedRunner):
    """LiteRT interpreter (XNNPACK delegate by default); one image per invoke (fixed batch 1)."""

    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        if device != "cpu":
            raise DBDError(f"'{path}': TFLite runs on the CPU here (GPU delegates are for phones); use --device cpu")
        with _quiet_stderr():
            from ai_edge_litert.interpreter import Interpreter

            try:
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as err:
                raise DBDError(f"LiteRT cannot load '{path}' ({str(err).splitlines()[0][:120]}); re-export it") from None
        details = self.interpreter.get_input_details()[0]
        self.check_input_shape([int(v) for v in details["shape"]])
        self.input_index = details["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        x = encode_input(self.info, unit_rgb)
        outputs = []
        for one in x:
            self.interpreter.set_tensor(self.input_index, one[None])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self.output_index).copy())
        return decode_output(self.info, np.concatenate(outputs))


class CoreMLRunner(_ExportedRunner):
    format = "coreml"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        if platform.system() != "Darwin":
            raise DBDError(f"'{path}': CoreML models run only on macOS/iOS (coremltools cannot predict on "
                           f"{platform.system()}); use the .onnx or .tflite export here")
        import coremltools as ct

        self.model = ct.models.MLModel(str(path))
        self.input_name, self.output_name = self.info["input"]["name"], self.info["output"]["name"]

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:  # pragma: no cover - macOS only
        x = encode_input(self.info, unit_rgb)
        raw = np.concatenate([self.model.predict({self.input_name: one[None]})[self.output_name] for one in x])
        return decode_output(self.info, raw)


RUNNERS = {"onnx": OnnxRunner, "tflite": TFLiteRunner, "coreml": CoreMLRunner}


def open_runner(path: str | Path, threads: int | None = None, device: str = "cpu") -> Runner:
    """The runner for a .safetensors checkpoint or an exported .onnx / .tflite / .mlpackage file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return TorchRunner(path, threads, device)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin"):
        raise DBDError(f"'{path}' is a pickle checkpoint, which dbd does not load (it can run code); "
                       "pass a .safetensors checkpoint written by dbd-train or an exported model")
    return RUNNERS[file_format(path)](path, threads, device)


@contextlib.contextmanager
def _quiet_stderr():
    """LiteRT prints an INFO line about XNNPACK on stderr from C++; keep the CLI output clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
