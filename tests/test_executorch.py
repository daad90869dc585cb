"""The ExecuTorch format plug-in (dbd.export.executorch_format): `dbd-export --format executorch`
lowers the shipped student to fp32 and int8 (PT2E, XNNPACK quantizer, calibrated on CUHK-TR-1,
stem kept in float) .pte programs, every op delegated to XNNPACK, the "dbd" metadata embedded as
the constant method `dbd_metadata`; they pass their parity budgets on real photos, run through
Predictor, dbd-predict and a dbd-bench row, and a program without the metadata is refused in one line.

One export (module fixture) of the shipped student's weights at 64x64 with 8 calibration and 4
parity images (about a minute: `slow`). Skipped, naming the extra, only where the `executorch` extra
is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SIZE, predicts_a_photo_and_benches_like_its_checkpoint, quietly

from dbd.core import DBDError
from dbd.export.cli import main as export_main
from dbd.export.pipeline import REPORT_NAME
from dbd.models.checkpoint import load_checkpoint
from dbd.runtime import Predictor, read_metadata
from dbd.runtime.formats import get_format

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="the executorch extra is not installed (pip install -e '.[executorch]')",
)

SIZE = SMALL_SIZE


@pytest.fixture(scope="module")
def pte_export(small_shipped_student, tmp_path_factory, data_root) -> Path:
    out = tmp_path_factory.mktemp("executorch")
    argv = ["--format", "executorch", "--precision", "all", "--weights", str(small_shipped_student), "--calib-n", "8"]
    code, stdout, stderr = quietly(export_main, [*argv, "--parity-n", "4", "--out", str(out)])
    assert code == 0, stderr + stdout
    return out


@pytest.mark.slow  # torch.export + XNNPACK lowering of two programs and int8 calibration: about a minute
def test_executorch_fp32_and_int8_pass_parity_fully_delegated_with_embedded_metadata(pte_export, small_shipped_student):
    report = json.loads((pte_export / REPORT_NAME).read_text())
    fmt = get_format("executorch")
    assert fmt.precisions == ("fp32", "int8") and fmt.needs_calibration("int8") and not fmt.needs_calibration("fp32")
    sizes = {}
    for precision in ("fp32", "int8"):
        path = pte_export / f"dbd_student_{SIZE}_{precision}.pte"
        assert path.is_file() and not path.with_suffix(".json").exists()  # no sidecar: the metadata is inside
        entry = report["files"][path.name]
        assert entry["format"] == "executorch" and entry["verified"] == "parity"
        parity = entry["parity"]
        assert parity["n_images"] == 4
        if precision == "fp32":
            assert parity["max_abs"] <= 1e-4 and entry["calibration"] is None
        else:
            assert parity["psnr_db"] >= 30 and abs(parity["d_fbeta"]) <= 0.005
            assert entry["calibration"]["n_images"] == 8
        meta = read_metadata(path)
        assert meta["file"]["format"] == "executorch" and meta["file"]["precision"] == precision
        assert meta["input"]["shape"] == [1, 3, SIZE, SIZE] and meta["input"]["layout"] == "NCHW"
        assert set(meta["file"]["tools"]) >= {"executorch", "torch", "torchao"}
        if precision == "int8":  # the student's stem stays float, as in the other int8 files
            assert meta["file"]["float_modules"] == ["encoder.features.0", "encoder.features.1"]
        description = fmt.describe(path)
        assert description["ops"] == {"delegate XnnpackBackend": 1}
        assert description["methods"] == ["dbd_metadata", "forward"]
        assert description["inputs"][0]["shape"] == [1, 3, SIZE, SIZE]
        sizes[precision] = path.stat().st_size
    assert sizes["int8"] < 0.35 * sizes["fp32"]


@pytest.mark.slow
def test_executorch_runs_through_predictor_dbd_predict_and_a_bench_row(
    pte_export, small_shipped_student, data_root, tmp_path
):
    fp32 = pte_export / f"dbd_student_{SIZE}_fp32.pte"
    int8 = pte_export / f"dbd_student_{SIZE}_int8.pte"
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    reference = Predictor(weights=small_shipped_student, threads=1).predict(image)
    got = Predictor(weights=fp32, threads=1).predict(image)
    assert got.shape == (90, 120) and got.dtype == np.float32 and np.abs(got - reference).max() < 1e-4
    quantised = Predictor(weights=int8, threads=1).predict(image)
    assert quantised.shape == (90, 120) and np.isfinite(quantised).all()

    predicts_a_photo_and_benches_like_its_checkpoint(int8, fp32, small_shipped_student, data_root, tmp_path / "pred")


@pytest.mark.slow
def test_a_program_without_its_metadata_is_refused_naming_it(pte_export, small_shipped_student, tmp_path):
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model, _ = load_checkpoint(small_shipped_student)
    program = torch.export.export(model.eval(), (torch.zeros(1, 3, SIZE, SIZE),))
    bare = tmp_path / "bare.pte"
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    bare.write_bytes(lowered.buffer)
    for attempt in (lambda: Predictor(weights=bare), lambda: read_metadata(bare)):
        with pytest.raises(DBDError) as err:
            attempt()
        message = str(err.value)
        assert str(bare) in message and "has no 'dbd' metadata" in message and "\n" not in message
    noise = tmp_path / "noise.pte"
    noise.write_bytes(b"\0" * 64)
    with pytest.raises(DBDError, match="not an ExecuTorch program"):
        read_metadata(noise)


def test_executorch_offers_no_fp16_and_says_so(tmp_path):
    code, stdout, stderr = quietly(
        export_main, ["--format", "executorch", "--precision", "fp16", "--out", str(tmp_path)]
    )
    assert code == 2 and "unknown precision 'fp16'" in stderr and "(for executorch)" in stderr
