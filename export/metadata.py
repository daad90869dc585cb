"""Building the "dbd" metadata document every exported file carries (schema: dbd.runtime.metadata).

The format modules say what their file looks like (tensor names, layout, dtypes, quantisation, the
tools used); everything else (arch, preprocessing, training data, checkpoint hash and metrics)
comes from the job, i.e. from the checkpoint's model card, so it is written in one place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from dbd.core import sha256_file
from dbd.runtime.metadata import METADATA_FORMAT, NORMALIZATION_EXTERNAL, NORMALIZATION_FOLDED, check_metadata
from dbd.runtime.spec import OUTPUT_MEANING

from .base import ExportJob


def dbd_version() -> str:
    try:
        return importlib.metadata.version("dbd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder (a package format): relative paths and contents in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(item)))
    return digest.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def input_entry(
    job: ExportJob, name: str, layout: str, dtype: str, folded: bool, quantization: dict[str, float | int] | None
) -> dict[str, Any]:
    spec = job.spec
    h, w = spec.input_size
    shape = [1, 3, h, w] if layout == "NCHW" else [1, h, w, 3]
    resize = f"RGB photo resized bilinearly (half-pixel centres, aspect ratio stretched) to {w}x{h}, {layout}"
    if folded:
        if quantization:
            feed = f"feed {dtype} = round(pixel / {quantization['scale']:g}) + {quantization['zero_point']}" + (
                " (= pixel - 128)" if quantization == {"scale": 1.0, "zero_point": -128} else ""
            )
        else:
            feed = f"feed the pixels 0..255 as {dtype}"
        contract = f"{resize}; the graph applies /255 and (x - mean) / std itself; {feed}"
        value_range = [0.0, float(spec.pixel_scale)]
    else:
        contract = f"{resize}; feed (pixel / 255 - mean) / std per channel as {dtype}"
        value_range = None
    return {
        "name": name,
        "shape": shape,
        "layout": layout,
        "dtype": dtype,
        "color_order": spec.channel_order,
        "size": [h, w],
        "normalization": NORMALIZATION_FOLDED if folded else NORMALIZATION_EXTERNAL,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "pixel_scale": spec.pixel_scale,
        "resize": spec.resize,
        "value_range": value_range,
        "quantization": quantization,
        "contract": contract,
    }


def output_entry(
    job: ExportJob, name: str, layout: str, dtype: str, quantization: dict[str, float | int] | None
) -> dict[str, Any]:
    h, w = job.spec.input_size
    shape = [1, 1, h, w] if layout == "NCHW" else [1, h, w, 1]
    decode = (
        f"P = ({dtype} value - {quantization['zero_point']}) * {quantization['scale']:g}"
        if quantization
        else f"P = the {dtype} value"
    )
    return {
        "name": name,
        "shape": shape,
        "layout": layout,
        "dtype": dtype,
        "quantization": quantization,
        "meaning": OUTPUT_MEANING,
        "blur_value": 1,
        "value_range": [0.0, 1.0],
        "contract": f"per-pixel probability that the pixel is out of focus (1 = blur); {decode}; "
        f"resize bilinearly back to the photo",
    }


def build_metadata(
    job: ExportJob,
    file_format: str,
    precision: str,
    quantization: str,
    inp: dict[str, Any],
    out: dict[str, Any],
    tools: dict[str, str],
    calibrated: bool,
) -> dict[str, Any]:
    card = job.card
    preprocess = {**job.spec.to_dict(), "layout": inp["layout"]}
    float_modules = list(job.int8_float) if precision == "int8" and calibrated else []
    if float_modules:  # calibrated int8 honours --int8-float; weight-only int8 (not calibrated) does not
        quantization += f"; kept in float32 for accuracy: {', '.join(float_modules)}"
    doc = {
        "format": METADATA_FORMAT,
        "dbd_version": dbd_version(),
        "model": {"arch": job.arch, "config": card.get("config", {})},
        "file": {
            "format": file_format,
            "precision": precision,
            "quantization": quantization,
            "float_modules": float_modules,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tools": tools,
        },
        "input": inp,
        "output": out,
        "preprocess": preprocess,
        "source_checkpoint": {"file": job.weights.name, "sha256": job.weights_sha256, "created": card.get("created")},
        "training": card.get("training", {}),
        "metrics": card.get("metrics", {}),
        "calibration": ({k: v for k, v in job.calibration.describe().items() if k != "names"} if calibrated else None),
    }
    check_metadata(doc)
    return doc


def float_nchw_metadata(
    job: ExportJob,
    file_format: str,
    precision: str,
    quantization: str,
    names: tuple[str, str],
    tools: dict[str, str],
    calibrated: bool,
) -> dict[str, Any]:
    """The metadata of a file that takes the normalised float32 NCHW tensor (input `names[0]`) and
    returns float32 P(blur) (output `names[1]`): every format but the camera-native .tflite."""
    inp = input_entry(job, names[0], "NCHW", "float32", folded=False, quantization=None)
    out = output_entry(job, names[1], "NCHW", "float32", quantization=None)
    return build_metadata(job, file_format, precision, quantization, inp, out, tools, calibrated=calibrated)


def dumps(doc: dict[str, Any]) -> str:
    """The compact JSON string that goes into the file."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
