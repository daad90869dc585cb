"""TFLite: fp32, fp16 and full-integer int8 files for the phone, run with ai-edge-litert.

Every TFLite file is camera-native: the normalisation is folded into the graph (`FoldedPixels`),
so the app feeds the RGB pixels of the resized photo, NHWC, and reads P(blur) back:

* fp32 / fp16: float32 pixels 0..255 in, float32 P(blur) out (fp16 = float16 weights);
* int8: int8 = pixel - 128 in (scale 1, zero-point -128: forced, then checked in the file),
  int8 out with the LOGISTIC's fixed scale 1/256, zero-point -128 (P = (q + 128) / 256).

Route (../shared/docs/toolchain.md): litert-torch `convert` of the NHWC wrapper (its layout pass leaves no
Transpose), then ai-edge-quantizer on that flatbuffer: weight-only FLOAT_CASTING for fp16, the
`static_wi8_ai8` recipe calibrated on the real calibration images for int8 (the modules in
`job.int8_float` stay float between a DEQUANTIZE and a QUANTIZE: mixed_precision.py). The "dbd" metadata
goes into the flatbuffer's `metadata` (entry "dbd"), written with the schema's object API.
Verification refuses any non-builtin op (Flex / select-TF / custom) and layout Transposes.

This module is the export side (the `TFLiteFormat` plug-in: conversion, quantisation, verification);
the flatbuffer editing it uses is tflite_flatbuffer.py. Running the files (`TFLiteRunner`), reading
their metadata and LiteRT's profiler are dbd.runtime.engines.tflite, which the plug-in's `runner`,
`read_metadata` and `profile` hand over to. Heavy modules (torch, litert-torch, ai-edge-quantizer,
the LiteRT interpreter) are imported inside the functions that use them: this module is loaded
whenever formats are looked up.
"""

from __future__ import annotations

import collections
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from dbd.core import DBDError, reraise_interrupt
from dbd.runtime.engines.shared import package_versions, quiet
from dbd.runtime.engines.tflite import TFLiteRunner, metadata_entry, profile_litert
from dbd.runtime.formats import FileFormat, ProfiledRun
from dbd.runtime.spec import PreprocessSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

from .base import ExportJob, check_io, quant_dict
from .metadata import build_metadata, dumps, input_entry, output_entry
from .tflite_flatbuffer import (
    _schema,
    check_ops,
    embed_metadata,
    is_layout_transpose,
    op_histogram,
    op_scopes,
    read_model,
)

INPUT_NAME, OUTPUT_NAME = "pixels", "blur_prob"
SIGNATURE = "serving_default"
PIXEL_RANGE = (0.0, 255.0)  # int8 input calibration range: scale 1, zero-point -128
INT8_INPUT_QUANT = {"scale": 1.0, "zero_point": -128}
QUANTIZATION_WORDS = {
    "fp32": "none (float32)",
    "fp16": "float16 weights (dequantised to float32 at load/run time), float32 activations and I/O",
    "int8": "full integer: int8 per-channel symmetric weights, int8 activations (static, MinMax calibration), "
    "int8 input (pixel - 128) and int8 output (scale 1/256)",
}


def folded_pixels(model, spec: PreprocessSpec):
    """The camera-native wrapper `FoldedPixels` of `model`: NHWC RGB pixels 0..255 -> /255 ->
    (x - mean) / std -> model -> NHWC P(blur).

    The two affine steps are one per-channel multiply-add, x * (1 / (255 std)) - mean / std. Where it
    is exact, that is folded into the weights of the network's input convolution, and the final
    upsample of the logit map is made separable (tflite_rewrites.py: together 25 % of the int8
    file's time); `FoldedPixels.rewrites` names what was applied.
    """
    # Defined here, not at module level: torch is imported only when a model is converted.
    from torch import nn

    from .tflite_rewrites import rewrite_for_tflite

    class FoldedPixels(nn.Module):
        def __init__(self, model: nn.Module, spec: PreprocessSpec):
            super().__init__()
            self.model, self.rewrites = rewrite_for_tflite(model, *spec.folded_affine(), spec.input_size)

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {OUTPUT_NAME: self.model(pixels.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)}

    return FoldedPixels(model, spec)


