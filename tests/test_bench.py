"""dbd-bench: the table and reports, and the accuracy-regression gate proven to fail."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dbd.benchmarks.cli import main as bench
from dbd.models import create_model
from dbd.models.checkpoint import load_checkpoint, save_checkpoint
from dbd.runtime.spec import PreprocessSpec


def _checkpoint(path: Path, arch: str, seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch)
    if arch == "dbd_student":  # a map that depends on the image, so metrics are not degenerate
        torch.nn.init.constant_(model.head.bias, 0.0)
    save_checkpoint(path, model, {"preprocess": PreprocessSpec.for_model(model, (64, 64)).to_dict()})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    return {"teacher": _checkpoint(folder / "t.safetensors", "dbd_teacher", 0),
            "student": _checkpoint(folder / "s.safetensors", "dbd_student", 1)}


def _args(models, tmp_path, *extra):
    return ["--teacher", str(models["teacher"]), "--student", str(models["student"]), "--data", "dut", "--split", "",
            "--exports", str(tmp_path / "none"), "--report", str(tmp_path / "report"), *extra]


def test_bench_prints_a_row_per_model_and_writes_every_report(models, tmp_path, capsys):
    assert bench(_args(models, tmp_path, "--threads", "1", "--runs", "50", "--warmup", "2")) == 0
    out = capsys.readouterr().out
    assert "dbd_teacher" in out and "dbd_student" in out and "ms@1t" in out
    report = json.loads((tmp_path / "report" / "bench.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert set(rows) == {"dbd_teacher:torch:fp32", "dbd_student:torch:fp32"}
    student = rows["dbd_student:torch:fp32"]
    assert student["latency"]["1"]["runs"] == 50 and student["latency"]["1"]["median_ms"] > 0
    assert 0 < student["latency"]["1"]["peak_fraction"] < 2
    assert {"mae", "fbeta_fixed", "fbeta_adaptive", "fbeta_max", "iou"} <= set(student["metrics"])
    assert student["vs_teacher"]["psnr"] > 0 and rows["dbd_teacher:torch:fp32"]["vs_teacher"] is None
    for name in ("bench.md", "curves.png", "latency_accuracy.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_gate_passes_on_its_own_baseline_and_fails_on_a_degraded_model(models, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert bench(_args(models, tmp_path, "--runs", "0", "--update-baseline", str(baseline))) == 0
    assert bench(_args(models, tmp_path, "--runs", "0", "--check", str(baseline))) == 0
    assert "no regression" in capsys.readouterr().out

    model, card = load_checkpoint(models["student"])
    with torch.no_grad():
        model.head.bias.fill_(-6.0)  # the degraded student now calls almost every pixel sharp
    degraded = tmp_path / "degraded.safetensors"
    save_checkpoint(degraded, model, {"preprocess": card["preprocess"]})
    args = _args(models, tmp_path, "--runs", "0", "--check", str(baseline))
    args[args.index(str(models["student"]))] = str(degraded)
    assert bench(args) == 1
    out = capsys.readouterr().out
    assert "REGRESSION dbd_student:torch:fp32" in out and ("fbeta_fixed fell" in out or "mae rose" in out)


def test_gate_refuses_a_baseline_measured_on_other_data(models, tmp_path, capsys):
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({"format": "dbd-bench-baseline/1", "data": "cuhk:test", "rows": {}}))
    assert bench(_args(models, tmp_path, "--runs", "0", "--check", str(baseline))) == 1
    assert "measured on 'cuhk:test'" in capsys.readouterr().out


@pytest.mark.parametrize("extra, fragment", [
    (["--threads", "0"], "--threads"),
    (["--runs", "10"], "at least 50"),
    (["--weights", "{tmp}/missing.onnx"], "does not exist"),
    (["--check", "{tmp}/nobaseline.json"], "does not exist"),
    (["--weights", "{tmp}/model.h5"], "expected a .onnx"),
])
def test_bad_arguments_are_one_line(extra, fragment, models, tmp_path, capsys):
    (tmp_path / "model.h5").write_bytes(b"x")
    code = bench(_args(models, tmp_path, *[e.replace("{tmp}", str(tmp_path)) for e in extra]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err


def test_dataset_without_pairs_is_one_line(models, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    args = _args(models, tmp_path, "--runs", "0")
    args[args.index("dut")] = str(empty)
    assert bench([*args, "--polarity", "blur_white"]) == 2
    assert "no image/mask pairs" in capsys.readouterr().err
