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

Runtime side: `NcnnRunner` (the `ncnn` wheel, CPU) and the metadata reader (metadata.json, standard
library alone). Heavy modules (torch, ncnn) are imported inside the functions that use them: this
module is loaded whenever formats are looked up.
"""

from __future__ import annotations

import collections
import io
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from dbd.core import DBDError
from dbd.runtime.formats import Availability, FileFormat
from dbd.runtime.metadata import read_metadata
from dbd.runtime.runners import ExportedRunner

from .base import ExportJob, Verification, quiet
from .metadata import dumps, float_nchw_metadata, package_versions

INPUT_NAME, OUTPUT_NAME = "in0", "out0"  # pnnx's blob names
PARAM_FILE, BIN_FILE, METADATA_FILE = "model.param", "model.bin", "metadata.json"
PARAM_MAGIC = "7767517"
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
# The first 4 bytes of a weight blob in model.bin: ncnn's storage tag (ModelBinFromDataReader).
_BIN_TAGS = {0x00000000: "float32", 0x01306B47: "float16", 0x000D4B38: "int8"}


# ---- runtime side ----------------------------------------------------------------------------------


def parse_param(text: str) -> list[tuple[str, str, list[str], list[str]]]:
    """(type, name, bottoms, tops) of each layer of an ncnn .param text; ValueError if malformed."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != [PARAM_MAGIC] or len(lines[1]) != 2:
        raise ValueError("not an ncnn param file (magic 7767517 and a layer/blob count line expected)")
    n_layers = int(lines[1][0])
    layers = []
    for fields in lines[2:]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        blobs = fields[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise ValueError(f"layer {name} lists fewer blobs than it declares")
        layers.append((kind, name, blobs[:n_in], blobs[n_in:]))
    if len(layers) != n_layers:
        raise ValueError(f"the param file declares {n_layers} layers but holds {len(layers)}")
    return layers


def graph_io(layers: list[tuple[str, str, list[str], list[str]]]) -> tuple[list[str], list[str]]:
    """The graph's input blobs (Input layers) and output blobs (produced, never consumed)."""
    inputs = [top for kind, _, _, tops in layers if kind == "Input" for top in tops]
    consumed = {blob for _, _, bottoms, _ in layers for blob in bottoms}
    outputs = [top for kind, _, _, tops in layers if kind != "Input" for top in tops if top not in consumed]
    return inputs, outputs


def _read_param(path: Path) -> list[tuple[str, str, list[str], list[str]]]:
    try:
        return parse_param((path / PARAM_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DBDError(f"'{path}' has no {PARAM_FILE}: it is not an ncnn model folder; re-export it") from None
    except (ValueError, IndexError, UnicodeDecodeError) as err:
        raise DBDError(f"'{path}': {PARAM_FILE} is corrupt ({err}); re-export it with dbd-export") from None


def weight_storage(path: Path) -> str:
    """'float32', 'float16' or 'int8': the storage tag of the first weight blob in model.bin."""
    with open(path / BIN_FILE, "rb") as f:
        head = f.read(4)
    if len(head) < 4:
        raise DBDError(f"'{path}': {BIN_FILE} is truncated; re-export it")
    return _BIN_TAGS.get(int.from_bytes(head, "little"), "unknown")


class NcnnRunner(ExportedRunner):
    """ncnn on the CPU; one image per extractor (fixed batch 1). fp16 files run with ncnn's fp16 options."""

    format = "ncnn"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)  # refuses a folder without metadata.json before ncnn loads anything
        if device != "cpu":
            raise DBDError(f"'{path}': ncnn runs on the CPU here (its Vulkan GPU path is for phones); use --device cpu")
        import ncnn

        layers = _read_param(path)
        inputs, outputs = graph_io(layers)
        for key, found in (("input", inputs), ("output", outputs)):
            if found != [self.info[key]["name"]]:
                raise DBDError(
                    f"'{path}': the graph's {key}s are {found} but its metadata says '{self.info[key]['name']}'; "
                    f"re-export it with dbd-export"
                )
        if not (path / BIN_FILE).is_file():
            raise DBDError(f"'{path}' has no {BIN_FILE}; re-export it with dbd-export")
        self.net = ncnn.Net()
        half = self.precision == "fp16"
        opt = self.net.opt
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = half
        opt.use_bf16_storage = opt.use_bf16_packed = False
        opt.use_vulkan_compute = False
        if threads:
            opt.num_threads = int(threads)
        with quiet():  # ncnn reports load errors on stderr: the return codes say enough
            failed = self.net.load_param(str(path / PARAM_FILE)) or self.net.load_model(str(path / BIN_FILE))
        if failed:
            raise DBDError(f"ncnn cannot load '{path}' (model.param/model.bin rejected); re-export it with dbd-export")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.output_shape = tuple(int(v) for v in self.info["output"]["shape"])
        self._lock = threading.Lock()

    def run_one(self, x: np.ndarray) -> np.ndarray:
        import ncnn

        with self._lock:  # one Net: extractors share its workspace allocators
            extractor = self.net.create_extractor()
            extractor.input(self.input_name, ncnn.Mat(np.ascontiguousarray(x[0], dtype=np.float32)))
            ret, out = extractor.extract(self.output_name)
            if ret != 0:
                raise DBDError(f"ncnn failed to run '{self.path}' (extract returned {ret}); re-export it")
            result = np.array(out, dtype=np.float32, copy=True)
        if result.size != int(np.prod(self.output_shape)):
            raise DBDError(
                f"'{self.path}' returned a {list(result.shape)} map but its metadata says {list(self.output_shape)}; "
                f"re-export it with dbd-export"
            )
        return result.reshape(self.output_shape)


# ---- export side -----------------------------------------------------------------------------------


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
        path = Path(path)
        if not (path / PARAM_FILE).is_file():
            raise DBDError(
                f"'{path}' has no {PARAM_FILE}: it is not an ncnn model folder; re-export it with dbd-export"
            )
        try:
            return (path / METADATA_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> NcnnRunner:
        return NcnnRunner(Path(path), threads, device)

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "pnnx", "ncnn")

    def prepare(self, job: ExportJob) -> None:
        self._torchscript(job)

    def _torchscript(self, job: ExportJob) -> bytes:
        """The traced float32 model, serialised (traced once per job; pnnx converts it per precision)."""
        if "ncnn_torchscript" not in job._cache:
            import torch

            with quiet(not job.verbose), torch.no_grad():
                traced = torch.jit.trace(job.model.eval(), job.example_input())
                buffer = io.BytesIO()
                torch.jit.save(traced, buffer)
            job._cache["ncnn_torchscript"] = buffer.getvalue()
        return job._cache["ncnn_torchscript"]

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

    def verify(self, job: ExportJob, precision: str, path: Path) -> Verification:
        from . import parity

        meta = read_metadata(path)
        if meta["file"]["format"] != self.name or meta["file"]["precision"] != precision:
            raise DBDError(
                f"'{path}' says it is a {meta['file']['format']} {meta['file']['precision']} file; re-export"
            )
        foreign = sorted({kind for kind, _, _, _ in _read_param(path) if "." in kind})
        if foreign:  # pnnx leaves ops ncnn has no layer for as pnnx.*/torch.* entries
            raise DBDError(
                f"'{path}' holds ops ncnn cannot run ({', '.join(foreign[:3])}); the conversion is incomplete"
            )
        expected = "float16" if precision == "fp16" else "float32"
        if weight_storage(path) != expected:
            raise DBDError(f"'{path}' should hold {expected} weights but holds {weight_storage(path)}; re-export it")
        figures = parity.measure(job.reference_maps(), NcnnRunner(path).run(job.parity.unit), job.parity.masks)
        return Verification(figures, parity.check(precision, figures, job.budget))

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
