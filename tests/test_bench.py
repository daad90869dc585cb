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
    return {
        "teacher": _checkpoint(folder / "t.safetensors", "dbd_teacher", 0),
        "student": _checkpoint(folder / "s.safetensors", "dbd_student", 1),
    }


def _args(models, tmp_path, *extra):
    return [
        "--teacher",
        str(models["teacher"]),
        "--student",
        str(models["student"]),
        "--data",
        "dut",
        "--split",
        "",
        "--exports",
        str(tmp_path / "none"),
        "--report",
        str(tmp_path / "report"),
        *extra,
    ]


def test_bench_prints_a_row_per_model_and_writes_every_report(models, tmp_path, capsys):
    assert bench(_args(models, tmp_path, "--threads", "1", "--runs", "50", "--warmup", "2")) == 0
    out = capsys.readouterr().out
    assert "dbd_teacher" in out and "dbd_student" in out and "ms@1t" in out
    report = json.loads((tmp_path / "report" / "bench.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    # every file is scored with its own last step (guided refinement) and with the bilinear map
    assert set(rows) == {
        f"dbd_{m}:torch:fp32:{map_}" for m in ("teacher", "student") for map_ in ("guided", "bilinear")
    }
    student, teacher = rows["dbd_student:torch:fp32:guided"], rows["dbd_teacher:torch:fp32:guided"]
    lat = student["latency"]["1"]
    assert lat["runs"] == 50 and lat["median_ms"] > 0
    assert lat["gmacs_per_s"] == pytest.approx(student["gmacs"] / (lat["median_ms"] / 1000))
    assert lat["peak_fraction"] == pytest.approx(
        lat["gmacs_per_s"] / report["machine"]["gemm_peak"]["best_gmacs_per_s"]["1"]
    )
    assert {"mae", "fbeta_fixed", "fbeta_adaptive", "fbeta_max", "iou"} <= set(student["metrics"])
    # the cards carry no stage (files made before stages were recorded): the roles by released name
    assert {r["role"] for r in report["rows"] if r["model"] == "dbd_student"} == {"student"}
    assert student["vs_teacher"]["d_fbeta"] == pytest.approx(
        student["metrics"]["fbeta_fixed"] - teacher["metrics"]["fbeta_fixed"]
    )
    assert 0 < student["vs_teacher"]["psnr"] < 100 and teacher["vs_teacher"] is None  # 100+ dB: the same maps
    assert set(report["machine"]["refine_ms"]) == {"640x427", "1920x1080", "12 MP"}
    assert all(ms > 0 for ms in report["machine"]["refine_ms"].values())
    assert "Refinement cost" in out and "Size and speed" in out
    for name in ("bench.md", "curves.png", "latency_accuracy.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_the_bilinear_row_scores_the_same_maps_as_evaluating_without_refinement(models, tmp_path):
    from dbd.benchmarks import run
    from dbd.data.datasets import open_dataset
    from dbd.evaluation.scoring import evaluate
    from dbd.runtime.runners import TorchRunner

    result = run(
        teacher=models["teacher"], student=models["student"], data="dut", split="", exports=None, runs=0, report=None
    )
    rows = {r["id"]: r for r in result.rows}
    bilinear, guided = rows["dbd_student:torch:fp32:bilinear"], rows["dbd_student:torch:fp32:guided"]
    pairs = list(open_dataset("dut", split=None))
    expected, _ = evaluate(TorchRunner(models["student"]), pairs, refine="none")
    for metric, value in expected.compute().items():
        if metric != "n_images":
            assert bilinear["metrics"][metric] == pytest.approx(value, abs=1e-9)
    assert bilinear["metrics"]["mae"] != guided["metrics"]["mae"]  # the refinement changed the maps
    assert bilinear["latency"] == {} and bilinear["accuracy_only"]


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


def test_run_as_a_library_call_scores_the_shipped_checkpoints(tmp_path):
    from dbd.benchmarks import run
    from dbd.models.checkpoint import read_card
    from dbd.models.shipped import released_checkpoint

    teacher, student = released_checkpoint("dbd_teacher"), released_checkpoint("dbd_student")
    done = []
    result = run(
        data="dut",
        split="",
        limit=2,
        runs=0,
        threads=[1],
        exports=tmp_path / "none",
        report=tmp_path / "report",
        update_baseline=tmp_path / "baseline.json",
        log=done.append,
    )
    tta = read_card(teacher).get("distillation", {}).get("tta")  # the teacher's distillation recipe, if any
    # each file with its own last step (the shipped cards: guided), then the same maps bilinear
    expected = [
        "dbd_teacher:torch:fp32:guided",
        "dbd_teacher:torch:fp32:bilinear",
        *([f"dbd_teacher:torch+tta {tta}:fp32:guided"] if tta else []),
        "dbd_student:torch:fp32:guided",
        "dbd_student:torch:fp32:bilinear",
    ]
    assert [r["id"] for r in result.rows] == expected
    assert [r["file"] for r in result.rows] == [str(teacher)] * (len(expected) - 2) + [str(student)] * 2
    assert done[0] == f"benchmarked {teacher}" and done[-1] == f"benchmarked {student}"
    assert result.data == "dut:all[:2]" and "(2 images)" in result.title
    for row in result.rows:
        assert 0 <= row["metrics"]["mae"] <= 1 and 0 <= row["metrics"]["fbeta_fixed"] <= 1, row["id"]
        assert row["latency"] == {} and row["peak_mem_mb"] is None and "_maps" not in row  # --runs 0: accuracy only
    assert [r["role"] for r in result.rows] == ["teacher"] * (len(expected) - 2) + ["student"] * 2  # the stages
    # each student row against the teacher with its last step, as distillation uses it (TTA: guided only)
    by_id = {r["id"]: r for r in result.rows}
    for row, reference in ((result.rows[-2], by_id[expected[2 if tta else 0]]), (result.rows[-1], result.rows[1])):
        d_mae = row["metrics"]["mae"] - reference["metrics"]["mae"]
        assert row["vs_teacher"]["d_mae"] == pytest.approx(d_mae), row["id"]
        assert 0 < row["vs_teacher"]["psnr"] < 100 and row["vs_student"] is None  # each is its refine's reference
    assert result.report_files == [
        tmp_path / "report" / n for n in ("bench.md", "bench.json", "curves.png", "latency_accuracy.png")
    ]
    assert [r["id"] for r in json.loads((tmp_path / "report" / "bench.json").read_text())["rows"]] == expected
    assert result.baseline_written == tmp_path / "baseline.json" and result.passed and result.checked_against is None
    assert set(json.loads((tmp_path / "baseline.json").read_text())["rows"]) == set(expected)


def test_gate_refuses_a_baseline_measured_on_other_data(models, tmp_path, capsys):
    baseline = tmp_path / "b.json"
    baseline.write_text(
        json.dumps(
            {"format": "dbd-bench-baseline/1", "data": "cuhk:test", "rows": {"dbd_student:torch:fp32": {"mae": 0.1}}}
        )
    )
    assert bench(_args(models, tmp_path, "--runs", "0", "--check", str(baseline))) == 1
    assert "measured on 'cuhk:test'" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--threads", "0"], "--threads"),
        (["--runs", "10"], "at least 50"),
        (["--weights", "{tmp}/missing.onnx"], "does not exist"),
        (["--check", "{tmp}/nobaseline.json"], "does not exist"),
        (["--weights", "{tmp}/model.h5"], "a .onnx, .tflite, .mlpackage, .ncnn or .pte"),
    ],
)
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


# ---- measurement: the GEMM peak, %peak above 100, memory of every runtime, the CPU ------------


def test_gemm_peak_is_the_best_of_interleaved_runs_and_a_busy_machine_is_flagged(monkeypatch):
    from dbd.benchmarks import measure

    rates = {1: iter([30.0, 12.0, 33.0]), 2: iter([20.0, 58.0, 61.0])}
    calls = []

    def fake(threads, seconds):
        calls.append(threads)
        return next(rates[threads])

    monkeypatch.setattr(measure, "peak_gmacs_per_s", lambda t, n=1024, seconds=1.0: fake(t, seconds))
    peaks = measure.gemm_peaks([1, 2], repeats=3)
    assert calls == [1, 2, 1, 2, 1, 2]  # interleaved, not 1,1,1,2,2,2
    assert peaks.best == {1: 33.0, 2: 61.0} and peaks.reliable
    busy = measure.GemmPeaks({1: 33.0, 2: 20.0}, {1: [33.0], 2: [20.0]})
    assert not busy.reliable and busy.to_dict()["reliable"] is False


def test_a_peak_fraction_above_100_percent_is_never_printed_without_a_flag():
    from dbd.benchmarks.tables import speed_table

    def row(fraction, reliable=True):
        return {
            "model": "m",
            "format": "onnx",
            "precision": "int8",
            "size_mb": 1.0,
            "params_m": 1.0,
            "gmacs": 1.0,
            "latency": {
                "2": {
                    "median_ms": 1.0,
                    "p90_ms": 1.0,
                    "fps": 1000.0,
                    "peak_fraction": fraction,
                    "peak_fraction_reliable": reliable,
                }
            },
            "metrics": {},
        }

    header, body = speed_table([row(1.41, False), row(0.5), row(0.5, False), row(1.2)], [2])
    column = header.index("%peak@2t")
    assert [line[column] for line in body] == ["141?", "50", "50?", "120?"]


@pytest.fixture(scope="module")
def onnx_file(models, tmp_path_factory) -> Path:
    from dbd.export.cli import main as export_main

    out = tmp_path_factory.mktemp("onnx")
    student = _checkpoint(out / "s64.safetensors", "dbd_student", 1)
    assert (
        export_main(
            [
                "--format",
                "onnx",
                "--precision",
                "fp32",
                "--weights",
                str(student),
                "--calib",
                "dut",
                "--calib-n",
                "1",
                "--parity-n",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return next(out.glob("*.onnx"))


def test_peak_memory_is_measured_alike_for_every_runtime_and_the_cpu_is_recorded(models, onnx_file, tmp_path, capsys):
    assert (
        bench(
            _args(
                models,
                tmp_path,
                "--weights",
                str(onnx_file),
                "--threads",
                "1",
                "--runs",
                "50",
                "--warmup",
                "2",
                "--limit",
                "1",
            )
        )
        == 0
    )
    report = json.loads((tmp_path / "report" / "bench.json").read_text())
    rows = {r["format"]: r for r in report["rows"]}
    assert set(rows) == {"torch", "onnx"}
    for row in report["rows"]:  # ONNX used to read 0 MB
        if row.get("accuracy_only"):  # scored from another row's maps: its memory is that row's
            assert row["peak_mem_mb"] is None, row["id"]
            continue
        assert row["peak_mem_mb"] > 1 and row["memory"]["method"] == "fresh process", row["id"]
    cpu = report["machine"]["cpu"]
    assert (
        cpu["model"]
        and isinstance(cpu["features"], list)
        and report["machine"]["gemm_peak"]["best_gmacs_per_s"]["1"] > 0
    )
    assert f"CPU: {cpu['model']}" in (tmp_path / "report" / "bench.md").read_text()
    assert "CPU:" in capsys.readouterr().out


def test_library_run_refuses_a_negative_limit_in_one_line(tmp_path):
    from dbd.benchmarks import run
    from dbd.core import DBDError

    with pytest.raises(DBDError) as err:
        run(runs=0, limit=-1, report=None, exports=tmp_path)
    assert "--limit" in str(err.value) and "\n" not in str(err.value)


def test_models_timed_together_take_turns_call_by_call_after_their_warm_up():
    """One latency measurement for the bench and the training report (dbd.evaluation.latency): the
    warm-up calls are not timed, and models measured together alternate so a passing load hits each."""
    from dbd.evaluation.latency import latency, time_calls

    order: list[str] = []
    times = time_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, runs=3, warmup=2)
    assert order == ["a", "b"] * 5 and [len(t) for t in times.values()] == [3, 3]
    measured = latency([1.0, 2.0, 3.0, 4.0, 100.0], threads=1)
    assert (measured.median_ms, measured.runs, measured.fps) == (3.0, 5, 1000.0 / 3.0)
    assert measured.p90_ms == pytest.approx(61.6)


def test_a_model_benchmarked_at_two_input_sizes_is_told_apart_in_the_tables():
    from dbd.benchmarks.tables import accuracy_table, speed_table

    def row(size: int, fmt: str = "tflite") -> dict:
        metrics = {"mae": 0.06, "fbeta_fixed": 0.97, "iou": 0.93, "fbeta_adaptive": 0.8, "fbeta_max": 0.9}
        file = {"model": "dbd_student", "format": fmt, "precision": "int8", "refine": "guided", "size_mb": 2.5}
        return file | {"params_m": 1.9, "gmacs": 0.7, "latency": {}, "metrics": metrics, "input_size": [size, size]}

    _, body = speed_table([row(256), row(320)], threads=[1])
    assert [line[0] for line in body] == ["dbd_student 256²", "dbd_student 320²"]
    _, body = accuracy_table([row(320), row(320, "onnx")])  # one size: the plain name
    assert [line[0] for line in body] == ["dbd_student", "dbd_student"]
