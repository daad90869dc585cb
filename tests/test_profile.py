"""dbd-bench --profile: each runtime's own per-operator profile of small exports of the shipped student
(made here: CI has no exports/), printed and written beside the bench reports; bad flags in one line."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SIZE, quietly

from dbd.benchmarks.cli import main as bench
from dbd.benchmarks.profiling import FileProfile
from dbd.runtime.formats import ProfilingUnavailable, get_format
from dbd.runtime.metadata import encode_input, read_metadata

RUNS, WARMUP = 5, 2


def _export(student: Path, out: Path, fmt: str, precision: str = "fp32") -> Path:
    from dbd.export.cli import main as export_main

    argv = ["--format", fmt, "--precision", precision, "--weights", str(student), "--parity-n", "2"]
    code, stdout, stderr = quietly(export_main, [*argv, "--out", str(out)])
    assert code == 0, stderr + stdout
    return out / f"dbd_student_{SMALL_SIZE}_{precision}{get_format(fmt).suffix}"


@pytest.fixture(scope="module")
def onnx_file(small_shipped_student, tmp_path_factory, data_root) -> Path:
    return _export(small_shipped_student, tmp_path_factory.mktemp("profile"), "onnx")


def _input(path: Path) -> np.ndarray:
    unit = np.random.default_rng(0).random((1, SMALL_SIZE, SMALL_SIZE, 3), dtype=np.float32)
    return encode_input(read_metadata(path), unit)


def _checked(run, path: Path, fmt: str, runs: int = RUNS) -> FileProfile:
    """The profile as dbd-bench reads it: a time per run for every node and for the whole inference, the
    operators' times adding up to a real share of each inference and never to more (the rest is the
    runtime's own overhead between them: at 64x64 anywhere from about 45 % to 80 % of it on these
    machines, so the floor only catches a unit error, a factor of 1000), and the op types to 100 %."""
    assert run.runs == runs and run.nodes and all(len(times) == runs for _, _, times in run.nodes)
    assert run.total_ms is not None and len(run.total_ms) == runs
    profile = FileProfile(path, fmt, "fp32", 1, run)
    assert 0.1 < profile.inside() <= 1.01, profile.summary()
    assert sum(r["percent"] for r in profile.op_types()) == pytest.approx(100)
    return profile


def test_onnx_profile_covers_every_node_of_the_optimised_graph(onnx_file, tmp_path):
    import onnx
    import onnxruntime as ort

    run = get_format("onnx").profile(onnx_file, _input(onnx_file), threads=1, runs=RUNS, warmup=WARMUP)
    profile = _checked(run, onnx_file, "onnx")
    # The graph onnxruntime runs is the optimised one (Conv+BN+ReLU fused, NCHWc layout on AVX-512):
    # every node of it, and only those, shows up in the profile with its op type.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph.node
    assert {r["op"] for r in profile.op_types()} == {n.op_type for n in graph}
    assert len(run.nodes) == len(graph)
    assert "Conv" in {r["op"] for r in profile.op_types()}


def test_cli_prints_the_tables_and_writes_markdown_and_json_beside_the_bench_reports(
    onnx_file, small_shipped_student, tmp_path
):
    report = tmp_path / "report"
    argv = ["--profile", "--weights", str(onnx_file), str(small_shipped_student), "--threads", "1"]
    code, out, err = quietly(bench, [*argv, "--runs", "3", "--warmup", "1", "--report", str(report)])
    assert code == 0, err
    assert "input: the first image of cuhk:test" in out and "onnxruntime" in out
    assert "by operator type:" in out and "top 10 layers:" in out and "Conv" in out
    assert "dbd_student.safetensors (torch fp32)\n  not profiled: a PyTorch checkpoint" in out
    document = json.loads((report / "profile.json").read_text())
    onnx_entry, checkpoint_entry = document["profiles"]
    assert onnx_entry["profiled"] and onnx_entry["threads"] == 1 and onnx_entry["runs"] == 3
    assert onnx_entry["op_types"][0]["op"] == "Conv" and len(onnx_entry["layers"]) > 60  # every node
    assert all(" -> 1x" in r["layer"] for r in onnx_entry["layers"])  # each with its output's shape
    assert 0.1 < onnx_entry["inside_operators"] <= 1.01  # a timing: see _checked
    assert not checkpoint_entry["profiled"] and "checkpoint" in checkpoint_entry["reason"]
    md = (report / "profile.md").read_text()
    assert "| op type | nodes | ms/inference | % |" in md and "| layer | op type | ms/inference | % |" in md


def test_ncnn_says_its_wheel_has_no_profiler():
    with pytest.raises(ProfilingUnavailable, match="NCNN_BENCHMARK"):
        get_format("ncnn").profile(Path("x.ncnn"), np.zeros((1, 3, 8, 8), np.float32), 1, 1, 0)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--check", "baseline.json"], "does not take --check"),
        (["--robustness"], "does not take --robustness"),
        (["--limit", "3"], "does not take --limit"),
        (["--teacher-tta", "384"], "does not take --teacher-tta"),
        (["--device", "cuda"], "runs on the CPU"),
        (["--runs", "0"], "--runs"),
        (["--weights", "{tmp}/missing.onnx"], "does not exist"),
        (["--exports", "{tmp}/empty"], "found no exported file"),
        (["--weights", "{tmp}/model.h5"], "is not a model file dbd reads"),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(extra, fragment, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.h5").write_bytes(b"x")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    code = bench(["--profile", "--report", str(tmp_path / "report"), *extra])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err and not out, err
    assert not (tmp_path / "report").exists()


def test_litert_events_are_read_at_the_stride_of_this_build():
    """ProfiledEventData is 104 bytes where LiteRT's MemoryUsage has 3 words, 120 where it has 4."""
    from dbd.runtime.engines.tflite import _litert_events

    for stride in (104, 120):
        raw = bytearray(stride * 2)
        for i, (kind, us, node) in enumerate([(1, 500, 0), (8, 120, 7)]):
            struct.pack_into("<QI4xQQ", raw, i * stride, 0x1000 + i, kind, 0, us)
            struct.pack_into("<Q8xI", raw, i * stride + stride - 24, node, 0)
        assert _litert_events(bytes(raw), 2) == [(0x1000, 1, 500, 0), (0x1001, 8, 120, 7)]


