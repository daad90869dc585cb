"""Running .onnx files: `OnnxRunner` (onnxruntime on the CPU, CUDA with device="cuda"), the reader of
the "dbd" entry of `ModelProto.metadata_props` (`metadata_entry`, with the standard library alone:
protowire) and onnxruntime's own per-node profiler (`profile_onnx`).

onnxruntime is imported inside the functions that use it: this module is loaded whenever formats are
looked up (dbd.runtime.engines).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dbd.core import DBDError, reraise_interrupt
from dbd.runtime import protowire
from dbd.runtime.formats import ProfiledRun
from dbd.runtime.metadata import METADATA_KEY, check_graph_io
from dbd.runtime.runners import ExportedRunner

ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


class OnnxRunner(ExportedRunner):
    """onnxruntime on the CPU (or CUDA); one image per run (fixed batch 1)."""

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
            reraise_interrupt(err)  # ...and may wrap a Ctrl-C received while it loads
            raise DBDError(
                f"onnxruntime cannot load '{path}' ({str(err).splitlines()[0][:120]}); re-export it"
            ) from None
        self.input_name = self.info["input"]["name"]
        self.check_input_shape(self.session.get_inputs()[0].shape)
        # what the metadata says to feed and read must be what the graph takes and gives
        for key, arg in (("input", self.session.get_inputs()[0]), ("output", self.session.get_outputs()[0])):
            graph = ONNX_TYPES.get(arg.type)
            if graph is None:
                raise DBDError(f"'{path}': the graph's {key} is a {arg.type}, which dbd does not feed; re-export it")
            check_graph_io(self.info, path, key, graph)

    def run_one(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def profile_onnx(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
    """onnxruntime's own profiler (SessionOptions.enable_profiling): the kernel time of every node of the
    graph as the session optimised it (fused nodes under their fused names and op types, with the shape
    of their first output) in the profiled runs, after the warm-up runs, and the whole of each run (its
    `model_run` event)."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][warmup:]
    nodes: dict[tuple[str, str], list[float]] = {}  # in the order of the first profiled run
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= model_runs[0]["ts"]:
            shape = "x".join(str(v) for out in e["args"].get("output_type_shape", [])[:1] for v in [*out.values()][0])
            name = e["name"].removesuffix("_kernel_time") + (f" -> {shape}" if shape else "")
            nodes.setdefault((name, e["args"]["op_name"]), []).append(e["dur"] / 1000)
    return ProfiledRun(
        profiler=f"onnxruntime {ort.__version__} profiler (SessionOptions.enable_profiling, CPU execution provider)",
        runs=runs,
        threads=threads,
        nodes=[(name, op, ms) for (name, op), ms in nodes.items()],
        total_ms=[e["dur"] / 1000 for e in model_runs],
    )


def metadata_entry(data: bytes) -> str | None:
    """The "dbd" entry of a serialised ModelProto's metadata_props (None when absent)."""
    # ModelProto: ir_version = 1 (varint, always first in files onnx writes), graph = 7, metadata_props = 14.
    seen_graph = False
    found = None
    for number, wire, field in protowire.fields(data):
        if number == 7 and wire == 2:
            seen_graph = True
        elif number == 14 and wire == 2:
            key, value = protowire.string_map_entry(field)
            if key == METADATA_KEY:
                found = value
    if not seen_graph:
        raise ValueError("no graph")
    return found
