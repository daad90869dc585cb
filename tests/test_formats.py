"""Export formats are plug-ins: the registry finds dbd's own formats through the `dbd.formats`
entry-point group without importing any converter, and a format defined here, in the test, goes
through export (dbd.export.export_model) -> verify -> dbd.runtime.Predictor -> a dbd-bench row
(dbd.benchmarks.run) through public interfaces only, like the built-in ones.

The toy format `.npzmodel` is a zip archive of the model's state dict (safetensors) and the "dbd"
metadata JSON; its runner rebuilds the network from the metadata's model entry and runs it with torch.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from dbd.core import DBDError
from dbd.export import export_model
from dbd.export.metadata import build_metadata, dumps, input_entry, output_entry
from dbd.models import create_model
from dbd.models.checkpoint import save_checkpoint
from dbd.runtime import Predictor, read_metadata
from dbd.runtime.engines.shared import package_versions
from dbd.runtime.formats import (
    ENTRY_POINT_GROUP,
    Availability,
    FileFormat,
    FormatOption,
    find_format,
    get_format,
    list_formats,
    register_format,
    unregister_format,
)
from dbd.runtime.metadata import METADATA_KEY
from dbd.runtime.runners import ExportedRunner
from dbd.runtime.spec import PreprocessSpec

BUILT_IN = ("onnx", "tflite", "coreml")
MODEL_ENTRY, METADATA_ENTRY = "weights.safetensors", f"{METADATA_KEY}.json"


# ---- the toy format ------------------------------------------------------------------------------


class NpzRunner(ExportedRunner):
    format = "npzmodel"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        if threads:
            torch.set_num_threads(threads)
        self.module = load_network(path, self.info).to(device)
        self.device = device

    def run_one(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


def weights_bytes(model: torch.nn.Module) -> bytes:
    return safetensors.torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()})


def load_network(path: Path, meta: dict[str, Any]) -> torch.nn.Module:
    """The network the archive holds: built from its metadata's model entry, weights from the archive."""
    with zipfile.ZipFile(path) as archive:
        state = safetensors.torch.load(archive.read(MODEL_ENTRY))
    model = create_model(meta["model"]["arch"], **meta["model"]["config"])
    model.load_state_dict(state)
    return model.eval()


class NpzFormat(FileFormat):
    name = "npzmodel"
    suffix = ".npzmodel"
    precisions = ("fp32",)
    default_precision = "fp32"
    runtime_modules = ("torch",)
    options = (FormatOption("npz-compression", "zip compression of the archive", "stored", ("stored", "deflated")),)

    def read_metadata(self, path: Path) -> str | None:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                return archive.read(METADATA_ENTRY).decode("utf-8") if METADATA_ENTRY in names else None
        except zipfile.BadZipFile as err:
            raise ValueError(str(err)) from None

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> NpzRunner:
        return NpzRunner(path, threads, device)

    def tools(self) -> dict[str, str]:
        return package_versions("torch")

    def prepare(self, job) -> None:
        self._weights(job)

    def _weights(self, job) -> bytes:
        """The conversion every precision shares, made once per job: the weights as safetensors bytes."""
        return job.memo(self, lambda: weights_bytes(job.model))

    def export(self, job, precision: str, dest: Path) -> dict[str, Any]:
        meta = build_metadata(
            job,
            self.name,
            precision,
            "none (float32)",
            input_entry(job, "input", "NCHW", "float32", folded=False, quantization=None),
            output_entry(job, "blur_prob", "NCHW", "float32", quantization=None),
            self.tools(),
            calibrated=self.needs_calibration(precision),
        )
        deflated = self.option(job, "npz_compression") == "deflated"
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED) as archive:
            archive.writestr(MODEL_ENTRY, self._weights(job))
            archive.writestr(METADATA_ENTRY, dumps(meta))
        return meta

    def check_structure(self, path: Path, meta: dict[str, Any]) -> None:
        with zipfile.ZipFile(path) as archive:
            if MODEL_ENTRY not in archive.namelist():
                raise DBDError(f"'{path}' holds no {MODEL_ENTRY}; re-export it")

    def describe(self, path: Path) -> dict[str, Any]:
        model = load_network(path, read_metadata(path))
        layers = collections.Counter(type(m).__name__ for m in model.modules() if not list(m.children()))
        return {"ops": dict(layers.most_common(5)), "inputs": ["input"], "outputs": ["blur_prob"]}


