"""ncnn: fp32 and fp16 models for Android/iOS apps that ship Tencent's ncnn instead of LiteRT.

An ncnn model is a `.param` (the graph, text) and a `.bin` (the weights) pair, so a dbd ncnn export
is a folder, like an .mlpackage (`directory = True`):

    NAME.ncnn/model.param   the graph (pnnx's blob names: input `in0`, output `out0`)
    NAME.ncnn/model.bin     the weights
    NAME.ncnn/metadata.json the "dbd" metadata document (the one every dbd export embeds)

ncnn has no place for metadata inside its files, hence metadata.json; the runner requires it (a folder
without it is refused, as a file without metadata is in the other formats).

Route: the float32 student traced with `torch.jit.trace`, converted by pnnx (the `pnnx` wheel's
command-line converter; no custom ops are needed). Input: NCHW float32 normalised per the spec
(on a phone: `ncnn::Mat::from_pixels_resize` + `substract_mean_normalize(mean * 255, 1 / (std * 255))`);
output: float32 P(blur), one channel.

Precisions:

* fp32: float32 weights (pnnx `fp16=0`), run with ncnn's fp16/bf16 storage and arithmetic OFF
  (ncnn turns fp16 storage on by default; dbd switches it off so fp32 means fp32);
* fp16: float16 weights in model.bin (pnnx `fp16=1`, half the size), run with ncnn's
  `use_fp16_storage`, `use_fp16_packed` and `use_fp16_arithmetic` ON (ncnn's phone defaults; a
  CPU without fp16 support computes in float32 from the fp16 weights);
* int8: not offered. ncnn quantises with its `ncnn2table` (calibration) and `ncnn2int8`
  command-line tools, which neither the ncnn nor the pnnx wheel ships.

This module is the export side (the `NcnnFormat` plug-in). Running the folders (`NcnnRunner`), reading
their metadata and .param graph are dbd.runtime.engines.ncnn, which the plug-in's `runner`,
`read_metadata` and `profile` hand over to. Heavy modules (torch, pnnx, ncnn) are imported inside the
functions that use them: this module is loaded whenever formats are looked up.
"""

from __future__ import annotations

import collections
import io
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dbd.core import DBDError
from dbd.runtime.engines.ncnn import (
    BIN_FILE,
    METADATA_FILE,
    PARAM_FILE,
    NcnnRunner,
    _read_param,
    graph_io,
    metadata_entry,
    profile_ncnn,
    weight_storage,
)
from dbd.runtime.engines.shared import package_versions, quiet
from dbd.runtime.formats import Availability, FileFormat, ProfiledRun

from .base import ExportJob
from .metadata import dumps, float_nchw_metadata

INPUT_NAME, OUTPUT_NAME = "in0", "out0"  # pnnx's blob names
INSTALL_HINT = "pip install -e '.[ncnn]'"
QUANTIZATION_WORDS = {
    "fp32": "none (float32 weights; ncnn fp16/bf16 storage and arithmetic off)",
    "fp16": "float16 weights in model.bin; ncnn use_fp16_storage/use_fp16_packed/use_fp16_arithmetic on at run "
    "time (float32 arithmetic where the CPU lacks fp16); float32 input/output",
}
INT8_NOTE = (
    "int8 is not offered: ncnn quantises with its ncnn2table/ncnn2int8 command-line tools, "
    "which the ncnn and pnnx wheels do not ship"
)


