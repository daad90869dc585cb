"""CoreML: fp32, fp16 and int8-weight .mlpackage (ML Program) files for iOS/macOS.

Route (../shared/docs/toolchain.md): coremltools 9 `ct.convert(..., convert_to="mlprogram")` with float16 compute
precision (float32 for fp32); int8 = fp16 program + `linear_quantize_weights` (per-channel
symmetric int8 weights; activations stay fp16: activation quantisation needs to run the model,
which coremltools cannot do on Linux). The network is handed over as a `torch.export` program:
tracing with torch.jit trips coremltools 9 on the size arithmetic of the bilinear upsampling.
Input: NCHW float32, normalised per the spec (like ONNX); output NCHW float32 P(blur).

Prediction is macOS-only. On Linux the file is validated as far as possible without running it:
the package and spec load (`skip_model_load=True`), I/O names, shapes and types match the
metadata, the op set is counted and the weight dtypes are what the precision promises. On macOS
the parity check runs as for the other formats.

This module is the export side (the `CoreMLFormat` plug-in). Running the files (`CoreMLRunner`,
macOS only, which `available()` reports) and reading their metadata are dbd.runtime.engines.coreml,
which the plug-in's `runner` and `read_metadata` hand over to. Heavy modules (torch, coremltools) are
imported inside the functions that use them: this module is loaded whenever formats are looked up.
"""

from __future__ import annotations

import collections
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dbd.core import DBDError, reraise_interrupt
from dbd.runtime.engines.coreml import CoreMLRunner, metadata_entry
from dbd.runtime.engines.shared import package_versions, quiet
from dbd.runtime.formats import Availability, FileFormat
from dbd.runtime.metadata import METADATA_KEY

from .base import ExportJob, check_io
from .metadata import dumps, float_nchw_metadata

if TYPE_CHECKING:
    import coremltools as ct
    import torch

INPUT_NAME, OUTPUT_NAME = "input", "blur_prob"
QUANTIZATION_WORDS = {
    "fp32": "none (float32 compute)",
    "fp16": "float16 weights and compute (ML Program), float32 I/O",
    "int8": "int8 per-channel symmetric weights (linear_quantize_weights), float16 compute, float32 I/O",
}
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}
_CONST_OPS = ("const", "constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense")


def _ct():
    with quiet():
        import coremltools as ct
    return ct


def mil_operations(spec) -> list:
    ops = []

    def walk(block):
        for op in block.operations:
            ops.append(op)
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return ops


def weight_dtypes(spec) -> collections.Counter:
    """Counts of constant tensors by dtype: 'int8' for each quantised (constexpr) weight, else the const's type."""
    from coremltools.proto import MIL_pb2

    names = {v: k.lower() for k, v in MIL_pb2.DataType.items()}
    counts: collections.Counter = collections.Counter()
    for op in mil_operations(spec):
        if op.type == "const":
            value = op.attributes.get("val")
            if value is not None and value.type.WhichOneof("type") == "tensorType" and value.type.tensorType.rank > 0:
                counts[names.get(value.type.tensorType.dataType, "?")] += 1
        elif op.type.startswith("constexpr_"):
            data = op.attributes.get("quantized_data") or op.attributes.get("data") or op.attributes.get("indices")
            dtype = names.get(data.type.tensorType.dataType, "?") if data is not None else "?"
            counts[f"{dtype} ({op.type})"] += 1
    return counts


@dataclass
class Conversions:
    """What a job's CoreML files are converted from, made once per job."""

    program: torch.export.ExportedProgram  # the job's exported program with the core ATen decompositions
    models: dict[str, ct.models.MLModel] = field(default_factory=dict)  # by compute precision: fp32, fp16