class PhoneOnlyFormat(NpzFormat):
    """The same files under another suffix, on a host that cannot run them."""

    name = "npzphone"
    suffix = ".npzphone"

    def available(self) -> Availability:
        return Availability(False, "npzphone files run only on the phone")


@pytest.fixture
def toy_formats():
    formats = [register_format(NpzFormat()), register_format(PhoneOnlyFormat())]
    yield formats
    for fmt in formats:  # other test modules see only the installed formats
        unregister_format(fmt.name)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("dbd_student")
    torch.nn.init.constant_(model.head.bias, 0.0)  # a map that depends on the image
    path = tmp_path_factory.mktemp("ckpt") / "student.safetensors"
    save_checkpoint(path, model, {"preprocess": PreprocessSpec.for_model(model, (64, 64)).to_dict()})
    return path


# ---- the registry ---------------------------------------------------------------------------------


def test_the_built_in_formats_are_discovered_through_the_entry_point_group():
    declared = {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert set(BUILT_IN) <= set(declared), "reinstall dbd (pip install -e .) so its entry points register"
    for name in BUILT_IN:
        assert declared[name].value == f"dbd.export.{name}_format:FORMAT"
        assert get_format(name) is declared[name].load()
    assert [n for n in list_formats() if n in BUILT_IN] == list(BUILT_IN)  # their `order`: `--format all`
    assert find_format("exports/m.TFLITE") is get_format("tflite") and find_format("m.safetensors") is None
    assert get_format("onnx").needs_calibration("int8") and not get_format("coreml").needs_calibration("int8")
    assert get_format("coreml").directory and not get_format("onnx").directory


def test_looking_formats_up_imports_no_converter_and_the_interface_no_plug_in():
    code = (
        "import sys; import dbd.export.base; loaded = sorted(m for m in sys.modules if m.endswith('_format')); "
        "from dbd.runtime.formats import list_formats; names = list_formats(); "
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'coremltools', 'litert_torch', 'ai_edge_litert', "
        "'ai_edge_quantizer', 'ncnn', 'pnnx', 'executorch', 'torchao') if m in sys.modules]; print(loaded, heavy, names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith("[] [] ['onnx', 'tflite', 'coreml'"), out


def test_registration_refuses_taken_names_and_suffixes_and_bad_declarations(toy_formats):
    class Clash(NpzFormat):
        name = "npzclash"
        suffix = ".onnx"

    class Reserved(NpzFormat):
        name = "all"
        suffix = ".npzall"

    class NoDefault(NpzFormat):
        name = "npznodefault"
        suffix = ".npznodefault"
        default_precision = "int8"

    class SameName(NpzFormat):
        suffix = ".npzother"

    for cls, fragment in (
        (Clash, "already the suffix of format 'onnx'"),
        (Reserved, "other than all"),
        (NoDefault, "default_precision 'int8'"),
        (SameName, "already taken"),
    ):
        with pytest.raises(DBDError, match=fragment):
            register_format(cls())
    assert register_format(NpzFormat()).name == "npzmodel"  # the same class again: replaced, no error
    with pytest.raises(DBDError, match="did you mean 'npzmodel'"):
        get_format("npzmodle")


# ---- a plug-in through export, verify, Predictor and dbd-bench ------------------------------------------


def test_a_plug_in_format_exports_verifies_predicts_and_benchmarks(toy_formats, student, tmp_path, data_root):
    from dbd.benchmarks import run

    out = tmp_path / "exports"
    report = export_model(
        weights=student,
        formats="npzmodel",
        precisions="all",
        out=out,
        imgsz=64,
        calib="dut",
        calib_n=1,
        parity_n=2,
        options={"npz_compression": "deflated"},
    )
    assert report.ok, [o.error for o in report.outcomes]
    [outcome] = report.outcomes
    path = out / "dbd_student_64_fp32.npzmodel"
    assert outcome.path == path and path.is_file() and not outcome.calibrated
    # verify ran against PyTorch on the parity images: TorchScript computes what the model computes
    assert outcome.parity["n_images"] == 2 and outcome.parity["max_abs"] <= 1e-4
    assert outcome.description["ops"] and outcome.size == path.stat().st_size
    entry = json.loads(report.path.read_text())["files"][path.name]
    assert entry["format"] == "npzmodel" and entry["verified"] == "parity" and entry["calibration"] is None
    with zipfile.ZipFile(path) as archive:  # the format's own option reached its export
        assert {i.filename: i.compress_type for i in archive.infolist()}[MODEL_ENTRY] == zipfile.ZIP_DEFLATED
    meta = read_metadata(path)
    assert meta["file"]["format"] == "npzmodel" and meta["input"]["size"] == [64, 64]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"

    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    from_plug_in = Predictor(weights=path, threads=1).predict(image)
    from_checkpoint = Predictor(weights=student, threads=1).predict(image)
    assert from_plug_in.shape == (90, 120) and np.abs(from_plug_in - from_checkpoint).max() < 1e-4

    phone = tmp_path / "dbd_student_64_fp32.npzphone"
    shutil.copy(path, phone)
    with pytest.raises(DBDError, match="cannot run on this machine: npzphone files run only on the phone"):
        Predictor(weights=phone)

    result = run(
        data="dut",
        split="",
        teacher=student,
        student=student,
        exports=out,
        weights=[phone],
        runs=0,
        limit=2,
        report=None,
    )
    rows = {row["id"]: row for row in result.rows}
    # exports/ found by its suffix; each file scored with its own last step and bilinear
    assert set(rows) == {f"dbd_student:{f}:fp32:{m}" for f in ("torch", "npzmodel") for m in ("guided", "bilinear")}
    row = rows["dbd_student:npzmodel:fp32:guided"]
    assert row["file"] == str(path) and row["vs_student"]["psnr"] > 60
    assert row["metrics"]["mae"] == pytest.approx(rows["dbd_student:torch:fp32:guided"]["metrics"]["mae"], abs=1e-5)
    assert f"{phone}: not run: npzphone files run only on the phone" in result.notes


def test_a_file_this_host_cannot_run_is_not_exported_unchecked_unless_no_host_could(toy_formats, student, tmp_path):
    """Parity through the runner is the pipeline's: a format whose runtime is missing here fails its
    export (nothing written); only a format no export host can run (CoreML off macOS) declares that
    its files are verified by structure alone, and the report says so."""
    options = dict(weights=student, formats="npzphone", precisions="fp32", imgsz=64, calib="dut", calib_n=1, parity_n=2)
    report = export_model(**options, out=tmp_path / "refused")
    [outcome] = report.outcomes
    assert not outcome.ok and "cannot be checked against PyTorch here: npzphone files run only on the phone" in (
        outcome.error
    )
    assert not (tmp_path / "refused" / "dbd_student_64_fp32.npzphone").exists()

    phone_only = toy_formats[1]
    phone_only.structure_only_where_unavailable = True  # an instance attribute: the class stays as it was
    report = export_model(**options, out=tmp_path / "structure")
    [outcome] = report.outcomes
    assert outcome.ok and outcome.parity is None
    assert outcome.notes == ["parity not measured: npzphone files run only on the phone"]


def test_the_command_line_offers_plug_in_formats_and_their_options(toy_formats, student, tmp_path, capsys):
    from dbd.export.cli import build_parser, main

    help_text = build_parser().format_help()
    assert "npzmodel" in help_text and "--npz-compression" in help_text
    assert main(["--format", "npzmodle", "--weights", str(student), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'npzmodel'?" in err
    with pytest.raises(DBDError, match="unknown export option 'npz_compresion'; did you mean 'npz_compression'"):
        export_model(weights=student, formats="npzmodel", out=tmp_path / "o", options={"npz_compresion": "stored"})
    assert not (tmp_path / "o").exists()


def test_a_file_of_an_unregistered_format_is_refused_naming_the_installed_ones(tmp_path):
    path = tmp_path / "model.npzmodel"
    path.write_bytes(b"PK")
    with pytest.raises(DBDError) as err:
        read_metadata(path)
    assert str(path) in str(err.value) and "a .onnx, .tflite, .mlpackage, .ncnn or .pte export" in str(err.value)
