"""Running .ncnn model folders (model.param + model.bin + metadata.json): `NcnnRunner` (the `ncnn`
wheel, CPU; fp16 files with ncnn's fp16 options), the reader of the "dbd" metadata (`metadata_entry`:
metadata.json, with the standard library alone), the .param graph reader (`parse_param`, `graph_io`)
and the weight storage tag of model.bin (`weight_storage`). The wheel has no per-layer profiler
(`profile_ncnn` says so).

ncnn is imported inside the functions that use it: this module is loaded whenever formats are looked
up (dbd.runtime.engines).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from dbd.core import DBDError
from dbd.runtime.formats import ProfiledRun, ProfilingUnavailable
from dbd.runtime.runners import ExportedRunner

from .shared import quiet

PARAM_FILE, BIN_FILE, METADATA_FILE = "model.param", "model.bin", "metadata.json"
PARAM_MAGIC = "7767517"
# The first 4 bytes of a weight blob in model.bin: ncnn's storage tag (ModelBinFromDataReader).
_BIN_TAGS = {0x00000000: "float32", 0x01306B47: "float16", 0x000D4B38: "int8"}


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


def metadata_entry(path: Path) -> str | None:
    """The "dbd" metadata document of an ncnn model folder: its metadata.json (None when absent)."""
    path = Path(path)
    if not (path / PARAM_FILE).is_file():
        raise DBDError(f"'{path}' has no {PARAM_FILE}: it is not an ncnn model folder; re-export it with dbd-export")
    try:
        return (path / METADATA_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def profile_ncnn(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
    """No per-operator profile: the wheel's ncnn is built without its per-layer timer."""
    raise ProfilingUnavailable(
        "the ncnn Python wheel has no per-layer timer (ncnn's is the compile-time NCNN_BENCHMARK option, "
        "off in the wheel); profile ncnn with a C++ build configured with -DNCNN_BENCHMARK=ON"
    )
