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

Runtime side: `TFLiteRunner` (LiteRT with XNNPACK, CPU) and the metadata reader, which walks the
flatbuffer to the "dbd" metadata entry with the standard library alone. Heavy modules (torch,
litert-torch, ai-edge-quantizer, the LiteRT interpreter) are imported inside the functions that
use them: this module is loaded whenever formats are looked up.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import struct
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from dbd.core import DBDError, reraise_interrupt
from dbd.runtime.formats import FileFormat
from dbd.runtime.metadata import METADATA_KEY, check_graph_io, read_metadata
from dbd.runtime.runners import ExportedRunner
from dbd.runtime.spec import PreprocessSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

from .base import ExportJob, Verification, check_io, quant_dict, quiet
from .metadata import build_metadata, dumps, input_entry, output_entry, package_versions

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


# ---- runtime side ----------------------------------------------------------------------------------


class TFLiteRunner(ExportedRunner):
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
                raise DBDError(
                    f"LiteRT cannot load '{path}' ({str(err).splitlines()[0][:120]}); re-export it"
                ) from None
        details = self.interpreter.get_input_details()[0]
        self.check_input_shape([int(v) for v in details["shape"]])
        output = self.interpreter.get_output_details()[0]
        # what the metadata says to feed and read must be what the graph takes and gives
        check_graph_io(self.info, path, "input", details["dtype"], details["quantization"])
        check_graph_io(self.info, path, "output", output["dtype"], output["quantization"])
        self.input_index = details["index"]
        self.output_index = output["index"]
        self._lock = threading.Lock()

    def run_one(self, x: np.ndarray) -> np.ndarray:
        # One interpreter owns one set of tensors: two threads sharing a Predictor must take turns
        # (LiteRT refuses set_tensor while another thread holds a view of its output).
        with self._lock:
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output_index).copy()


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


# The "dbd" metadata with the standard library: just enough flatbuffer to reach Model.metadata and
# Model.buffers (field indices of schema.fbs).
_TFL_MODEL_BUFFERS, _TFL_MODEL_METADATA = 4, 6  # `table Model`
_TFL_METADATA_NAME, _TFL_METADATA_BUFFER = 0, 1  # `table Metadata`
_TFL_BUFFER_DATA, _TFL_BUFFER_OFFSET, _TFL_BUFFER_SIZE = 0, 1, 2  # `table Buffer`


def _u32(data: bytes, pos: int) -> int:
    return struct.unpack_from("<I", data, pos)[0]


def _fb_field(data: bytes, table: int, index: int) -> int | None:
    """Absolute position of field `index` of the table at `table`, or None when absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vt_size = struct.unpack_from("<H", data, vtable)[0]
    if 4 + 2 * index >= vt_size:
        return None
    offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _fb_vector(data: bytes, table: int, index: int) -> tuple[int, int]:
    """(start, length) of a vector field; (0, 0) when absent."""
    pos = _fb_field(data, table, index)
    if pos is None:
        return 0, 0
    vec = pos + _u32(data, pos)
    length = _u32(data, vec)
    if vec + 4 + length > len(data):
        raise ValueError("vector past the end")
    return vec + 4, length


def _fb_table_at(data: bytes, pos: int) -> int:
    return pos + _u32(data, pos)


def metadata_entry(data: bytes, path: Path) -> str | None:
    """The "dbd" metadata entry of a TFLite flatbuffer (None when absent)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise DBDError(
            f"'{path}' is not a TFLite flatbuffer (no TFL3 identifier); pass a .tflite written by dbd-export"
        )
    model = _fb_table_at(data, 0)
    meta_start, meta_len = _fb_vector(data, model, _TFL_MODEL_METADATA)
    buf_start, buf_len = _fb_vector(data, model, _TFL_MODEL_BUFFERS)
    for i in range(meta_len):
        entry = _fb_table_at(data, meta_start + 4 * i)
        name_pos = _fb_field(data, entry, _TFL_METADATA_NAME)
        if name_pos is None:
            continue
        name_start = name_pos + _u32(data, name_pos)
        name = data[name_start + 4 : name_start + 4 + _u32(data, name_start)].decode("utf-8")
        if name != METADATA_KEY:
            continue
        index_pos = _fb_field(data, entry, _TFL_METADATA_BUFFER)
        index = _u32(data, index_pos) if index_pos is not None else 0
        if index >= buf_len:
            raise ValueError("metadata buffer index out of range")
        buffer = _fb_table_at(data, buf_start + 4 * index)
        start, length = _fb_vector(data, buffer, _TFL_BUFFER_DATA)
        if length:
            return data[start : start + length].decode("utf-8")
        # Buffers of large models may live after the flatbuffer: Buffer.offset / Buffer.size.
        off_pos = _fb_field(data, buffer, _TFL_BUFFER_OFFSET)
        size_pos = _fb_field(data, buffer, _TFL_BUFFER_SIZE)
        if off_pos is not None and size_pos is not None:
            offset, size = (struct.unpack_from("<Q", data, p)[0] for p in (off_pos, size_pos))
            if offset > 1 and offset + size <= len(data):
                return data[offset : offset + size].decode("utf-8")
        raise ValueError("empty metadata buffer")
    return None


# ---- export side -----------------------------------------------------------------------------------