@pytest.mark.slow  # a .tflite conversion and a torch.export + XNNPACK lowering: about two minutes
def test_litert_and_executorch_profile_each_xnnpack_operator(small_shipped_student, tmp_path, data_root, monkeypatch):
    from dbd.runtime.engines import tflite as litert

    tflite = _export(small_shipped_student, tmp_path, "tflite")
    run = get_format("tflite").profile(tflite, _input(tflite), threads=1, runs=RUNS, warmup=WARMUP)
    ops = {r["op"] for r in _checked(run, tflite, "tflite").op_types()}
    assert run.threads == 1 and any(op.startswith("Convolution (NHWC, F32)") for op in ops), ops
    assert "Fully Connected (NC, F32) GEMM" in ops  # XNNPACK runs the 1x1 convolutions as GEMMs

    # The thread count reaches XNNPACK (its options' identifier is not the interpreter's): its pool
    # has one worker thread fewer than the count, alive while the events are read.
    alive, read_events = [], litert._litert_events
    monkeypatch.setattr(
        litert,
        "_litert_events",
        lambda raw, n: alive.append(len(os.listdir("/proc/self/task"))) or read_events(raw, n),
    )
    for threads in (1, 3):
        litert.profile_litert(tflite, _input(tflite), threads, runs=1, warmup=0)
    assert alive[1] - alive[0] == 2, alive

    pte = _export(small_shipped_student, tmp_path, "executorch")
    run = get_format("executorch").profile(pte, _input(pte), threads=1, runs=RUNS, warmup=WARMUP)
    profile = _checked(run, pte, "executorch")
    assert run.threads >= 1 and "Fully Connected (NC, F32) GEMM" in {r["op"] for r in profile.op_types()}
    assert all("#" in name for name, _, _ in run.nodes)  # XNNPACK's operators, numbered per type