class CoreMLFormat(FileFormat):
    name = "coreml"
    suffix = ".mlpackage"
    directory = True  # an .mlpackage is a folder: swapped in whole
    precisions = ("fp32", "fp16", "int8")
    default_precision = "fp16"
    calibrated_precisions = ()  # int8 is weight-only: no calibration images
    runtime_modules = ("coremltools",)
    order = 30
    structure_only_where_unavailable = True  # off macOS nothing can run it: checked without running

    def available(self) -> Availability:
        if platform.system() != "Darwin":
            return Availability(
                False,
                f"CoreML models run only on macOS/iOS (coremltools cannot predict on "
                f"{platform.system()}; dbd-export checks them here without running them)",
            )
        return super().available()

    def read_metadata(self, path: Path) -> str | None:
        return metadata_entry(Path(path))

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> CoreMLRunner:
        return CoreMLRunner(path, threads, device)

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "coremltools")

    def prepare(self, job: ExportJob) -> None:
        self._conversions(job)

    def _conversions(self, job: ExportJob) -> Conversions:
        def decomposed() -> Conversions:
            with quiet(not job.verbose):
                return Conversions(job.exported_program().run_decompositions({}))

        return job.memo(self, decomposed)

    def _convert(self, job: ExportJob, precision: str):
        """An MLModel for `precision`; int8 quantises the weights of the fp16 program (converted once per job)."""
        ct = _ct()
        h, w = job.spec.input_size
        compute = "fp32" if precision == "fp32" else "fp16"
        conversions = self._conversions(job)
        with quiet(not job.verbose):
            if compute not in conversions.models:
                conversions.models[compute] = ct.convert(
                    conversions.program,
                    inputs=[ct.TensorType(name=INPUT_NAME, shape=(1, 3, h, w), dtype=np.float32)],
                    outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                    convert_to="mlprogram",
                    compute_precision=ct.precision.FLOAT32 if compute == "fp32" else ct.precision.FLOAT16,
                    minimum_deployment_target=ct.target.iOS16,
                )
            model = conversions.models[compute]
            if precision == "int8":
                import coremltools.optimize.coreml as cto

                config = cto.OptimizationConfig(
                    global_config=cto.OpLinearQuantizerConfig(
                        mode="linear_symmetric", dtype="int8", granularity="per_channel"
                    )
                )
                model = cto.linear_quantize_weights(model, config=config)
        return model

    def export(self, job: ExportJob, precision: str, dest: Path) -> dict[str, Any]:
        if precision not in self.precisions:
            raise DBDError(f"coreml has no precision '{precision}'")
        model = self._convert(job, precision)
        meta = float_nchw_metadata(
            job,
            "coreml",
            precision,
            QUANTIZATION_WORDS[precision],
            (INPUT_NAME, OUTPUT_NAME),
            self.tools(),
            calibrated=self.needs_calibration(precision),
        )
        model.user_defined_metadata[METADATA_KEY] = dumps(meta)
        model.short_description = f"dbd {job.arch}: per-pixel defocus blur probability (1 = out of focus), {precision}"
        model.author = "dbd-export"
        model.version = meta["dbd_version"]
        model.input_description[INPUT_NAME] = meta["input"]["contract"]
        model.output_description[OUTPUT_NAME] = meta["output"]["contract"]
        with quiet(not job.verbose):
            model.save(str(dest))
        return meta

    def _load_spec(self, path: Path):
        ct = _ct()
        with quiet():
            try:
                return ct.models.MLModel(str(path), skip_model_load=True).get_spec()
            except Exception as err:  # noqa: BLE001 - whatever coremltools raises for a broken package
                reraise_interrupt(err)
                raise DBDError(
                    f"'{path}' does not load as a CoreML package ({type(err).__name__}); re-export it"
                ) from None

    def _io(self, spec) -> tuple[list[dict], list[dict]]:
        rows = []
        for features in (spec.description.input, spec.description.output):
            rows.append(
                [
                    {
                        "name": f.name,
                        "shape": list(f.type.multiArrayType.shape),
                        "dtype": _ARRAY_DTYPES.get(f.type.multiArrayType.dataType, str(f.type.multiArrayType.dataType)),
                        "quantization": None,
                    }
                    for f in features
                ]
            )
        return rows[0], rows[1]

    def check_structure(self, path: Path, meta: dict[str, Any]) -> list[str]:
        precision = meta["file"]["precision"]
        spec = self._load_spec(path)
        if not spec.HasField("mlProgram"):
            raise DBDError(f"'{path}' is not an ML Program; re-export it with dbd-export")
        check_io(path, meta, *self._io(spec))
        dtypes = weight_dtypes(spec)
        quantized = sum(v for k, v in dtypes.items() if k.startswith("int8"))
        expected = {"fp32": ("float32", "float16"), "fp16": ("float16", "float32"), "int8": ("int8", None)}[precision]
        if precision == "int8" and not quantized:
            raise DBDError(f"'{path}' should hold int8 weights but has none ({dict(dtypes)}); re-export it")
        if precision != "int8" and (dtypes.get(expected[1], 0) > dtypes.get(expected[0], 0) or quantized):
            raise DBDError(f"'{path}' should hold {expected[0]} weights but has {dict(dtypes)}; re-export it")
        if self.available():
            return []  # dbd-export runs it for the parity check, as the other formats
        return [
            f"CoreML prediction is macOS-only: validated on {platform.system()} without "
            "running it (package and spec load, I/O names/shapes/types match the "
            f"metadata, {precision} weights as promised); parity not measured here"
        ]

    def describe(self, path: Path) -> dict[str, Any]:
        spec = self._load_spec(path)
        ops = collections.Counter(op.type for op in mil_operations(spec) if op.type not in _CONST_OPS)
        inputs, outputs = self._io(spec)
        return {
            "ops": dict(ops.most_common()),
            "weight_dtypes": dict(weight_dtypes(spec)),
            "inputs": inputs,
            "outputs": outputs,
            "spec_version": spec.specificationVersion,
            "can_predict_here": bool(self.available()),
        }


FORMAT = CoreMLFormat()  # the object the dbd.formats entry point names