class NcnnFormat(FileFormat):
    name = "ncnn"
    suffix = ".ncnn"
    directory = True  # model.param + model.bin + metadata.json, swapped in whole
    precisions = ("fp32", "fp16")
    default_precision = "fp16"  # what ncnn runs on phones by default
    calibrated_precisions = ()
    runtime_modules = ("ncnn",)
    export_modules = ("pnnx", "ncnn")  # the optional extra: --format all skips the format without it
    order = 40

    def available(self) -> Availability:
        if not _importable("ncnn"):
            return Availability(
                False, f"running .ncnn models needs the Python package ncnn, which is not installed ({INSTALL_HINT})"
            )
        return Availability(True)

    def read_metadata(self, path: Path) -> str | None:
        return metadata_entry(Path(path))

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> NcnnRunner:
        return NcnnRunner(Path(path), threads, device)

    def profile(self, path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
        return profile_ncnn(path, x, threads, runs, warmup)

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "pnnx", "ncnn")

    def prepare(self, job: ExportJob) -> None:
        self._torchscript(job)

    def _torchscript(self, job: ExportJob) -> bytes:
        """The traced float32 model, serialised (traced once per job; pnnx converts it per precision)."""
        return job.memo(self, lambda: self._trace(job))

    def _trace(self, job: ExportJob) -> bytes:
        import torch

        with quiet(not job.verbose), torch.no_grad():
            traced = torch.jit.trace(job.model.eval(), job.example_input())
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
        return buffer.getvalue()

    def _pnnx(self, job: ExportJob, precision: str, dest: Path) -> None:
        """pnnx: TorchScript -> model.param + model.bin in `dest` (fp16 weights for fp16)."""
        try:
            import pnnx
        except ImportError:
            raise DBDError(f"exporting ncnn needs the Python package pnnx, which is not installed ({INSTALL_HINT})")
        h, w = job.spec.input_size
        dest = Path(dest).resolve()  # pnnx runs in its own folder: a relative --out would land there
        with tempfile.TemporaryDirectory(prefix="dbd-pnnx-") as tmp:
            model = Path(tmp) / "model.pt"
            model.write_bytes(self._torchscript(job))
            command = [
                pnnx.EXEC_PATH,
                str(model),
                f"inputshape=[1,3,{h},{w}]f32",
                "device=cpu",
                f"fp16={1 if precision == 'fp16' else 0}",
                f"ncnnparam={dest / PARAM_FILE}",
                f"ncnnbin={dest / BIN_FILE}",
            ]
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not (dest / PARAM_FILE).is_file() or not (dest / BIN_FILE).is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DBDError(f"pnnx could not convert the model (exit {done.returncode}: {tail[0][:160]})")
        (dest / "model_ncnn.py").unlink(missing_ok=True)  # pnnx's example script, not part of the model

    def export(self, job: ExportJob, precision: str, dest: Path) -> dict[str, Any]:
        if precision not in self.precisions:
            raise DBDError(f"ncnn has no precision '{precision}' ({INT8_NOTE})")
        dest = Path(dest)
        dest.mkdir(parents=True)
        self._pnnx(job, precision, dest)
        meta = float_nchw_metadata(
            job,
            self.name,
            precision,
            QUANTIZATION_WORDS[precision],
            (INPUT_NAME, OUTPUT_NAME),
            self.tools(),
            calibrated=self.needs_calibration(precision),
        )
        (dest / METADATA_FILE).write_text(dumps(meta), encoding="utf-8")
        return meta

    def check_structure(self, path: Path, meta: dict[str, Any]) -> None:
        foreign = sorted({kind for kind, _, _, _ in _read_param(path) if "." in kind})
        if foreign:  # pnnx leaves ops ncnn has no layer for as pnnx.*/torch.* entries
            raise DBDError(
                f"'{path}' holds ops ncnn cannot run ({', '.join(foreign[:3])}); the conversion is incomplete"
            )
        expected = "float16" if meta["file"]["precision"] == "fp16" else "float32"
        if weight_storage(path) != expected:
            raise DBDError(f"'{path}' should hold {expected} weights but holds {weight_storage(path)}; re-export it")

    def describe(self, path: Path) -> dict[str, Any]:
        path = Path(path)
        layers = _read_param(path)
        inputs, outputs = graph_io(layers)
        ops = collections.Counter(kind for kind, _, _, _ in layers if kind != "Input")
        return {
            "ops": dict(ops.most_common()),
            "weight_storage": weight_storage(path),
            "inputs": inputs,
            "outputs": outputs,
            "files": {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()},
            "int8": INT8_NOTE,
        }


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


FORMAT = NcnnFormat()  # the object the dbd.formats entry point names
