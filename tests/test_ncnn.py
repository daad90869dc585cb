"""The ncnn format plug-in (dbd.export.ncnn_format): `dbd-export --format ncnn` converts the shipped
student with pnnx to fp32 and fp16 model folders (model.param + model.bin + metadata.json) that pass
their parity budgets on real photos, run through Predictor, dbd-predict and a dbd-bench row, and
a folder whose metadata was removed is refused in one line.

One export (module fixture) of the shipped student's weights at 64x64 with 4 CUHK-TR-1 parity images.
Skipped, naming the extra, only where the `ncnn` extra (ncnn + pnnx) is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SIZE, predicts_a_photo_and_benches_like_its_checkpoint, quietly

from dbd.core import DBDError
from dbd.export.cli import main as export_main
from dbd.export.pipeline import REPORT_NAME
from dbd.runtime import Predictor, read_metadata
from dbd.runtime.formats import get_format

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ncnn") is None or importlib.util.find_spec("pnnx") is None,
    reason="the ncnn extra is not installed (pip install -e '.[ncnn]')",
)

SIZE = SMALL_SIZE
FILES = {"model.param", "model.bin", "metadata.json"}


@pytest.fixture(scope="module")
def ncnn_export(small_shipped_student, tmp_path_factory, data_root) -> Path:
    out = tmp_path_factory.mktemp("ncnn")
    argv = ["--format", "ncnn", "--precision", "all", "--weights", str(small_shipped_student)]
    # a relative --out, as `make gate` passes: pnnx runs in a folder of its own and once wrote there
    cwd = os.getcwd()
    os.chdir(out.parent)
    try:
        code, stdout, stderr = quietly(export_main, [*argv, "--parity-n", "4", "--out", out.name])
    finally:
        os.chdir(cwd)
    assert code == 0, stderr + stdout
    return out


@pytest.mark.slow  # the pnnx conversions take about 25 s
def test_ncnn_fp32_and_fp16_folders_pass_parity_and_carry_the_metadata(ncnn_export, small_shipped_student):
    report = json.loads((ncnn_export / REPORT_NAME).read_text())
    fmt = get_format("ncnn")
    assert fmt.precisions == ("fp32", "fp16") and fmt.directory and not fmt.needs_calibration("fp16")
    sizes = {}
    for precision, storage in (("fp32", "float32"), ("fp16", "float16")):
        path = ncnn_export / f"dbd_student_{SIZE}_{precision}.ncnn"
        assert path.is_dir() and {p.name for p in path.iterdir()} == FILES
        entry = report["files"][path.name]
        assert entry["format"] == "ncnn" and entry["verified"] == "parity" and entry["calibration"] is None
        parity = entry["parity"]
        assert parity["n_images"] == 4
        if precision == "fp32":
            assert parity["max_abs"] <= 1e-4
        else:
            assert parity["psnr_db"] >= 40
        meta = read_metadata(path)
        assert meta["file"]["format"] == "ncnn" and meta["file"]["precision"] == precision
        assert meta["input"]["name"] == "in0" and meta["output"]["name"] == "out0"
        assert meta["input"]["shape"] == [1, 3, SIZE, SIZE] and meta["input"]["layout"] == "NCHW"
        assert set(meta["file"]["tools"]) >= {"pnnx", "ncnn", "torch"}
        description = fmt.describe(path)
        assert description["weight_storage"] == storage and description["inputs"] == ["in0"]
        assert "Convolution" in description["ops"] and not [op for op in description["ops"] if "." in op]
        assert "int8 is not offered" in description["int8"]
        sizes[precision] = (path / "model.bin").stat().st_size
    assert sizes["fp16"] < 0.55 * sizes["fp32"]  # fp16 weights: half the bytes


@pytest.mark.slow  # the pnnx conversions take about 25 s
def test_ncnn_runs_through_predictor_dbd_predict_and_a_bench_row(
    ncnn_export, small_shipped_student, data_root, tmp_path
):
    fp32 = ncnn_export / f"dbd_student_{SIZE}_fp32.ncnn"
    fp16 = ncnn_export / f"dbd_student_{SIZE}_fp16.ncnn"
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    reference = Predictor(weights=small_shipped_student, threads=1).predict(image)
    for path, tolerance in ((fp32, 1e-4), (fp16, 0.05)):
        got = Predictor(weights=path, threads=1).predict(image)
        assert got.shape == (90, 120) and got.dtype == np.float32
        assert np.abs(got - reference).max() < tolerance, path.name

    predicts_a_photo_and_benches_like_its_checkpoint(fp16, fp32, small_shipped_student, data_root, tmp_path / "pred")


@pytest.mark.slow  # the pnnx conversions take about 25 s
def test_an_ncnn_folder_without_its_metadata_is_refused_naming_it(ncnn_export, tmp_path):
    bare = tmp_path / "bare.ncnn"
    shutil.copytree(ncnn_export / f"dbd_student_{SIZE}_fp32.ncnn", bare)
    (bare / "metadata.json").unlink()
    for attempt in (lambda: Predictor(weights=bare), lambda: read_metadata(bare)):
        with pytest.raises(DBDError) as err:
            attempt()
        message = str(err.value)
        assert str(bare) in message and "has no 'dbd' metadata" in message and "\n" not in message
    (bare / "model.param").unlink()
    with pytest.raises(DBDError, match="not an ncnn model folder"):
        read_metadata(bare)


def test_ncnn_offers_no_int8_and_says_so(small_shipped_student, tmp_path):
    code, stdout, stderr = quietly(export_main, ["--format", "ncnn", "--precision", "int8", "--out", str(tmp_path)])
    assert code == 2 and "unknown precision 'int8'" in stderr and "(for ncnn)" in stderr