def _details(interpreter) -> tuple[list[dict], list[dict]]:
    runner = interpreter.get_signature_runner(SIGNATURE)
    result = []
    for details in (runner.get_input_details(), runner.get_output_details()):
        rows = []
        for name, d in details.items():
            scale, zero = d["quantization"]
            rows.append(
                {
                    "name": name,
                    "tensor": d["name"],
                    "shape": [int(v) for v in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name,
                    "quantization": quant_dict(scale, zero) if scale else None,
                }
            )
        result.append(rows)
    return result[0], result[1]


def _interpreter(data: bytes):
    with quiet():
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=bytes(data))
        interpreter.allocate_tensors()
    return interpreter


class TFLiteFormat(FileFormat):
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8")
    default_precision = "int8"
    calibrated_precisions = ("int8",)  # static w8/a8 reads the calibration images
    runtime_modules = ("ai_edge_litert.interpreter",)
    order = 20

    def read_metadata(self, path: Path) -> str | None:
        return metadata_entry(Path(path).read_bytes(), path)

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> TFLiteRunner:
        return TFLiteRunner(path, threads, device)

    def profile(self, path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
        return profile_litert(path, x, threads, runs, warmup)

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert")

    def prepare(self, job: ExportJob) -> None:
        self._float(job)

    def _float(self, job: ExportJob) -> bytes:
        """The float32 camera-native flatbuffer (converted once per job)."""
        return job.memo(self, lambda: self._convert_float(job))

    def _convert_float(self, job: ExportJob) -> bytes:
        h, w = job.spec.input_size
        import torch

        wrapper = folded_pixels(job.model, job.spec).eval()
        sample = {INPUT_NAME: torch.rand(1, h, w, 3) * 255}
        with tempfile.TemporaryDirectory(prefix="dbd-tflite-") as tmp, quiet(not job.verbose):
            import litert_torch

            path = Path(tmp) / "float.tflite"
            litert_torch.convert(wrapper, sample_kwargs=sample).export(str(path))
            data = path.read_bytes()
        try:
            _interpreter(data)
        except (RuntimeError, ValueError) as err:
            reraise_interrupt(err)
            reason = " ".join(str(err).split())[:200]
            raise DBDError(
                f"litert-torch turned '{job.arch}' into a TFLite graph that does not run ({reason}); "
                f"this architecture cannot be exported to TFLite with litert-torch "
                f"{package_versions('litert-torch')['litert-torch']}: use --format onnx or coreml"
            ) from None
        return data

    def export(self, job: ExportJob, precision: str, dest: Path) -> dict[str, Any]:
        data = self._float(job)
        if precision == "fp16":
            data = self._fp16(job, data)
        elif precision == "int8":
            data = self._int8(job, data)
        elif precision != "fp32":
            raise DBDError(f"tflite has no precision '{precision}'")
        inputs, outputs = _details(_interpreter(data))
        if precision == "int8":
            input_quant = dict(INT8_INPUT_QUANT)  # the contract; verify checks the file against it
            input_dtype = "int8"
        else:
            input_quant, input_dtype = None, "float32"
        meta = build_metadata(
            job,
            "tflite",
            precision,
            QUANTIZATION_WORDS[precision],
            {
                **input_entry(job, INPUT_NAME, "NHWC", input_dtype, folded=True, quantization=input_quant),
                "tensor": inputs[0]["tensor"],
                "signature": SIGNATURE,
            },
            {
                **output_entry(job, OUTPUT_NAME, "NHWC", outputs[0]["dtype"], quantization=outputs[0]["quantization"]),
                "tensor": outputs[0]["tensor"],
                "signature": SIGNATURE,
            },
            self.tools(),
            calibrated=self.needs_calibration(precision),
        )
        Path(dest).write_bytes(embed_metadata(data, dumps(meta)))
        return meta

    def _quantizer(self, data: bytes, recipe=None):
        from ai_edge_quantizer import quantizer

        return quantizer.Quantizer(bytearray(data), recipe)

    def _fp16(self, job: ExportJob, data: bytes) -> bytes:
        with quiet(not job.verbose):
            from ai_edge_quantizer import qtyping, recipe

            qt = self._quantizer(data)
            qt.add_weight_only_config(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                num_bits=16,
                algorithm_key=recipe.AlgorithmName.FLOAT_CASTING,
            )
            return bytes(qt.quantize(enable_progress_report=False).quantized_model)

    def _int8(self, job: ExportJob, data: bytes) -> bytes:
        with quiet(not job.verbose):
            from ai_edge_quantizer import qtyping, recipe
            from ai_edge_quantizer.algorithm_manager import AlgorithmName

        float_regexes = []
        scopes = op_scopes(data)
        for module, scope in litert_scopes(job.model, job.example_input(), job.int8_float).items():
            regex = re.escape(scope)
            if not any(re.search(regex, s) for s in scopes):
                raise DBDError(
                    f"--int8-float: no TFLite op carries the scope of '{module}' ({scope}); "
                    f"litert-torch named the layers differently, pass --int8-float none"
                )
            float_regexes.append(regex)
        pixels = job.spec.to_pixels(job.calibration.unit)
        samples = [{INPUT_NAME: pixels[i : i + 1]} for i in range(len(pixels))]
        inputs, _ = _details(_interpreter(data))
        input_tensor = inputs[0]["tensor"]
        with quiet(not job.verbose):
            qt = self._quantizer(data, recipe.static_wi8_ai8())
            for regex in float_regexes:
                qt.update_quantization_recipe(
                    regex=regex,
                    operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                    algorithm_key=AlgorithmName.NO_QUANTIZE,
                )
            ranges = qt.calibrate({SIGNATURE: samples}, num_threads=1)
            if input_tensor not in ranges:
                raise RuntimeError(f"calibration has no range for the input tensor {input_tensor}")
            # The camera contract: the full pixel range, not the calibration images' min/max, so that
            # int8 = pixel - 128 exactly (scale 1, zero-point -128).
            like = np.asarray(ranges[input_tensor]["min"])
            ranges[input_tensor] = {
                "min": np.full_like(like, PIXEL_RANGE[0]),
                "max": np.full_like(like, PIXEL_RANGE[1]),
            }
            return bytes(qt.quantize(ranges, enable_progress_report=False).quantized_model)

    def check_structure(self, path: Path, meta: dict[str, Any]) -> None:
        data = Path(path).read_bytes()
        check_ops(path, data)
        check_io(path, meta, *_details(_interpreter(data)))

    def describe(self, path: Path) -> dict[str, Any]:
        data = Path(path).read_bytes()
        counts, custom, transposes = op_histogram(data)
        model = read_model(data)
        schema = _schema()
        type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        dtypes = collections.Counter(type_names.get(t.type, str(t.type)) for sg in model.subgraphs for t in sg.tensors)
        inputs, outputs = _details(_interpreter(data))
        return {
            "ops": dict(counts.most_common()),
            "custom_ops": custom,
            "layout_transposes": sum(is_layout_transpose(p, shape) for p, shape in transposes),
            "tensor_dtypes": dict(dtypes.most_common()),
            "inputs": inputs,
            "outputs": outputs,
        }


def litert_scopes(model: nn.Module, example: torch.Tensor, names: Iterable[str]) -> dict[str, str]:
    """For each module name, the scope fragment litert-torch gives its tensors, e.g.
    'encoder.features.1' -> '/dbd.models.mobilenetv2.MobileNetV2_encoder/dbd.models.mobilenetv2.InvertedResidual_1/'.
    """
    from .mixed_precision import trace_calls  # imports torch: only when exporting

    wanted, scopes = set(names), {}

    def on_call(name, module, stack, args):
        if name in wanted and name not in scopes:
            parts = [f"{type(m).__module__}.{type(m).__qualname__}_{n.rsplit('.', 1)[-1]}" for n, m in stack if n]
            scopes[name] = "/" + "/".join(parts) + "/"

    trace_calls(model, example, on_call)
    missing = wanted - set(scopes)
    if missing:
        raise DBDError(
            f"--int8-float: module(s) {', '.join(sorted(missing))} are never called in the exported "
            f"forward pass; pass modules the exported graph contains"
        )
    return scopes


FORMAT = TFLiteFormat()  # the object the dbd.formats entry point names
