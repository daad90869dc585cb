"""The metadata every exported model carries, and how to read it back from any exported file.

`dbd-export` embeds ONE JSON document under the key "dbd" in each file, in the place its container
keeps metadata (each format plug-in, dbd.runtime.formats, knows where: e.g. a protobuf
metadata map or a flatbuffer metadata entry) and reads it back without the format's converter.

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

from .formats import format_of
from .spec import OUTPUT_MEANING, normalize, to_layout, to_pixels

METADATA_KEY = "dbd"
METADATA_FORMAT = "dbd-export/1"
PRECISIONS = ("fp32", "fp16", "int8")
NORMALIZATION_FOLDED = "folded"  # the graph divides by 255 and normalises itself: feed pixels
NORMALIZATION_EXTERNAL = "external"  # feed (pixel/255 - mean) / std, as PreprocessSpec.preprocess does

# Top-level keys of the "dbd" document and what they hold (the schema, in words; `check_metadata`
# enforces the keys a runtime relies on).
METADATA_SCHEMA: dict[str, str] = {
    "format": f"'{METADATA_FORMAT}'",
    "dbd_version": "version of the dbd package that exported the file",
    "model": "{arch, config}: the network (create_model name and config)",
    "file": "{format: the format's registered name, precision: fp32|fp16|int8, quantization (words), created, tools}",
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
REQUIRED_INPUT_KEYS = (
    "name",
    "shape",
    "layout",
    "dtype",
    "color_order",
    "size",
    "normalization",
    "mean",
    "std",
    "pixel_scale",
    "quantization",
)
REQUIRED_OUTPUT_KEYS = ("name", "shape", "layout", "dtype", "quantization", "meaning")


# --------------------------------------------------------------------------------------------
# Reading


def file_format(path: str | Path) -> str:
    """The registered format name of an exported file, from its suffix; anything else -> DBDError."""
    return format_of(path).name


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The "dbd" metadata document of an exported file (any registered format).

    A missing, unreadable or foreign file, or one without a "dbd" entry, raises DBDError with one
    line naming the file.
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise DBDError(f"exported model '{path}' does not exist; check the path (or run dbd-export)")
    if fmt.directory and not path.is_dir():
        raise DBDError(f"'{path}' is not a {fmt.suffix} folder; pass the package folder written by dbd-export")
    if not fmt.directory and not path.is_file():
        raise DBDError(f"exported model '{path}' is not a file; pass the {fmt.suffix} file itself")
    try:
        raw = fmt.read_metadata(path)
    except OSError as err:
        raise DBDError(f"cannot read exported model '{path}' ({err.strerror}); check its permissions") from None
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as err:
        raise DBDError(
            f"'{path}' is truncated or not a valid {fmt.suffix} file ({type(err).__name__}); "
            f"re-export it with dbd-export"
        ) from None
    if raw is None:
        raise DBDError(
            f"'{path}' has no '{METADATA_KEY}' metadata: it was not written by dbd-export "
            f"(export the model with dbd-export)"
        )
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
        raise DBDError(
            f"'{path}' has metadata format {doc.get('format')!r}, this dbd reads {METADATA_FORMAT!r}; "
            f"re-export it with this dbd (or upgrade dbd)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    missing += [f"input.{k}" for k in REQUIRED_INPUT_KEYS if k not in doc.get("input", {})]
    missing += [f"output.{k}" for k in REQUIRED_OUTPUT_KEYS if k not in doc.get("output", {})]
    if missing:
        raise DBDError(
            f"'{path}' has incomplete '{METADATA_KEY}' metadata (missing {', '.join(missing[:3])}); re-export it"
        )
    _check_consistent(doc, path)


_EDITED = "the file was edited or damaged; re-export it with dbd-export"
DTYPES = ("float32", "float16", "int8", "uint8")


def _same(a: Any, b: Any) -> bool:
    try:
        return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=0)
    except (TypeError, ValueError):
        return False


def _quantization(entry: dict[str, Any], key: str, path: str | Path) -> None:
    q, dtype = entry["quantization"], entry["dtype"]
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    if q is None:
        if integer:
            raise DBDError(f"'{path}': metadata '{key}.dtype' is {dtype} but '{key}.quantization' is null; {_EDITED}")
        return
    ok = isinstance(q, dict) and isinstance(q.get("zero_point"), int) and not isinstance(q.get("zero_point"), bool)
    scale = q.get("scale") if isinstance(q, dict) else None
    ok = ok and isinstance(scale, (int, float)) and not isinstance(scale, bool) and np.isfinite(scale) and scale > 0
    if not ok or not integer:
        raise DBDError(f"'{path}': metadata '{key}.quantization' {q!r} is not valid for dtype {dtype}; {_EDITED}")
    info = np.iinfo(np.dtype(dtype))
    if not info.min <= q["zero_point"] <= info.max:
        raise DBDError(
            f"'{path}': metadata '{key}.quantization.zero_point' {q['zero_point']} is outside {dtype}; {_EDITED}"
        )


def _check_consistent(doc: dict[str, Any], path: str | Path) -> None:
    """The document must agree with itself: the input block with the `preprocess` block, the
    layout with the shape, the quantisation with the dtype, and the output must mean what every
    runtime reads (P(blur), 1 = blur). An edited value is named, never silently used."""
    inp, out, prep = doc["input"], doc["output"], doc["preprocess"]
    for key, entry in (("input", inp), ("output", out)):
        if entry["layout"] not in ("NCHW", "NHWC"):
            raise DBDError(f"'{path}': metadata '{key}.layout' is {entry['layout']!r}, not NCHW or NHWC; {_EDITED}")
        if entry["dtype"] not in DTYPES:
            raise DBDError(
                f"'{path}': metadata '{key}.dtype' is {entry['dtype']!r}, not one of {', '.join(DTYPES)}; {_EDITED}"
            )
        shape = entry["shape"]
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) for v in shape)):
            raise DBDError(f"'{path}': metadata '{key}.shape' {shape!r} is not a 4-D shape; {_EDITED}")
        channels = shape[1] if entry["layout"] == "NCHW" else shape[3]
        if channels != (3 if key == "input" else 1):
            raise DBDError(
                f"'{path}': metadata '{key}.layout' {entry['layout']} contradicts '{key}.shape' {shape}; {_EDITED}"
            )
        _quantization(entry, key, path)
    spatial = inp["shape"][2:] if inp["layout"] == "NCHW" else inp["shape"][1:3]
    if list(inp["size"]) != spatial:
        raise DBDError(
            f"'{path}': metadata 'input.size' {inp['size']} contradicts 'input.shape' {inp['shape']}; {_EDITED}"
        )
    if inp["normalization"] not in (NORMALIZATION_FOLDED, NORMALIZATION_EXTERNAL):
        raise DBDError(f"'{path}': metadata 'input.normalization' is {inp['normalization']!r}; {_EDITED}")
    for key, other in (("mean", "mean"), ("std", "std"), ("pixel_scale", "pixel_scale"), ("size", "input_size")):
        if other in prep and not _same(inp[key], prep[other]):
            raise DBDError(
                f"'{path}': metadata 'input.{key}' {inp[key]} contradicts 'preprocess.{other}' {prep[other]}; {_EDITED}"
            )
    if "layout" in prep and prep["layout"] != inp["layout"]:
        raise DBDError(
            f"'{path}': metadata 'input.layout' {inp['layout']} contradicts 'preprocess.layout' {prep['layout']}; {_EDITED}"
        )
    try:
        std = np.asarray(inp["std"], np.float64)
    except (TypeError, ValueError):
        std = np.zeros(0)
    if std.shape != (3,) or not (np.isfinite(std).all() and (std > 0).all()):
        raise DBDError(f"'{path}': metadata 'input.std' {inp['std']} must be positive numbers; {_EDITED}")
    if out["meaning"] != OUTPUT_MEANING or prep.get("output", OUTPUT_MEANING) != OUTPUT_MEANING:
        raise DBDError(
            f"'{path}': metadata 'output.meaning' is {out['meaning']!r}; this dbd reads only {OUTPUT_MEANING!r} "
            f"maps; {_EDITED}"
        )
    if out.get("blur_value", 1) != 1 or isinstance(out.get("blur_value"), bool):
        raise DBDError(
            f"'{path}': metadata 'output.blur_value' is {out.get('blur_value')!r}, but every dbd map has "
            f"1 = out of focus; {_EDITED}"
        )
    if "value_range" in out and not _same(out["value_range"], [0.0, 1.0]):
        raise DBDError(f"'{path}': metadata 'output.value_range' {out['value_range']} is not [0, 1]; {_EDITED}")


def check_graph_io(meta: dict[str, Any], path: str | Path, key: str, dtype: Any, quantization: Any = None) -> None:
    """A plug-in's runner checks the loaded graph against the metadata: `key` 'input' or 'output',
    the graph's `dtype` there and its (scale, zero_point) quantisation (None or scale 0: none)."""
    entry = meta[key]
    graph = np.dtype(dtype).name
    if graph != entry["dtype"]:
        raise DBDError(
            f"'{path}': metadata '{key}.dtype' is {entry['dtype']} but the graph's {key} is {graph}; {_EDITED}"
        )
    declared = entry["quantization"]
    actual = tuple(quantization) if quantization is not None and quantization[0] else None
    if (declared is None) != (actual is None) or (
        actual is not None and (not _same(declared["scale"], actual[0]) or declared["zero_point"] != actual[1])
    ):
        shown = f"scale {actual[0]:g}, zero point {actual[1]}" if actual else "none"
        raise DBDError(
            f"'{path}': metadata '{key}.quantization' {declared} contradicts the graph's ({shown}); {_EDITED}"
        )


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
        raise DBDError(
            f"images are {x.shape[2]}x{x.shape[1]} but the model takes {inp['size'][1]}x{inp['size'][0]}; "
            f"resize them first (PreprocessSpec.model_input)"
        )
    if inp["normalization"] == NORMALIZATION_FOLDED:
        x = to_pixels(x, inp["pixel_scale"])  # plain pixels, 0..255
    else:
        x = normalize(x, inp["mean"], inp["std"])
    x = to_layout(x, inp["layout"])
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
    "METADATA_FORMAT",
    "METADATA_KEY",
    "METADATA_SCHEMA",
    "NORMALIZATION_EXTERNAL",
    "NORMALIZATION_FOLDED",
    "PRECISIONS",
    "REQUIRED_INPUT_KEYS",
    "REQUIRED_KEYS",
    "REQUIRED_OUTPUT_KEYS",
    "check_graph_io",
    "check_metadata",
    "decode_output",
    "encode_input",
    "file_format",
    "read_metadata",
]
