"""dbd-export: every format and precision converts and passes its parity check on real images, the
metadata round-trips through read_metadata, a failed check keeps the previous file, non-builtin
and layout-transpose TFLite ops are refused, and every bad flag is answered with one line.

Conversions run once per format (module fixtures) on a randomly initialised student at 64x64
with 4 CUHK-TR-1 calibration and 4 parity images; the full-size run of every format is `slow`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dbd.core import DBDError
from dbd.data.datasets import open_dataset
from dbd.export import onnx_format, tflite_flatbuffer, tflite_format
from dbd.export.base import get_format, list_formats
from dbd.export.calibration import _is_test_split, load_images, open_calibration_dataset
from dbd.export.cli import main, make_job
from dbd.export.pipeline import REPORT_NAME, export_one, replace_path, verify
from dbd.models import create_model
from dbd.models.checkpoint import load_checkpoint, read_card, save_checkpoint
from dbd.runtime.metadata import METADATA_FORMAT, decode_output, encode_input, read_metadata
from dbd.runtime.spec import PreprocessSpec

SMALL = ["--imgsz", "64", "--calib", "cuhk", "--calib-n", "4", "--parity-n", "4"]
PRECISIONS = ("fp32", "fp16", "int8")
CARD = {
    "training": {"data": "test fixture: random initialisation", "command": "pytest"},
    "metrics": {"validation": {"fbeta_fixed": 0.5, "mae": 0.5}},
}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): sha256(p) for p in sorted(Path(path).rglob("*")) if p.is_file()}


def run_quietly(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("dbd-export: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def student_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("dbd_student")
    path = tmp_path_factory.mktemp("ckpt") / "student.safetensors"
    save_checkpoint(path, model, {"preprocess": PreprocessSpec.for_model(model).to_dict(), **CARD})
    return path


def _export(fmt: str, student_ckpt: Path, tmp_path_factory, data_root) -> tuple[int, Path, str, str]:
    out = tmp_path_factory.mktemp(fmt)
    code, stdout, stderr = run_quietly(
        ["--format", fmt, "--precision", "all", "--weights", str(student_ckpt), *SMALL, "--out", str(out)]
    )
    return code, out, stdout, stderr


@pytest.fixture(scope="module")
def onnx_export(student_ckpt, tmp_path_factory, data_root):
    return _export("onnx", student_ckpt, tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def tflite_export(student_ckpt, tmp_path_factory, data_root):
    return _export("tflite", student_ckpt, tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def coreml_export(student_ckpt, tmp_path_factory, data_root):
    return _export("coreml", student_ckpt, tmp_path_factory, data_root)


def check_common(code, out, stdout, stderr, student_ckpt, suffix) -> dict:
    assert code == 0, stderr + stdout
    report = json.loads((out / REPORT_NAME).read_text())
    card = read_card(student_ckpt)
    for precision in PRECISIONS:
        path = out / f"dbd_student_64_{precision}{suffix}"
        assert path.exists(), stdout
        entry = report["files"][path.name]
        assert entry["precision"] == precision and entry["size_bytes"] > 0 and entry["conversion_s"] >= 0
        assert len(entry["sha256"]) == 64
        if path.is_file():
            assert entry["sha256"] == sha256(path) and entry["size_bytes"] == path.stat().st_size
        meta = read_metadata(path)
        assert meta["format"] == METADATA_FORMAT and meta["file"]["precision"] == precision
        assert meta["model"]["arch"] == "dbd_student" and meta["output"]["meaning"] == "blur_probability"
        assert meta["output"]["blur_value"] == 1
        assert meta["source_checkpoint"]["sha256"] == sha256(student_ckpt)
        assert meta["training"] == card["training"] and meta["metrics"] == card["metrics"]
        assert meta["input"]["size"] == [64, 64] and meta["input"]["color_order"] == "RGB"
        assert f"dbd-predict --weights {path}" in stdout or f"dbd-predict --weights {path.name}" in stdout
        assert "dbd-bench --weights" in stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    return report


def test_onnx_every_precision_passes_parity_and_carries_metadata(onnx_export, student_ckpt):
    import onnx

    code, out, stdout, stderr = onnx_export
    report = check_common(code, out, stdout, stderr, student_ckpt, ".onnx")
    for precision in PRECISIONS:
        path = out / f"dbd_student_64_{precision}.onnx"
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["dbd"]) == read_metadata(path)
        meta = read_metadata(path)
        assert meta["input"]["layout"] == "NCHW" and meta["input"]["normalization"] == "external"
        assert meta["input"]["mean"] == [0.485, 0.456, 0.406]
        parity = report["files"][path.name]["parity"]
        assert parity["n_images"] == 4
        assert {"max_abs", "psnr_db", "d_mae", "d_fbeta"} <= set(parity)
    files = report["files"]
    assert files["dbd_student_64_fp32.onnx"]["parity"]["max_abs"] <= 1e-4
    assert files["dbd_student_64_fp16.onnx"]["parity"]["psnr_db"] >= 40
    assert files["dbd_student_64_int8.onnx"]["parity"]["psnr_db"] >= 30
    assert read_metadata(out / "dbd_student_64_int8.onnx")["calibration"]["data"] == "cuhk:train"
    assert "QuantizeLinear" in files["dbd_student_64_int8.onnx"]["ops"]


def test_tflite_is_camera_native_builtin_only_and_int8_is_pixel_minus_128(tflite_export, student_ckpt, data_root):
    from ai_edge_litert.interpreter import Interpreter

    code, out, stdout, stderr = tflite_export
    report = check_common(code, out, stdout, stderr, student_ckpt, ".tflite")
    assert "CONV_2D" in stdout and "0 layout Transpose" in stdout  # the op histogram is printed
    for precision in PRECISIONS:
        path = out / f"dbd_student_64_{precision}.tflite"
        data = path.read_bytes()
        # The metadata, read with the schema's object API, is what the stdlib reader returns.
        model = tflite_flatbuffer.read_model(data)
        entry = next(m for m in model.metadata if m.name == b"dbd")
        assert json.loads(bytes(model.buffers[entry.buffer].data).decode()) == read_metadata(path)
        ops, custom, transposes = tflite_flatbuffer.op_histogram(data)
        assert not custom and not any(tflite_flatbuffer.is_layout_transpose(p, s) for p, s in transposes)
        assert "MUL" not in ops  # the normalisation is folded into the input convolution (tflite_rewrites)
        assert report["files"][path.name]["ops"] == dict(ops.most_common())
        meta = read_metadata(path)
        assert meta["input"]["normalization"] == "folded" and meta["input"]["layout"] == "NHWC"
    meta = read_metadata(out / "dbd_student_64_int8.tflite")
    assert (
        meta["input"]["quantization"] == {"scale": 1.0, "zero_point": -128}
        and "pixel - 128" in meta["input"]["contract"]
    )
    assert meta["output"]["quantization"] == {"scale": 1 / 256, "zero_point": -128}
    assert meta["calibration"]["n_images"] == 4

    # The phone's view: int8 = pixel - 128 in, (q + 128) / 256 out, no normalisation code anywhere.
    interpreter = Interpreter(model_path=str(out / "dbd_student_64_int8.tflite"))
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and inp["quantization"] == (1.0, -128) and list(inp["shape"]) == [1, 64, 64, 3]
    assert outp["dtype"] == np.int8 and outp["quantization"] == (1 / 256, -128)
    image, _ = open_dataset("cuhk", split="train")[0]
    spec = PreprocessSpec(input_size=(64, 64))
    pixels = np.clip(np.rint(spec.resize_image(image.astype(np.float32))), 0, 255)
    interpreter.set_tensor(inp["index"], (pixels - 128).astype(np.int8)[None])
    interpreter.invoke()
    prob = (interpreter.get_tensor(outp["index"]).astype(np.float32)[0, ..., 0] + 128) / 256
    model, _ = load_checkpoint(student_ckpt)
    with torch.no_grad():
        ref = model(torch.from_numpy(spec.preprocess(image)))[0, 0].numpy()
    assert np.abs(prob - ref).mean() < 0.01


def test_coreml_every_precision_validated_on_linux_with_metadata(coreml_export, student_ckpt):
    import coremltools as ct

    code, out, stdout, stderr = coreml_export
    report = check_common(code, out, stdout, stderr, student_ckpt, ".mlpackage")
    assert "macOS-only" in stdout
    for precision in PRECISIONS:
        path = out / f"dbd_student_64_{precision}.mlpackage"
        model = ct.models.MLModel(str(path), skip_model_load=True)
        assert json.loads(model.user_defined_metadata["dbd"]) == read_metadata(path)
        entry = report["files"][path.name]
        assert entry["verified"] == "structure only" and entry["parity"] is None
        spec = model.get_spec()
        assert [i.name for i in spec.description.input] == ["input"]
        assert [o.name for o in spec.description.output] == ["blur_prob"]
    int8 = get_format("coreml").describe(out / "dbd_student_64_int8.mlpackage")
    assert any(k.startswith("int8") for k in int8["weight_dtypes"])
    fp16 = get_format("coreml").describe(out / "dbd_student_64_fp16.mlpackage")
    assert fp16["weight_dtypes"].get("float16", 0) > fp16["weight_dtypes"].get("float32", 0)


def test_onnx_int8_keeps_parity_with_realistic_activations(tmp_path, data_root):
    """ImageNet encoder + a sharp head: a map that spans [0, 1]. With int8 (U8S8) weights onnxruntime's
    integer kernels saturate on x86 CPUs without VNNI (PSNR 29 dB here); the U8U8 export stays >= 30 dB."""
    torch.manual_seed(0)
    model = create_model("dbd_student", pretrained=True)
    with torch.no_grad():
        model.head.weight.mul_(20.0)
        model.head.bias.zero_()
    ckpt = tmp_path / "sharp.safetensors"
    save_checkpoint(ckpt, model, {"preprocess": PreprocessSpec.for_model(model).to_dict(), **CARD})
    code, stdout, stderr = run_quietly(
        [
            "--format",
            "onnx",
            "--precision",
            "int8",
            "--weights",
            str(ckpt),
            *SMALL,
            "--onnx-exporter",
            "legacy",
            "--int8-max-dfbeta",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, stderr + stdout
    report = json.loads((tmp_path / REPORT_NAME).read_text())["files"]["dbd_student_64_int8.onnx"]
    assert report["parity"]["psnr_db"] >= 30 and report["parity"]["n_images"] == 4
    assert "legacy" in read_metadata(tmp_path / "dbd_student_64_int8.onnx")["file"]["tools"]["exporter"]


# ---- mixed precision: the modules int8 keeps in float ------------------------------------------


def test_float_modules_are_located_by_their_converter_names():
    from dbd.export.mixed_precision import conv_call_order, float_convs
    from dbd.export.tflite_format import litert_scopes

    model = create_model("dbd_student").eval()
    x = torch.zeros(1, 3, 64, 64)
    scopes = litert_scopes(model, x, model.int8_float_modules)
    assert scopes["encoder.features.1"] == (
        "/dbd.models.mobilenetv2.MobileNetV2_encoder/dbd.models.mobilenetv2.InvertedResidual_1/"
    )
    calls = conv_call_order(model, x)
    assert calls[0] == ("encoder.features.0.0", (32, 3, 3, 3))
    assert not any(name.startswith("side_heads") for name, _ in calls)  # training-only heads are not exported
    assert float_convs(calls, model.int8_float_modules) == [0, 1, 2]  # stem, depthwise, projection
    with pytest.raises(DBDError, match="never called"):
        litert_scopes(model, x, ["side_heads.0"])


def _dequantize_ops(path: Path) -> int:
    return tflite_flatbuffer.op_histogram(path.read_bytes())[0].get("DEQUANTIZE", 0)


def test_int8_keeps_the_student_stem_in_float_and_none_means_full_int8(tflite_export, onnx_export, small_job, tmp_path):
    import onnx

    _, tfl_dir, _, _ = tflite_export
    mixed = tfl_dir / "dbd_student_64_int8.tflite"
    assert (
        "kept in float32 for accuracy: encoder.features.0, encoder.features.1"
        in read_metadata(mixed)["file"]["quantization"]
    )
    assert _dequantize_ops(mixed) >= 1 and "float32" in tflite_format.TFLiteFormat().describe(mixed)["tensor_dtypes"]

    full_job = dataclasses.replace(small_job, int8_float=())
    full = tmp_path / "full.tflite"
    tflite_format.TFLiteFormat().export(full_job, "int8", full)
    assert _dequantize_ops(full) == 0
    assert "kept in float" not in read_metadata(full)["file"]["quantization"]
    assert read_metadata(full)["file"]["float_modules"] == []
    assert read_metadata(mixed)["file"]["float_modules"] == ["encoder.features.0", "encoder.features.1"]

    # ONNX: the first three Convs read float weights directly, the fourth a DequantizeLinear.
    _, onnx_dir, _, _ = onnx_export
    graph = onnx.load(str(onnx_dir / "dbd_student_64_int8.onnx")).graph
    initializers = {t.name for t in graph.initializer}
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert [c.input[1] in initializers for c in convs[:4]] == [True, True, True, False]
    assert producers[convs[3].input[1]] == "DequantizeLinear"


# ---- failures keep the previous file -----------------------------------------------------------


class Halved(nn.Module):
    """A wrong normalisation (std doubled) in front of the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x * 0.5)