def folded_pixels(model, spec: PreprocessSpec):
    """The camera-native wrapper `FoldedPixels` of `model`: NHWC RGB pixels 0..255 -> /255 ->
    (x - mean) / std -> model -> NHWC P(blur).

    The two affine steps are merged into one per-channel multiply-add, x * (1 / (255 std)) - mean / std
    (one MUL and one ADD in the graph: fewer requantisations in int8).
    """
    # Defined here, not at module level: torch is imported only when a model is converted.
    import torch
    from torch import nn

    class FoldedPixels(nn.Module):
        def __init__(self, model: nn.Module, spec: PreprocessSpec):
            super().__init__()
            self.model = model
            scale, bias = spec.folded_affine()
            self.register_buffer("scale", torch.from_numpy(scale).float().view(1, 3, 1, 1))
            self.register_buffer("bias", torch.from_numpy(bias).float().view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            x = pixels.permute(0, 3, 1, 2) * self.scale + self.bias
            return {OUTPUT_NAME: self.model(x).permute(0, 2, 3, 1)}

    return FoldedPixels(model, spec)


# ---- the flatbuffer, through the schema's object API --------------------------------------------


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names() -> dict[int, str]:
    schema = _schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def read_model(data: bytes):
    """The flatbuffer as a ModelT; buffers stored after the flatbuffer (offset/size) are pulled inline."""
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise DBDError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for buffer in model.buffers or []:
        if buffer.offset and buffer.offset > 1:  # ai-edge-quantizer writes constants this way
            end = buffer.offset + buffer.size
            if end > len(data):
                raise DBDError("TFLite buffer points past the end of the file (truncated?)")
            buffer.data = np.frombuffer(data, np.uint8, count=buffer.size, offset=buffer.offset).copy()
            buffer.offset = buffer.size = 0
    return model


def write_model(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_metadata(data: bytes, text: str) -> bytes:
    """The flatbuffer with `text` as its metadata entry "dbd" (replacing an older one)."""
    schema = _schema()
    model = read_model(data)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), np.uint8).copy()
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    kept = [
        m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != METADATA_KEY
    ]
    model.metadata = kept + [entry]
    return write_model(model)


def op_histogram(data: bytes) -> tuple[collections.Counter, list[str], list[list[int]]]:
    """(op name -> count over all subgraphs, custom op codes, perms of rank-4 TRANSPOSE ops)."""
    schema = _schema()
    model = read_model(data)
    names = _op_names()
    counts: collections.Counter = collections.Counter()
    custom, transposes = [], []
    for subgraph in model.subgraphs or []:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = (code.customCode or b"?").decode("utf-8", "replace")
                custom.append(name)
                counts[f"CUSTOM:{name}"] += 1
                continue
            counts[names.get(builtin, f"BUILTIN_{builtin}")] += 1
            if builtin == schema.BuiltinOperator.TRANSPOSE and op.inputs is not None and len(op.inputs) > 1:
                perm_tensor = subgraph.tensors[op.inputs[1]]
                data_ = model.buffers[perm_tensor.buffer].data if perm_tensor.buffer < len(model.buffers) else None
                perm = np.frombuffer(bytes(data_), np.int32).tolist() if data_ is not None else []
                transposes.append(perm)
    return counts, custom, transposes


def op_scopes(data: bytes) -> list[str]:
    """Each operator's scope as ai-edge-quantizer matches it: its output tensor names, joined."""
    model = read_model(data)
    return [
        ";".join(sg.tensors[i].name.decode("utf-8", "replace") for i in op.outputs if i >= 0)
        for sg in model.subgraphs or []
        for op in sg.operators or []
    ]


def is_layout_transpose(perm: list[int]) -> bool:
    """NHWC <-> NCHW (or unknown perm): what a layout conversion leaves behind."""
    return not perm or perm in ([0, 3, 1, 2], [0, 2, 3, 1])


def check_ops(path: Path, data: bytes) -> collections.Counter:
    """Builtin ops only and no layout Transpose; returns the op histogram."""
    counts, custom, transposes = op_histogram(data)
    if custom:
        flex = [c for c in custom if c.startswith("Flex")]
        kinds = collections.Counter(custom)
        listed = ", ".join(f"{k} x{v}" for k, v in kinds.most_common(3))
        what = "select-TensorFlow (Flex) ops" if flex else "custom ops"
        raise DBDError(
            f"'{path}' contains {what} ({listed}), which the phone's builtin TFLite runtime cannot run; "
            f"the model must use builtin ops only (replace the layer that produces them)"
        )
    layout = [p for p in transposes if is_layout_transpose(p)]
    if layout:
        raise DBDError(
            f"'{path}' contains {len(layout)} layout Transpose op(s) (NCHW<->NHWC) inside the graph, "
            f"which cost time on the phone; export through the NHWC wrapper (litert_torch.to_channel_last_io)"
        )
    return counts


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

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert")

    def prepare(self, job: ExportJob) -> None:
        self._float(job)

    def _float(self, job: ExportJob) -> bytes:
        """The float32 camera-native flatbuffer (converted once per job)."""
        if "tflite_float" not in job._cache:
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
            job._cache["tflite_float"] = data
        return job._cache["tflite_float"]

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

    def verify(self, job: ExportJob, precision: str, path: Path) -> Verification:
        from . import parity

        meta = read_metadata(path)
        data = Path(path).read_bytes()
        check_ops(path, data)
        interpreter = _interpreter(data)
        inputs, outputs = _details(interpreter)
        check_io(path, meta, inputs, outputs)
        figures = parity.measure(job.reference_maps(), TFLiteRunner(path).run(job.parity.unit), job.parity.masks)
        return Verification(figures, parity.check(precision, figures, job.budget))

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
            "layout_transposes": sum(is_layout_transpose(p) for p in transposes),
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

    def on_call(name, module, stack):
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
