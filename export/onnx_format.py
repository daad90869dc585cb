"""ONNX: fp32, fp16 and int8 (QDQ) files, run with onnxruntime.

Route (../shared/docs/toolchain.md): `torch.onnx.export(dynamo=True, opset_version=18)` (the legacy TorchScript
exporter as fallback, or on request) -> onnxsim -> `onnx.checker.check_model(full_check=True)`.
fp16: onnxruntime's float16 converter with float32 I/O (Casts at the edges). int8: onnxruntime
`quant_pre_process` + `quantize_static` (QDQ, percentile calibration on the real calibration images,
the modules in `job.int8_float` left unquantised (mixed_precision.py),
per-channel weights). Input: NCHW float32, normalised per the spec.

int8 weights are UINT8, not int8 (U8U8 rather than U8S8): onnxruntime's U8S8 integer kernels
saturate their int16 intermediate sums on x86 CPUs without VNNI (AVX2, AVX-512F; vpmaddubsw),
which wrecks the maps there (measured: docs/export.md, "Formats"). U8U8 computes the same
everywhere, so the parity figures measured on one CPU hold on every CPU.

Activation ranges come from the 99.999th percentile of the calibration values, not their min/max:
a few extreme logits of students with steep maps (the DOF-edge term) stretched the MinMax range of
the head until the ONNX int8 file failed its parity budget (docs/export.md, "Formats").

This module is the export side (the `OnnxFormat` plug-in). Running the files (`OnnxRunner`), reading
their metadata and onnxruntime's profiler are dbd.runtime.engines.onnx, which the plug-in's `runner`,
`read_metadata` and `profile` hand over to. Heavy modules (torch, onnx, onnxruntime, the exporters)
are imported inside the functions that use them: this module is loaded whenever formats are looked up.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dbd.core import DBDError, reraise_interrupt
from dbd.runtime.engines.onnx import OnnxRunner, metadata_entry, profile_onnx
from dbd.runtime.engines.shared import package_versions, quiet
from dbd.runtime.formats import FileFormat, FormatOption, ProfiledRun
from dbd.runtime.metadata import METADATA_KEY

from .base import ExportJob, check_io
from .metadata import dumps, float_nchw_metadata

if TYPE_CHECKING:
    import onnx

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "blur_prob"
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}
QUANTIZATION_WORDS = {
    "fp32": "none (float32)",
    "fp16": "float16 weights and activations, float32 input/output (Cast at the edges)",
    "int8": "static QDQ: uint8 per-channel weights, uint8 activations (99.999th-percentile calibration); float32 I/O",
}


CALIBRATION_PERCENTILE = 99.999  # int8 activation ranges: this percentile of the calibration values
CALIB_CHUNK = 64  # calibration images whose activations onnxruntime holds at once


class Fp32Graph(NamedTuple):
    """What every precision starts from (converted once per job): the simplified, checked fp32 graph."""

    model: onnx.ModelProto
    exporter: str  # the torch.onnx exporter that made it


def _export_torch(job: ExportJob, path: Path) -> str:
    """torch -> ONNX at `path`; returns the exporter used."""
    import torch

    model = job.model.eval()
    h, w = job.spec.input_size
    x = torch.zeros(1, 3, h, w)
    kwargs = dict(opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    note = ""
    if FORMAT.option(job, "onnx_exporter") == "dynamo":
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, **kwargs)
            program.save(str(path))
            return "torch.onnx dynamo"
        except Exception as err:  # noqa: BLE001 - any failure of the new exporter: fall back to the legacy one
            reraise_interrupt(err)  # a Ctrl-C it wrapped in its own error stops the export, no fallback
            note = f" (dynamo exporter failed: {type(err).__name__})"
    torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
    return "torch.onnx legacy (TorchScript)" + note


def _toposort(graph) -> None:
    """Order nodes so every input is produced before use (the float16 converter appends its Casts)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RuntimeError(f"ONNX graph has a cycle or a dangling input at node {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


class OnnxFormat(FileFormat):
    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "fp16", "int8")
    default_precision = "fp32"
    calibrated_precisions = ("int8",)  # static QDQ reads the calibration images
    runtime_modules = ("onnxruntime",)
    order = 10
    options = (
        FormatOption(
            "onnx-exporter",
            "torch.onnx exporter (dynamo falls back to legacy if it fails)",
            "dynamo",
            ("dynamo", "legacy"),
        ),
    )

    def read_metadata(self, path: Path) -> str | None:
        return metadata_entry(Path(path).read_bytes())

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> OnnxRunner:
        return OnnxRunner(path, threads, device)

    def profile(self, path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
        return profile_onnx(path, x, threads, runs, warmup)

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "onnx", "onnxsim", "onnxruntime", "onnxscript")

    def prepare(self, job: ExportJob) -> None:
        self._fp32(job)

    def _fp32(self, job: ExportJob) -> Fp32Graph:
        return job.memo(self, lambda: self._convert_fp32(job))

    def _convert_fp32(self, job: ExportJob) -> Fp32Graph:
        import onnx
        import onnxsim

        with tempfile.TemporaryDirectory(prefix="dbd-onnx-") as tmp, quiet(not job.verbose):
            raw = Path(tmp) / "raw.onnx"
            exporter = _export_torch(job, raw)
            model = onnx.load(str(raw))
            simplified, ok = onnxsim.simplify(model)
            if ok:
                model = simplified
            onnx.checker.check_model(model, full_check=True)
        return Fp32Graph(model, exporter)

    def export(self, job: ExportJob, precision: str, dest: Path) -> dict[str, Any]:
        import onnx

        base, exporter = self._fp32(job)
        if precision == "fp32":
            model = onnx.ModelProto()
            model.CopyFrom(base)
        elif precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            with quiet(not job.verbose):
                model = convert_float_to_float16(base, keep_io_types=True)
            _toposort(model.graph)
        elif precision == "int8":
            model = self._quantize(job, base)
        else:
            raise DBDError(f"onnx has no precision '{precision}'")
        tools = {**self.tools(), "exporter": exporter}
        meta = float_nchw_metadata(
            job,
            "onnx",
            precision,
            QUANTIZATION_WORDS[precision],
            (INPUT_NAME, OUTPUT_NAME),
            tools,
            calibrated=self.needs_calibration(precision),
        )
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, dumps(meta)
        model.producer_name, model.producer_version = "dbd-export", meta["dbd_version"]
        with quiet(not job.verbose):
            onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(dest))
        return meta

    def _quantize(self, job: ExportJob, base):
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from .calibration import normalised_nchw

        batches = [normalised_nchw(job.calibration.unit[i : i + 1], job.spec) for i in range(len(job.calibration))]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(batches)

            def __len__(self):
                return len(batches)

            def set_range(self, start_index: int, end_index: int):  # onnxruntime's strided calibration
                self._it = iter(batches[start_index:end_index])

            def get_next(self):
                x = next(self._it, None)
                return None if x is None else {INPUT_NAME: x}

        # onnxruntime keeps every intermediate tensor of every calibration image until it builds
        # the histograms: above CALIB_CHUNK images, calibrate in chunks (the histograms merge), so
        # memory stays that of CALIB_CHUNK images (up to CALIB_CHUNK: one chunk, as before)
        chunk = next(c for c in range(min(CALIB_CHUNK, len(batches)), 0, -1) if len(batches) % c == 0)
        strided = {"CalibStridedMinMax": chunk} if len(batches) > CALIB_CHUNK else {}

        with tempfile.TemporaryDirectory(prefix="dbd-onnx-int8-") as tmp, quiet(not job.verbose):
            fp32, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
            onnx.save(base, str(fp32))
            quant_pre_process(str(fp32), str(pre))
            exclude = self._float_nodes(job, onnx.load(str(pre)))
            quantize_static(
                str(pre),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QUInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE, **strided},
                nodes_to_exclude=exclude,
            )
            return onnx.load(str(out))

    def _float_nodes(self, job: ExportJob, model) -> list[str]:
        """ONNX nodes of the modules kept in float: their Conv nodes (paired with the PyTorch Conv2d
        calls in execution order, shapes checked) and the Relu/Clip right after each."""
        if not job.int8_float:
            return []
        from onnx import numpy_helper

        from .mixed_precision import conv_call_order, float_convs

        calls = conv_call_order(job.model, job.example_input())
        weights = {t.name: tuple(numpy_helper.to_array(t).shape) for t in model.graph.initializer}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        shapes = [weights.get(n.input[1]) for n in convs]
        if shapes != [shape for _, shape in calls]:
            raise DBDError(
                f"--int8-float: the ONNX graph's {len(convs)} Conv nodes do not pair up with the model's "
                f"{len(calls)} Conv2d calls, so the float modules cannot be located; pass --int8-float none"
            )
        keep = {convs[i].output[0]: convs[i].name for i in float_convs(calls, job.int8_float)}
        names = list(keep.values())
        names += [n.name for n in model.graph.node if n.op_type in ("Relu", "Clip") and n.input[0] in keep]
        return names

    def _session(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def check_structure(self, path: Path, meta: dict[str, Any]) -> None:
        session = self._session(path)
        io = [
            [
                {"name": t.name, "shape": list(t.shape), "dtype": _ORT_DTYPES.get(t.type, t.type), "quantization": None}
                for t in tensors
            ]
            for tensors in (session.get_inputs(), session.get_outputs())
        ]
        check_io(path, meta, *io)

    def describe(self, path: Path) -> dict[str, Any]:
        import onnx

        model = onnx.load(str(path))
        ops = collections.Counter(node.op_type for node in model.graph.node)
        initializers = collections.Counter(
            onnx.TensorProto.DataType.Name(t.data_type).lower() for t in model.graph.initializer
        )
        return {
            "ops": dict(ops.most_common()),
            "weight_dtypes": dict(initializers),
            "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": [i.name for i in model.graph.input],
            "outputs": [o.name for o in model.graph.output],
        }


FORMAT = OnnxFormat()  # the object the dbd.formats entry point names