def test_failed_parity_exits_1_and_keeps_the_previous_file(onnx_export, student_ckpt, tmp_path, monkeypatch):
    _, good_dir, _, _ = onnx_export
    name = "dbd_student_64_fp32.onnx"
    shutil.copy(good_dir / name, tmp_path / name)
    before = sha256(tmp_path / name)
    original = onnx_format._export_torch
    monkeypatch.setattr(
        onnx_format,
        "_export_torch",
        lambda job, path: original(dataclasses.replace(job, model=Halved(job.model)), path),
    )
    code, stdout, stderr = run_quietly(
        [
            "--format",
            "onnx",
            "--weights",
            str(student_ckpt),
            *SMALL,
            "--onnx-exporter",
            "legacy",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1
    line = one_line_error(stderr)
    assert name in line and "parity check failed" in line and "max|Δ|" in line
    assert "FAILED" in stdout and "previous file kept" in stdout
    assert sha256(tmp_path / name) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    assert (
        report["last_run"]["failed"][0]["file"] == name and report["last_run"]["failed"][0]["parity"]["max_abs"] > 1e-4
    )


@pytest.fixture(scope="module")
def small_job(student_ckpt, data_root):
    return make_job(student_ckpt, "64", "cuhk", 4, 4)


def _job_with_float_graph(small_job, data: bytes):
    job = dataclasses.replace(small_job)  # a job of its own: the float graph below is the tflite plug-in's
    job.memo(get_format("tflite"), lambda: data)
    return job


def test_tflite_int8_input_scale_other_than_pixel_minus_128_is_refused(tflite_export, small_job, tmp_path, monkeypatch):
    _, good_dir, _, _ = tflite_export
    name = "dbd_student_64_int8.tflite"
    shutil.copy(good_dir / name, tmp_path / name)
    before = sha256(tmp_path / name)
    # Reuse the verified float graph (no reconversion); calibrate the input over 0..510: scale 2.
    job = _job_with_float_graph(small_job, (good_dir / "dbd_student_64_fp32.tflite").read_bytes())
    monkeypatch.setattr(tflite_format, "PIXEL_RANGE", (0.0, 510.0))
    outcome = export_one(job, get_format("tflite"), "int8", tmp_path)
    assert not outcome.ok and "scale/zero-point" in outcome.error and "metadata says" in outcome.error
    assert "\n" not in outcome.error
    assert str(tmp_path / name) in outcome.error and ".tmp" not in outcome.error  # names the file the user asked for
    assert sha256(tmp_path / name) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tflite_wrong_folded_normalisation_fails_parity(tflite_export, small_job, tmp_path):
    """The normalisation lives in the stem convolution's weights and bias (tflite_rewrites.fold_input):
    a file whose stem forgot the "- mean / std" part (its bias) must fail parity, not ship."""
    from ai_edge_litert import schema_py_generated as schema

    _, good_dir, _, _ = tflite_export
    model = tflite_flatbuffer.read_model((good_dir / "dbd_student_64_fp32.tflite").read_bytes())
    subgraph = model.subgraphs[0]
    stem = next(
        op
        for op in subgraph.operators
        if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D
    )
    assert all(
        model.operatorCodes[op.opcodeIndex].builtinCode != schema.BuiltinOperator.MUL for op in subgraph.operators
    )  # folded: no multiply-add of the pixels in the graph
    bias = subgraph.tensors[stem.inputs[2]]
    buffer = model.buffers[bias.buffer]
    buffer.data = np.zeros(len(buffer.data) // 4, np.float32).view(np.uint8)
    job = _job_with_float_graph(small_job, tflite_flatbuffer.write_model(model))
    outcome = export_one(job, get_format("tflite"), "fp32", tmp_path)
    assert not outcome.ok and outcome.error.startswith("parity check failed") and "max|Δ|" in outcome.error
    assert outcome.parity["max_abs"] > 1e-4
    assert not list(tmp_path.iterdir())


def _mutated(data: bytes, mutate) -> bytes:
    model = tflite_flatbuffer.read_model(data)
    mutate(model)
    return tflite_flatbuffer.write_model(model)


def _set_op_code(model, op_index: int, builtin: int, custom: bytes | None = None) -> None:
    from ai_edge_litert import schema_py_generated as schema

    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.customCode = custom
    code.version = 1
    model.operatorCodes.append(code)
    model.subgraphs[0].operators[op_index].opcodeIndex = len(model.operatorCodes) - 1


def test_flex_custom_and_layout_transpose_ops_are_refused(tflite_export, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    _, good_dir, _, _ = tflite_export
    good = good_dir / "dbd_student_64_fp32.tflite"
    data = good.read_bytes()
    tflite_flatbuffer.check_ops(good, data)  # the real export passes

    flex = _mutated(data, lambda m: _set_op_code(m, 5, schema.BuiltinOperator.CUSTOM, b"FlexConv2D"))
    path = tmp_path / "flex.tflite"
    path.write_bytes(flex)
    with pytest.raises(DBDError, match=r"select-TensorFlow \(Flex\) ops \(FlexConv2D x1\)") as err:
        verify(None, get_format("tflite"), "fp32", path)  # verify refuses before running anything
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    custom = _mutated(data, lambda m: _set_op_code(m, 5, schema.BuiltinOperator.CUSTOM, b"MyOp"))
    with pytest.raises(DBDError, match="custom ops"):
        tflite_flatbuffer.check_ops(path, custom)

    def to_transpose(perm):
        def mutate(model):
            subgraph = model.subgraphs[0]
            pad = next(
                i
                for i, op in enumerate(subgraph.operators)
                if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.PAD
            )
            _set_op_code(model, pad, schema.BuiltinOperator.TRANSPOSE)
            perm_tensor = subgraph.tensors[subgraph.operators[pad].inputs[1]]
            buffer = schema.BufferT()
            buffer.data = np.asarray(perm, np.int32).view(np.uint8)
            model.buffers.append(buffer)
            perm_tensor.buffer = len(model.buffers) - 1

        return mutate

    with pytest.raises(DBDError, match="layout Transpose"):
        tflite_flatbuffer.check_ops(path, _mutated(data, to_transpose([0, 3, 1, 2])))
    before = tflite_flatbuffer.check_ops(path, data)["TRANSPOSE"]  # the separable upsample's matrix transposes
    counts = tflite_flatbuffer.check_ops(path, _mutated(data, to_transpose([0, 2, 1])))  # not a layout change
    assert counts["TRANSPOSE"] == before + 1


class _Broken(onnx_format.OnnxFormat):
    """The ONNX format with a converter that crashes half-way through writing the file."""

    name, suffix, precisions, default_precision = "broken", ".onnx", ("fp32",), "fp32"

    def export(self, job, precision, dest):
        Path(dest).write_bytes(b"half a fi")
        raise RuntimeError("converter crashed\nwith a multi-line message")

    def describe(self, path):
        return {}


def test_converter_crash_leaves_previous_file_and_no_temp(small_job, tmp_path):
    final = tmp_path / "dbd_student_64_fp32.onnx"
    final.write_bytes(b"previous export")
    outcome = export_one(small_job, _Broken(), "fp32", tmp_path)
    assert not outcome.ok and "RuntimeError: converter crashed with a multi-line message" in outcome.error
    assert "\n" not in outcome.error and "--verbose" in outcome.error
    assert final.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == [final.name]


def test_folder_replacement_swaps_the_whole_package(tmp_path):
    old, new = tmp_path / "m.mlpackage", tmp_path / ".m.tmp.mlpackage"
    (old / "Data").mkdir(parents=True)
    (old / "Data" / "w.bin").write_bytes(b"old")
    (old / "stale.json").write_text("{}")
    (new / "Data").mkdir(parents=True)
    (new / "Data" / "w.bin").write_bytes(b"new")
    assert replace_path(new, old) is True
    assert tree_digest(old) == {"Data/w.bin": hashlib.sha256(b"new").hexdigest()}
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]


# ---- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--format", "tflit"], "unknown format 'tflit'; did you mean 'tflite'?"),
        (["--format", "onnx", "--precision", "int9"], "unknown precision 'int9'; did you mean 'int8'?"),
        (["--precision", "fp33"], "did you mean 'fp32'?"),
        (["--calib", "cuhk:test"], "test split"),
        (["--calib", "cuhk:splits/cuhk_te1_test_100.txt"], "test split"),
        (["--calib", "cuhk:splits/son_pg2018_train_defocus_564.txt"], "are in the 'cuhk' test split"),
        (["--weights", "{missing}"], "does not exist"),
        (["--weights", "{pickle}"], "is a pickle"),
        (["--weights", "{discriminator}"], "not a blur-detection network"),
        (["--imgsz", "100"], "multiples of 32"),
        (["--calib-n", "0"], "--calib-n must be at least 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--int8-float", "encoder.feature.1"], "did you mean 'encoder.features.1'?"),
    ],
    ids=[
        "format",
        "precision",
        "precision-all-formats",
        "test-split",
        "test-split-file",
        "leaky-split",
        "missing-weights",
        "pickle-weights",
        "discriminator",
        "imgsz",
        "calib-n",
        "unknown-flag",
        "int8-float-module",
    ],
)
def test_bad_flags_are_answered_with_one_line(args, expected, student_ckpt, tmp_path, data_root):
    pickle = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(2)}, pickle)
    discriminator = tmp_path / "disc.safetensors"
    save_checkpoint(discriminator, create_model("dbd_discriminator"))
    values = {
        "{missing}": str(tmp_path / "nope.safetensors"),
        "{pickle}": str(pickle),
        "{discriminator}": str(discriminator),
    }
    args = [values.get(a, a) for a in args]
    if "--weights" not in args:
        args += ["--weights", str(student_ckpt)]
    code, stdout, stderr = run_quietly([*args, "--out", str(tmp_path / "out")])
    assert code == 2
    line = one_line_error(stderr)
    assert expected in line
    if "--weights" in args and args[args.index("--weights") + 1] != str(student_ckpt):
        assert args[args.index("--weights") + 1] in line  # names the file
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_default_weights_are_the_shipped_student(data_root, tmp_path):
    import hashlib

    from dbd.models.shipped import released_checkpoint

    code, stdout, stderr = run_quietly(
        [
            "--format",
            "onnx",
            "--precision",
            "fp32",
            "--imgsz",
            "64",
            "--calib-n",
            "2",
            "--parity-n",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, stderr + stdout
    meta = read_metadata(next(tmp_path.glob("*.onnx")))
    shipped = released_checkpoint("dbd_student")
    assert meta["source_checkpoint"]["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()


# ---- calibration and the metadata contract ---------------------------------------------------


def test_calibration_is_deterministic_disjoint_and_from_the_training_split(data_root):
    spec = PreprocessSpec(input_size=(64, 64))
    calib, parity = load_images("cuhk", spec, 8, 4)
    again, _ = load_images("cuhk:train", spec, 8, 4)
    assert calib.names == again.names and calib.source == "cuhk:train" and len(parity.masks) == 4
    assert not set(calib.names) & set(parity.names)
    train = {s.name for s in open_dataset("cuhk", split="train").samples}
    assert set(calib.names) | set(parity.names) <= train
    assert calib.unit.shape == (8, 64, 64, 3) and 0 <= calib.unit.min() and calib.unit.max() <= 1
    assert open_calibration_dataset("cuhk").split == "train"
    assert [_is_test_split(s) for s in ("test", "cuhk_te1_test_100.txt", "TE", "train", "latest.txt")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_encode_and_decode_follow_the_metadata_contract():
    spec = PreprocessSpec(input_size=(32, 32))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    unit = image.astype(np.float32)[None] / 255
    base = {"size": [32, 32], "mean": list(spec.mean), "std": list(spec.std), "pixel_scale": 255.0}
    external = {
        "input": {**base, "normalization": "external", "layout": "NCHW", "dtype": "float32", "quantization": None}
    }
    np.testing.assert_allclose(encode_input(external, unit), spec.preprocess(image), atol=1e-6)
    folded = {
        "input": {
            **base,
            "normalization": "folded",
            "layout": "NHWC",
            "dtype": "int8",
            "quantization": {"scale": 1.0, "zero_point": -128},
        }
    }
    np.testing.assert_array_equal(encode_input(folded, unit), (image.astype(np.int16) - 128).astype(np.int8)[None])
    out = {"output": {"layout": "NHWC", "quantization": {"scale": 1 / 256, "zero_point": -128}}}
    np.testing.assert_allclose(
        decode_output(out, np.array([-128, 0, 127], np.int8).reshape(1, 1, 3, 1)), [[[0.0, 0.5, 255 / 256]]]
    )


def test_read_metadata_refuses_missing_foreign_and_unmarked_files(tflite_export, onnx_export, tmp_path):
    import onnx
    from onnx import helper

    _, tflite_dir, _, _ = tflite_export
    _, onnx_dir, _, _ = onnx_export
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    (tmp_path / "noise.onnx").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "noise.tflite").write_bytes(b"\x00" * 64)
    good = (tflite_dir / "dbd_student_64_fp32.tflite").read_bytes()
    (tmp_path / "truncated.tflite").write_bytes(good[:2000])

    def drop_dbd(model):
        model.metadata = [m for m in model.metadata if m.name != b"dbd"]

    (tmp_path / "unmarked.tflite").write_bytes(_mutated(good, drop_dbd))
    (tmp_path / "empty.mlpackage").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    newer = onnx.load(str(onnx_dir / "dbd_student_64_fp32.onnx"))
    doc = json.loads(newer.metadata_props[0].value)
    newer.metadata_props[0].value = json.dumps({**doc, "format": "dbd-export/99"})
    onnx.save(newer, str(tmp_path / "newer.onnx"))
    cases = {
        "missing.onnx": "does not exist",
        "plain.onnx": "has no 'dbd' metadata",
        "noise.onnx": "not a valid .onnx",
        "noise.tflite": "not a TFLite flatbuffer",
        "truncated.tflite": "truncated or not a valid .tflite",
        "unmarked.tflite": "has no 'dbd' metadata",
        "empty.mlpackage": "not a readable .mlpackage",
        "notes.txt": "a .onnx, .tflite, .mlpackage, .ncnn or .pte export",
        "newer.onnx": "metadata format 'dbd-export/99'",
    }
    for name, expected in cases.items():
        with pytest.raises(DBDError) as err:
            read_metadata(tmp_path / name)
        message = str(err.value)
        assert expected in message and str(tmp_path / name) in message and "\n" not in message, (name, message)


# ---- the full-size run --------------------------------------------------------------------------


@pytest.mark.slow
def test_every_format_and_precision_at_full_size(student_ckpt, tmp_path, data_root):
    code, stdout, stderr = run_quietly(
        ["--format", "all", "--precision", "all", "--weights", str(student_ckpt), "--out", str(tmp_path)]
    )
    assert code == 0, stderr + stdout
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    formats = [get_format(name) for name in list_formats()]  # every registered format (plug-ins included)
    names = {f"dbd_student_320_{p}{f.suffix}" for f in formats for p in f.precisions}
    assert {f"dbd_student_320_{p}{s}" for p in PRECISIONS for s in (".onnx", ".tflite", ".mlpackage")} <= names
    assert set(report["files"]) == names
    for name in names:
        meta = read_metadata(tmp_path / name)
        assert meta["input"]["size"] == [320, 320]
        assert meta["calibration"] is None or meta["calibration"]["n_images"] == 64
        parity = report["files"][name]["parity"]
        assert parity is None or parity["n_images"] == 32
    # A second export of one file replaces it atomically and keeps the other report entries.
    code, _, stderr = run_quietly(["--format", "coreml", "--weights", str(student_ckpt), "--out", str(tmp_path)])
    assert code == 0, stderr
    assert set(json.loads((tmp_path / REPORT_NAME).read_text())["files"]) == names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
