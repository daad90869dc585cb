"""The metadata every exported model carries, and how to read it back from .onnx, .tflite and
.mlpackage files with the standard library alone (no onnx, tflite or coremltools install).

`dbd-export` embeds ONE JSON document under the key "dbd" in each file:

* ONNX: `ModelProto.metadata_props` entry "dbd";
* TFLite: the flatbuffer's `Model.metadata` entry named "dbd" (its buffer holds the JSON bytes);
* CoreML: `user_defined_metadata["dbd"]` of the .mlpackage's model spec.

The document says everything a runtime needs to feed the file and read its answer (see
`METADATA_SCHEMA`): input tensor name, shape, layout, dtype, colour order, the normalisation (or
"folded" when the graph takes plain pixels), quantisation parameters, and what the output means
(P(blur), 1 = out of focus); plus where the model came from (arch, checkpoint sha256, training
data, metrics). `encode_input` / `decode_output` apply that contract, so the export's parity
check, `dbd-predict` and `dbd-bench` all feed files the same way.

This module is imported by export, benchmarks and the runtime: it must not import dbd.export.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from dbd.core import DBDError

METADATA_KEY = "dbd"
METADATA_FORMAT = "dbd-export/1"
FILE_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml"}
PRECISIONS = ("fp32", "fp16", "int8")
NORMALIZATION_FOLDED = "folded"      # the graph divides by 255 and normalises itself: feed pixels
NORMALIZATION_EXTERNAL = "external"  # feed (pixel/255 - mean) / std, as PreprocessSpec.preprocess does

# Top-level keys of the "dbd" document and what they hold (the schema, in words; `check_metadata`
# enforces the keys a runtime relies on).
METADATA_SCHEMA: dict[str, str] = {
    "format": f"'{METADATA_FORMAT}'",
    "dbd_version": "version of the dbd package that exported the file",
    "model": "{arch, config}: the network (create_model name and config)",
    "file": "{format: onnx|tflite|coreml, precision: fp32|fp16|int8, quantization (words), created, tools}",
    "input": "{name, shape, layout NCHW|NHWC, dtype, color_order 'RGB', size [H, W], normalization "
             "'folded'|'external', mean, std, pixel_scale, value_range, quantization {scale, zero_point}|null, contract (words)}",
    "output": "{name, shape, layout, dtype, quantization|null, meaning 'blur_probability', blur_value 1, value_range [0, 1]}",
    "preprocess": "the PreprocessSpec dict (dbd-preprocess/1) the file was exported for, layout as the file's",
    "source_checkpoint": "{file, sha256, created} of the .safetensors checkpoint",
    "training": "the checkpoint card's training section (data, command, date, ...)",
    "metrics": "the checkpoint card's metrics",
    "calibration": "{data, n_images, selection} of the int8 calibration images, or null",
}
REQUIRED_KEYS = ("format", "model", "file", "input", "output", "preprocess", "source_checkpoint")
REQUIRED_INPUT_KEYS = ("name", "shape", "layout", "dtype", "color_order", "size", "normalization",
                       "mean", "std", "pixel_scale", "quantization")
REQUIRED_OUTPUT_KEYS = ("name", "shape", "layout", "dtype", "quantization", "meaning")


# --------------------------------------------------------------------------------------------
# Reading


def file_format(path: str | Path) -> str:
    """'onnx', 'tflite' or 'coreml' from the file name; anything else -> DBDError."""
    path = Path(path)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None and path.suffix.lower() == ".safetensors":
        raise DBDError(f"'{path}': checkpoints must end in lower-case .safetensors, not '{path.suffix}'; "
                       f"rename it to '{path.with_suffix('.safetensors').name}'")
    if fmt is None:
        raise DBDError(f"'{path}' is not a model file dbd reads: expected a .safetensors checkpoint or a .onnx, "
                       f".tflite or .mlpackage export (export one with dbd-export)")
    return fmt


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The "dbd" metadata document of an exported .onnx, .tflite or .mlpackage file.

    A missing, unreadable or foreign file, or one without a "dbd" entry, raises DBDError with one
    line naming the file.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise DBDError(f"exported model '{path}' does not exist; check the path (or run dbd-export)")
    if fmt == "coreml":
        raw = _coreml_entry(path)
    else:
        if not path.is_file():
            raise DBDError(f"exported model '{path}' is not a file; pass the .{fmt} file itself")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DBDError(f"cannot read exported model '{path}' ({err.strerror}); check its permissions") from None
        try:
            raw = _onnx_entry(data) if fmt == "onnx" else _tflite_entry(data, path)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as err:
            raise DBDError(f"'{path}' is truncated or not a valid .{fmt} file ({type(err).__name__}); "
                           f"re-export it with dbd-export") from None
    if raw is None:
        raise DBDError(f"'{path}' has no '{METADATA_KEY}' metadata: it was not written by dbd-export "
                       f"(export the model with dbd-export)")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DBDError(f"'{path}' has a corrupt '{METADATA_KEY}' metadata entry (not JSON); re-export it") from None
    check_metadata(doc, path)
    return doc


def check_metadata(doc: Any, path: str | Path = "<metadata>") -> None:
    """Refuse a document a runtime could not rely on (wrong format version, missing keys)."""
    if not isinstance(doc, dict):
        raise DBDError(f"'{path}' has a '{METADATA_KEY}' metadata entry that is not a JSON object; re-export it")
    if doc.get("format") != METADATA_FORMAT:
        raise DBDError(f"'{path}' has metadata format {doc.get('format')!r}, this dbd reads {METADATA_FORMAT!r}; "
                       f"re-export it with this dbd (or upgrade dbd)")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    missing += [f"input.{k}" for k in REQUIRED_INPUT_KEYS if k not in doc.get("input", {})]
    missing += [f"output.{k}" for k in REQUIRED_OUTPUT_KEYS if k not in doc.get("output", {})]
    if missing:
        raise DBDError(f"'{path}' has incomplete '{METADATA_KEY}' metadata (missing {', '.join(missing[:3])}); re-export it")


# ---- protobuf (ONNX ModelProto, CoreML Model spec): just enough of the wire format --------------


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _proto_fields(data: bytes | memoryview):
    """Yield (field_number, wire_type, value) of one protobuf message; length-delimited values as memoryview."""
    data = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
        yield number, wire, value


def _string_map_entry(entry: memoryview) -> tuple[str, str]:
    """A StringStringEntryProto / map<string, string> entry: key = 1, value = 2."""
    key = value = ""
    for number, wire, field in _proto_fields(entry):
        if wire == 2 and number == 1:
            key = bytes(field).decode("utf-8")
        elif wire == 2 and number == 2:
            value = bytes(field).decode("utf-8")
    return key, value


def _onnx_entry(data: bytes) -> str | None:
    # ModelProto: ir_version = 1 (varint, always first in files onnx writes), graph = 7, metadata_props = 14.
    seen_graph = False
    found = None
    for number, wire, field in _proto_fields(data):
        if number == 7 and wire == 2:
            seen_graph = True
        elif number == 14 and wire == 2:
            key, value = _string_map_entry(field)
            if key == METADATA_KEY:
                found = value
    if not seen_graph:
        raise ValueError("no graph")
    return found


def _coreml_entry(path: Path) -> str | None:
    if not path.is_dir():
        raise DBDError(f"'{path}' is not an .mlpackage folder; pass the package folder written by dbd-export")
    manifest_path = path / "Manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        root = manifest["rootModelIdentifier"]
        spec_path = path / "Data" / manifest["itemInfoEntries"][root]["path"]
        spec = spec_path.read_bytes()
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DBDError(f"'{path}' is not a readable .mlpackage (Manifest.json or model spec: {type(err).__name__}); "
                       f"re-export it with dbd-export") from None
    try:
        # Model: description = 2; ModelDescription: metadata = 100; Metadata: userDefined = 100 (map).
        found = None
        for number, wire, description in _proto_fields(spec):
            if number != 2 or wire != 2:
                continue
            for number2, wire2, metadata in _proto_fields(description):
                if number2 != 100 or wire2 != 2:
                    continue
                for number3, wire3, entry in _proto_fields(metadata):
                    if number3 == 100 and wire3 == 2:
                        key, value = _string_map_entry(entry)
                        if key == METADATA_KEY:
                            found = value
        return found
    except (ValueError, UnicodeDecodeError) as err:
        raise DBDError(f"'{path}' holds a corrupt CoreML model spec ({err}); re-export it with dbd-export") from None


# ---- flatbuffers (TFLite Model): just enough to reach Model.metadata and Model.buffers ------------

_TFL_MODEL_BUFFERS, _TFL_MODEL_METADATA = 4, 6     # field indices in schema.fbs `table Model`
_TFL_METADATA_NAME, _TFL_METADATA_BUFFER = 0, 1    # `table Metadata`
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


def _tflite_entry(data: bytes, path: Path) -> str | None:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise DBDError(f"'{path}' is not a TFLite flatbuffer (no TFL3 identifier); pass a .tflite written by dbd-export")
    model = _fb_table_at(data, 0)
    meta_start, meta_len = _fb_vector(data, model, _TFL_MODEL_METADATA)
    buf_start, buf_len = _fb_vector(data, model, _TFL_MODEL_BUFFERS)
    for i in range(meta_len):
        entry = _fb_table_at(data, meta_start + 4 * i)
        name_pos = _fb_field(data, entry, _TFL_METADATA_NAME)
        if name_pos is None:
            continue
        name_start = name_pos + _u32(data, name_pos)
        name = data[name_start + 4:name_start + 4 + _u32(data, name_start)].decode("utf-8")
        if name != METADATA_KEY:
            continue
        index_pos = _fb_field(data, entry, _TFL_METADATA_BUFFER)
        index = _u32(data, index_pos) if index_pos is not None else 0
        if index >= buf_len:
            raise ValueError("metadata buffer index out of range")
        buffer = _fb_table_at(data, buf_start + 4 * index)
        start, length = _fb_vector(data, buffer, _TFL_BUFFER_DATA)
        if length:
            return data[start:start + length].decode("utf-8")
        # Buffers of large models may live after the flatbuffer: Buffer.offset / Buffer.size.
        off_pos = _fb_field(data, buffer, _TFL_BUFFER_OFFSET)
        size_pos = _fb_field(data, buffer, _TFL_BUFFER_SIZE)
        if off_pos is not None and size_pos is not None:
            offset, size = (struct.unpack_from("<Q", data, p)[0] for p in (off_pos, size_pos))
            if offset > 1 and offset + size <= len(data):
                return data[offset:offset + size].decode("utf-8")
        raise ValueError("empty metadata buffer")
    return None


# --------------------------------------------------------------------------------------------
# Applying the contract


def encode_input(meta: dict[str, Any], unit_rgb: np.ndarray) -> np.ndarray:
    """The file's input tensor for images already resized to the model size.

    `unit_rgb` is (N, H, W, 3) float RGB in [0, 1] (pixels / 255 after the bilinear resize of
    PreprocessSpec). Returns the array to feed, in the file's layout and dtype.
    """
    inp = meta["input"]
    x = np.asarray(unit_rgb, np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise DBDError(f"expected (N, H, W, 3) RGB images in [0, 1], got shape {x.shape}")
    if list(x.shape[1:3]) != list(inp["size"]):
        raise DBDError(f"images are {x.shape[2]}x{x.shape[1]} but the model takes {inp['size'][1]}x{inp['size'][0]}; "
                       f"resize them first (PreprocessSpec.resize_image)")
    if inp["normalization"] == NORMALIZATION_FOLDED:
        x = x * np.float32(inp["pixel_scale"])     # plain pixels, 0..255
    else:
        x = (x - np.asarray(inp["mean"], np.float32)) / np.asarray(inp["std"], np.float32)
    if inp["layout"] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    dtype = np.dtype(inp["dtype"])
    q = inp.get("quantization")
    if q:
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / np.float32(q["scale"]) + q["zero_point"]), info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


def decode_output(meta: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 P(blur) from the file's raw output (dequantised, layout removed)."""
    out = meta["output"]
    y = np.asarray(raw)
    q = out.get("quantization")
    y = (y.astype(np.float32) - q["zero_point"]) * np.float32(q["scale"]) if q else y.astype(np.float32)
    if y.ndim == 4:
        y = y[:, 0] if out["layout"] == "NCHW" else y[..., 0]
    return y


__all__ = [
    "FILE_FORMATS", "METADATA_FORMAT", "METADATA_KEY", "METADATA_SCHEMA", "NORMALIZATION_EXTERNAL",
    "NORMALIZATION_FOLDED", "PRECISIONS", "REQUIRED_INPUT_KEYS", "REQUIRED_KEYS", "REQUIRED_OUTPUT_KEYS",
    "check_metadata", "decode_output", "encode_input", "file_format", "read_metadata",
]
