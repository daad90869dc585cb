"""Bad inputs, bad settings and interruptions (issue 15): each case must end in ONE line naming the
file or key and the fix (or a correct result), never a traceback or a silent wrong output, with the
output folders unchanged and no temporary file left behind. Interrupts send real SIGINT/SIGTERM to
a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY

from dbd.benchmarks import gate
from dbd.benchmarks.bench import model_files
from dbd.benchmarks.cli import main as bench_main
from dbd.core import DBDError
from dbd.export.cli import main as export_main
from dbd.models import create_model
from dbd.models.checkpoint import load_checkpoint, save_checkpoint
from dbd.runtime.cli import main as predict_main
from dbd.runtime.predictor import Predictor
from dbd.runtime.spec import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---- helpers ------------------------------------------------------------------------------------


def _save_student(path: Path, card: dict | None = "default", poison: float | None = None) -> Path:
    torch.manual_seed(0)
    model = create_model("dbd_student")
    if poison is not None:
        with torch.no_grad():
            model.head.bias.fill_(poison)
    if card == "default":
        card = {"preprocess": PreprocessSpec.for_model(model, (64, 64)).to_dict()}
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {
        "good": _save_student(folder / "student.safetensors"),
        "nan": _save_student(folder / "nan.safetensors", poison=float("nan")),
        "inf": _save_student(folder / "inf.safetensors", poison=float("inf")),
        "noprep": _save_student(folder / "noprep.safetensors", card={}),
    }


def _image(path: Path, h: int, w: int, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(h * 1000 + w)
    cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // 2 + value // 2)
    return path


def _video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (7 * i) % 256, np.uint8))
    writer.release()
    return path


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` with its size and modification time: 'unchanged' means equal."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {folder.name: (folder.stat().st_size, folder.stat().st_mtime_ns)}
    return {
        str(p.relative_to(folder)): ((p.stat().st_size if p.is_file() else -1), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def _temps(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name] if folder.exists() else []


def _one_line_error(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _env(tmp: Path, data_root: Path) -> dict[str, str]:
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    return {**os.environ, "DBD_DATA": str(data_root), "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"}


def _interrupt(proc: subprocess.Popen, ready, sig: int, wait_s: float = 240) -> tuple[int, str, str]:
    """Wait until `ready()` (or the process ends), send `sig`, then collect (code, stdout, stderr)."""
    deadline = time.monotonic() + wait_s
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the command ended before it could be interrupted:\n" + proc.stderr.read()
    assert ready(), "the command never reached the point to interrupt"
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ---- dbd-predict: output names never collide ----------------------------------------------------


@pytest.mark.parametrize("layout", ["same_folder_two_suffixes", "two_files_same_name", "two_folders_same_name"])
def test_predict_never_overwrites_an_output_of_the_same_run(layout, ckpts, tmp_path, capsys):
    src = tmp_path / "src"
    if layout == "same_folder_two_suffixes":
        inputs = [_image(src / "d" / "a.jpg", 40, 56), _image(src / "d" / "a.png", 72, 24)]
        argv = [str(src / "d")]
    elif layout == "two_files_same_name":
        inputs = [_image(src / "d1" / "a.jpg", 40, 56), _image(src / "d2" / "a.jpg", 72, 24)]
        argv = [str(p) for p in inputs]
    else:
        inputs = [_image(src / "x" / "d" / "a.png", 40, 56), _image(src / "y" / "d" / "a.png", 72, 24)]
        argv = [str(src / "x" / "d"), str(src / "y" / "d")]
    out = tmp_path / "out"
    assert predict_main([*argv, "--weights", str(ckpts["good"]), "--out", str(out), "--threads", "1"]) == 0
    blur = sorted(out.rglob("*_blur.png"))
    assert len(blur) == 2 and len(list(out.rglob("*_mask.png"))) == 2 and len(list(out.rglob("*_overlay.jpg"))) == 2
    # each input has its own map, at its own size: neither overwrote the other
    assert sorted(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in blur) == [(40, 56), (72, 24)]
    assert not _temps(out)
    assert "share a name" in capsys.readouterr().out


def test_predict_mirrors_parent_folders_of_same_named_files(ckpts, tmp_path):
    a, b = _image(tmp_path / "d1" / "a.jpg", 40, 56), _image(tmp_path / "d2" / "a.jpg", 72, 24)
    out = tmp_path / "out"
    assert predict_main([str(a), str(b), "--weights", str(ckpts["good"]), "--out", str(out), "--save", "map"]) == 0
    assert cv2.imread(str(out / "d1" / "a_blur.png")).shape[:2] == (40, 56)
    assert cv2.imread(str(out / "d2" / "a_blur.png")).shape[:2] == (72, 24)


def test_predict_ignores_hidden_and_temporary_files_in_a_folder(ckpts, tmp_path):
    src = tmp_path / "in"
    _image(src / "good.png", 32, 32)
    _image(src / ".hidden.png", 32, 32)
    _image(src / ".cache" / "thumb.png", 32, 32)
    (src / ".clip_overlay.mp4.tmp.mp4").write_bytes(b"half a video")
    (src / "x.tmp.png").write_bytes(b"")
    out = tmp_path / "out"
    assert predict_main([str(src), "--weights", str(ckpts["good"]), "--out", str(out), "--save", "map"]) == 0
    assert sorted(_tree(out)) == ["in", "in/good_blur.png"]


# ---- non-finite weights and outputs -------------------------------------------------------------


@pytest.mark.parametrize("which", ["nan", "inf"])
def test_non_finite_weights_are_refused_at_load_naming_the_file(which, ckpts, tmp_path, capsys):
    photo = _image(tmp_path / "p.png", 32, 32)
    out = tmp_path / "out"
    assert predict_main([str(photo), "--weights", str(ckpts[which]), "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, str(ckpts[which]), "non-finite", "head.bias")
    assert not out.exists()
    with pytest.raises(DBDError, match="non-finite"):
        load_checkpoint(ckpts[which])


def test_non_finite_weights_are_refused_by_bench_and_export(ckpts, tmp_path, capsys):
    assert (
        bench_main(
            [
                "--student",
                str(ckpts["nan"]),
                "--teacher",
                str(ckpts["nan"]),
                "--data",
                "dut",
                "--split",
                "",
                "--limit",
                "1",
                "--runs",
                "0",
                "--exports",
                str(tmp_path / "none"),
                "--report",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    _one_line_error(capsys.readouterr().err, str(ckpts["nan"]), "non-finite")
    assert (
        export_main(
            [
                "--format",
                "onnx",
                "--weights",
                str(ckpts["nan"]),
                "--calib",
                "dut",
                "--calib-n",
                "1",
                "--parity-n",
                "1",
                "--out",
                str(tmp_path / "exp"),
            ]
        )
        == 2
    )
    _one_line_error(capsys.readouterr().err, str(ckpts["nan"]), "non-finite")
    assert not (tmp_path / "exp").exists()


def test_non_finite_model_output_stops_predict_naming_model_and_photo(ckpts, tmp_path, capsys, monkeypatch):
    from dbd.runtime.runners import TorchRunner

    monkeypatch.setattr(TorchRunner, "run", lambda self, x: np.full(x.shape[:3], np.nan, np.float32))
    photos = [_image(tmp_path / "in" / f"{n}.png", 32, 32) for n in ("a", "b")]
    out = tmp_path / "out"
    assert predict_main([str(tmp_path / "in"), "--weights", str(ckpts["good"]), "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, str(ckpts["good"]), "non-finite", str(photos[0]))
    assert not list(out.rglob("*.png")) and not _temps(out)


# ---- the Python API -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, fragment",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty (0x0"),
        (np.zeros((5, 0, 3), np.uint8), "empty (5x0"),
        ([[[0, 0, 0]]], "got a list"),
        ("photo.jpg", "read it with dbd.runtime.read_image"),
        (np.zeros((8, 8), np.uint8), "HxWx3"),
        (np.zeros((8, 8, 3), np.float32), "uint8"),
    ],
)
def test_predictor_refuses_what_is_not_an_rgb_image(image, fragment, ckpts):
    predictor = Predictor(ckpts["good"], threads=1)
    for call in (predictor.predict, lambda im: predictor.predict_many([im])):
        with pytest.raises(DBDError) as err:
            call(image)
        assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"weights": ""}, "weights=''"),
        ({"weights": "   "}, "weights='   '"),
        ({"threads": -1}, "threads"),
        ({"threads": 0}, "threads"),
        ({"threads": 1.5}, "threads"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"batch": 0}, "batch"),
        ({"tile": -5}, "tile"),
    ],
)
def test_predictor_settings_are_checked(kwargs, fragment, ckpts, monkeypatch):
    import dbd.runtime.predictor as predictor_module

    # '' must never fall back to the shipped weights
    monkeypatch.setattr(predictor_module, "default_weights", lambda: pytest.fail("loaded the default weights"))
    kwargs = {"weights": ckpts["good"], **kwargs}
    with pytest.raises(DBDError) as err:
        Predictor(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_readme_import_of_predictor_works():
    code = "from dbd.runtime import Predictor, read_image; print(Predictor.__name__, read_image.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["Predictor", "read_image"], result.stderr


# ---- model cards and file messages --------------------------------------------------------------


def test_card_without_preprocess_is_one_line_naming_file_and_key(ckpts, tmp_path, capsys):
    photo = _image(tmp_path / "p.png", 32, 32)
    assert predict_main([str(photo), "--weights", str(ckpts["noprep"]), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys.readouterr().err, str(ckpts["noprep"]), "'preprocess'")
    with pytest.raises(DBDError, match="'preprocess'"):
        Predictor(ckpts["noprep"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "card, fragment",
    [
        ({"preprocess": "320x320"}, "'preprocess' is a str"),
        ({"preprocess": {"format": "dbd-preprocess/1", "input_size": 320}}, "malformed value"),
    ],
)
def test_malformed_preprocess_is_one_line(card, fragment, tmp_path):
    path = _save_student(tmp_path / "bad.safetensors", card=card)
    with pytest.raises(DBDError) as err:
        Predictor(path)
    assert fragment in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_upper_case_safetensors_suffix_is_named_in_the_message(ckpts, tmp_path, capsys):
    upper = tmp_path / "STUDENT.SAFETENSORS"
    upper.write_bytes(ckpts["good"].read_bytes())
    assert (
        predict_main([str(_image(tmp_path / "p.png", 32, 32)), "--weights", str(upper), "--out", str(tmp_path / "o")])
        == 2
    )
    _one_line_error(capsys.readouterr().err, str(upper), ".safetensors")
    with pytest.raises(DBDError, match=r"expected a \.safetensors checkpoint or a \.onnx"):
        Predictor(tmp_path / "m.h5")


def _deny(monkeypatch, module, target: Path) -> None:
    """Reading `target` fails with EACCES, as for an unprivileged user facing a mode-000 file
    (root, which runs these tests here, is not stopped by file modes)."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_permission_errors_are_not_called_corrupt(ckpts, tmp_path, capsys, monkeypatch):
    import PIL.Image

    import dbd.models.checkpoint as checkpoint_module

    photo = _image(tmp_path / "p.png", 32, 32)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(ckpts["good"].read_bytes())
    if not IS_ROOT:
        photo.chmod(0), weights.chmod(0)
    else:
        real = PIL.Image.open

        def image_open(fp, *args, **kwargs):
            if Path(fp) == photo:
                raise PermissionError(13, "Permission denied", str(fp))
            return real(fp, *args, **kwargs)

        monkeypatch.setattr(PIL.Image, "open", image_open)
        _deny(monkeypatch, checkpoint_module, weights)
    assert predict_main([str(photo), "--weights", str(ckpts["good"]), "--out", str(tmp_path / "o")]) == 2
    line = _one_line_error(capsys.readouterr().err, str(photo), "Permission denied", "permissions")
    assert "corrupt" not in line
    with pytest.raises(DBDError) as err:
        load_checkpoint(weights)
    assert "permissions" in str(err.value) and "corrupt" not in str(err.value) and str(weights) in str(err.value)


# ---- write errors, checked before the work ------------------------------------------------------


def _read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` read-only; as root (not stopped by modes) also refuse file creation in it."""
    folder.chmod(0o555)
    if IS_ROOT:
        import tempfile

        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize(
    "case",
    ["out_is_a_file", "out_under_a_file", "output_name_is_a_folder", "video_output_is_a_folder", "read_only_out"],
)
def test_predict_write_errors_are_one_line_before_any_output(case, ckpts, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    _image(src / "a.png", 32, 32)
    _image(src / "b.png", 32, 32)
    _video(src / "clip.mp4", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    flag_out, fragment = out, str(out)
    if case == "out_is_a_file":
        flag_out = out / "keep.txt"
        fragment = "is a file"
    elif case == "out_under_a_file":
        flag_out = out / "keep.txt" / "sub"
        fragment = "is a file where an output folder is needed"
    elif case == "output_name_is_a_folder":
        (out / "in" / "b_mask.png").mkdir(parents=True)
        fragment = str(out / "in" / "b_mask.png")
    elif case == "video_output_is_a_folder":
        (out / "in" / "clip_overlay.mp4").mkdir(parents=True)
        fragment = str(out / "in" / "clip_overlay.mp4")
    else:
        _read_only(monkeypatch, out)
    before = _tree(out)
    try:
        assert predict_main([str(src), "--weights", str(ckpts["good"]), "--out", str(flag_out)]) == 2
    finally:
        out.chmod(0o755)
    _one_line_error(capsys.readouterr().err, fragment)
    assert _tree(out) == before and not _temps(out)


def _bench_args(ckpts, tmp_path, *extra):
    return [
        "--teacher",
        str(ckpts["good"]),
        "--student",
        str(ckpts["good"]),
        "--data",
        "dut",
        "--split",
        "",
        "--exports",
        str(tmp_path / "none"),
        "--runs",
        "0",
        "--limit",
        "2",
        *extra,
    ]


@pytest.mark.parametrize(
    "case", ["report_is_a_file", "report_file_is_a_folder", "read_only_report", "baseline_is_a_folder"]
)
def test_bench_write_errors_are_one_line_before_the_benchmark(case, ckpts, tmp_path, capsys, monkeypatch):
    import dbd.benchmarks.bench as bench_module

    monkeypatch.setattr(
        bench_module, "bench_row", lambda *a, **k: pytest.fail("benchmarked before checking the outputs")
    )
    report = tmp_path / "report"
    report.mkdir()
    (report / "old.md").write_text("earlier report")
    extra = ["--report", str(report)]
    fragment = str(report)
    if case == "report_is_a_file":
        extra = ["--report", str(report / "old.md")]
        fragment = "is a file"
    elif case == "report_file_is_a_folder":
        (report / "bench.json").mkdir()
        fragment = str(report / "bench.json")
    elif case == "read_only_report":
        _read_only(monkeypatch, report)
    else:
        (report / "baseline.json").mkdir()
        extra += ["--update-baseline", str(report / "baseline.json")]
        fragment = str(report / "baseline.json")
    before = _tree(report)
    try:
        assert bench_main(_bench_args(ckpts, tmp_path, *extra)) == 2
    finally:
        report.chmod(0o755)
    _one_line_error(capsys.readouterr().err, fragment)
    assert _tree(report) == before


# ---- the regression gate ------------------------------------------------------------------------


GOOD_ROW = {"mae": 0.2, "fbeta_fixed": 0.5}


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"format": "dbd-bench-baseline/1", "data": "dut:all[:2]", "rows": {}}, "no rows"),
        ([GOOD_ROW], "is a JSON list"),
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": {"accuracy": 0.9}},
            },
            "unknown metric 'accuracy'",
        ),
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": {"mae": "0.1"}},
            },
            "'dbd_student:torch:fp32.mae' must be a finite number",
        ),
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": {"mae": True}},
            },
            "must be a finite number",
        ),
        (
            {"format": "dbd-bench-baseline/1", "data": "dut:all[:2]", "rows": {"dbd_student:torch:fp32": []}},
            "non-empty object",
        ),
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": GOOD_ROW},
                "tolerances": {"mae": "tight"},
            },
            "'tolerances.mae'",
        ),
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": GOOD_ROW},
                "tolerances": {"speed": 0.1},
            },
            "'tolerances.speed'",
        ),
        ({"format": "dbd-bench-baseline/1", "rows": {"dbd_student:torch:fp32": GOOD_ROW}}, "'data'"),
        ("not json", "not valid JSON"),
        # out of range: a tolerance that lets everything pass, metrics outside [0, 1] (issue 24)
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": GOOD_ROW},
                "tolerances": {"mae": 1e9},
            },
            "'tolerances.mae' must be a number from 0 to 0.1",
        ),
        (
            {
                "format": "dbd-bench-baseline/1",
                "data": "dut:all[:2]",
                "rows": {"dbd_student:torch:fp32": GOOD_ROW},
                "tolerances": {"iou": -0.01},
            },
            "'tolerances.iou'",
        ),
        (
            {"format": "dbd-bench-baseline/1", "data": "dut:all[:2]", "rows": {"s:onnx:int8": {"fbeta_fixed": -1}}},
            "'s:onnx:int8.fbeta_fixed' must be in [0, 1]",
        ),
        (
            {"format": "dbd-bench-baseline/1", "data": "dut:all[:2]", "rows": {"s:onnx:int8": {"mae": 99}}},
            "'s:onnx:int8.mae' must be in [0, 1]",
        ),
    ],
)
def test_bad_baseline_is_one_line_and_fails_before_the_benchmark(doc, fragment, ckpts, tmp_path, capsys, monkeypatch):
    import dbd.benchmarks.bench as bench_module

    monkeypatch.setattr(bench_module, "bench_row", lambda *a, **k: pytest.fail("benchmarked with a bad baseline"))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    report = tmp_path / "report"
    assert bench_main(_bench_args(ckpts, tmp_path, "--report", str(report), "--check", str(baseline))) == 2
    _one_line_error(capsys.readouterr().err, str(baseline), fragment)
    assert not report.exists()


def test_gate_that_compares_nothing_or_a_non_finite_value_fails():
    rows = [{"id": "s", "metrics": {"mae": float("nan"), "fbeta_fixed": 0.5}}]
    assert gate.check({"data": "d", "rows": {}}, rows, "d")  # nothing compared
    assert any("mae" in f for f in gate.check({"data": "d", "rows": {"s": {"mae": 0.1}}}, rows, "d"))  # NaN != pass
    assert gate.check({"data": "d", "rows": {"s": {"fbeta_fixed": 0.5}}}, rows, "d") == []
    with pytest.raises(DBDError, match="no row was benchmarked"):
        gate.write_baseline(Path("unused.json"), [], "d")


def _gate_row(row_id: str, file: str, fbeta: float = 0.5) -> dict:
    return {"id": row_id, "file": file, "metrics": {"mae": 0.2, "fbeta_fixed": fbeta}}


def test_gate_fails_when_two_files_give_the_same_row_id_naming_both():
    baseline = {"data": "d", "rows": {"s:tflite:int8": {"fbeta_fixed": 0.5}}}
    # the second file regressed, but with one id per row it would silently replace the first
    rows = [_gate_row("s:tflite:int8", "exports/a_int8.tflite"), _gate_row("s:tflite:int8", "exports/zz_int8.tflite")]
    failures = gate.check(baseline, rows, "d")
    assert any("exports/a_int8.tflite" in f and "exports/zz_int8.tflite" in f for f in failures), failures
    with pytest.raises(DBDError, match="zz_int8.tflite"):
        gate.write_baseline(Path("never-written.json"), rows, "d")
    assert not Path("never-written.json").exists()


def test_gate_fails_on_rows_the_baseline_has_none_for_unless_allowed():
    baseline = {"data": "d", "rows": {"s:onnx:fp32": {"fbeta_fixed": 0.5}}}
    rows = [_gate_row("s:onnx:fp32", "a.onnx"), _gate_row("s:onnx:fp16", "b.onnx", fbeta=0.0)]
    failures = gate.check(baseline, rows, "d")
    assert len(failures) == 1 and "s:onnx:fp16" in failures[0] and "--allow-new-rows" in failures[0], failures
    assert gate.check(baseline, rows, "d", allow_new_rows=True) == []
    assert [line.split(" ")[0] for line in gate.unbaselined_rows(baseline, rows)] == ["s:onnx:fp16"]


@pytest.mark.parametrize("allow", [False, True])
def test_bench_cli_lists_rows_not_in_the_baseline_loudly(allow, tmp_path, capsys, monkeypatch):
    import dbd.benchmarks.bench as bench_module

    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        rows = [_gate_row("s:onnx:fp32", "a.onnx"), _gate_row("s:onnx:fp16", "b.onnx")]
        baseline = {"data": "d", "rows": {"s:onnx:fp32": {"fbeta_fixed": 0.5}}}
        return bench_module.BenchResult(
            rows=rows,
            data="d",
            title="t",
            notes=[],
            machine={},
            header=[],
            body=[],
            sections=[],
            checked_against=tmp_path / "baseline.json",
            baseline_rows=1,
            regressions=gate.check(baseline, rows, "d", allow_new_rows=kwargs["allow_new_rows"]),
            not_compared=gate.unbaselined_rows(baseline, rows) if kwargs["allow_new_rows"] else [],
        )

    monkeypatch.setattr(bench_module, "run", fake_run)
    args = ["--check", str(tmp_path / "baseline.json"), *(["--allow-new-rows"] if allow else [])]
    assert bench_main(args) == (0 if allow else 1)
    assert seen["allow_new_rows"] is allow
    out = capsys.readouterr().out
    assert ("NOT COMPARED s:onnx:fp16" if allow else "REGRESSION s:onnx:fp16") in out, out


def test_hidden_and_temporary_files_in_exports_are_not_models(ckpts, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    real = exports / "dbd_student_64_fp32.onnx"
    real.write_bytes(b"placeholder")
    for name in (".dbd_student_64_fp32.1a2b3c4d.tmp.onnx", ".hidden.tflite", "x.tmp.onnx"):
        (exports / name).write_bytes(b"truncated")
    assert model_files(ckpts["good"], ckpts["noprep"], exports) == [ckpts["good"], ckpts["noprep"], real]


# ---- videos -------------------------------------------------------------------------------------


def test_video_save_mask_writes_the_mask_video_and_only_what_was_asked(ckpts, tmp_path):
    video = _video(tmp_path / "clip.mp4", 5)
    stale = tmp_path / "o" / ".clip_mask.mp4.tmp.mp4"
    stale.parent.mkdir()
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert (
        predict_main([str(video), "--weights", str(ckpts["good"]), "--out", str(tmp_path / "o"), "--save", "mask"]) == 0
    )
    assert sorted(_tree(tmp_path / "o")) == ["clip_mask.mp4"]  # no overlay, no temp file
    capture = cv2.VideoCapture(str(tmp_path / "o" / "clip_mask.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 5 and frames[0].shape[:2] == (48, 64)
    grey = np.concatenate([f.ravel() for f in frames]).astype(int)
    assert np.mean((grey < 40) | (grey > 215)) > 0.95  # a mask: black or white


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8], ids=["empty", "no_moov"]
)
def test_corrupt_video_is_exactly_one_line(content, ckpts, tmp_path, data_root):
    video = tmp_path / "broken.mp4"
    video.write_bytes(content)
    env = {k: v for k, v in _env(tmp_path, data_root).items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PREDICT_SCRIPT,
            str(video),
            "--weights",
            str(ckpts["good"]),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    _one_line_error(result.stderr, str(video))
    assert not (tmp_path / "out").exists()


PREDICT_SCRIPT = "import sys; from dbd.runtime.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_video_prediction_leaves_no_temp_file(sig, ckpts, tmp_path, data_root):
    video = _video(tmp_path / "long.mp4", 3000, (32, 32))
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier_blur.png").write_bytes(b"an earlier result")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PREDICT_SCRIPT,
            str(video),
            "--weights",
            str(ckpts["good"]),
            "--out",
            str(out),
            "--threads",
            "1",
            "--save",
            "map",
            "overlay",
        ],
        cwd=REPO,
        env=_env(tmp_path, data_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = _interrupt(proc, lambda: (out / ".long_overlay.mp4.tmp.mp4").exists(), sig)
    assert code == EXIT_CODE[sig], err
    assert (
        "Traceback" not in err
        and ("interrupted" if sig == signal.SIGINT else "terminated") in err.strip().splitlines()[-1]
    )
    assert sorted(_tree(out)) == ["earlier_blur.png"]  # nothing half-written, nothing lost
    assert not list((tmp_path / "tmpdir").iterdir())


# ---- ONNX export interrupted inside the dynamo exporter ----------------------------------------

# torch's dynamo exporter is replaced by one that waits (so the signal lands inside it) and, like
# the real one, wraps the KeyboardInterrupt it receives in its own exception type.
EXPORT_SCRIPT = r"""
import sys, time, pathlib, torch
marker = pathlib.Path(sys.argv[1])
original = torch.onnx.export
def slow_dynamo(*args, dynamo=True, **kwargs):
    if not dynamo:
        return original(*args, dynamo=False, **kwargs)
    try:
        marker.write_text("in the dynamo exporter")
        time.sleep(300)
    except KeyboardInterrupt as err:
        raise RuntimeError("Failed to export the model with torch.export") from err
torch.onnx.export = slow_dynamo
from dbd.export.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_onnx_export_stops_keeps_previous_file_and_leaves_no_temp(sig, ckpts, tmp_path, data_root):
    out = tmp_path / "exports"
    out.mkdir()
    previous = out / "dbd_student_64_fp32.onnx"
    previous.write_bytes(b"the previous export")
    before = _tree(out)
    marker = tmp_path / "marker"
    env = _env(tmp_path, data_root)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            EXPORT_SCRIPT,
            str(marker),
            "--format",
            "onnx",
            "--precision",
            "fp32",
            "--weights",
            str(ckpts["good"]),
            "--calib",
            "dut",
            "--calib-n",
            "1",
            "--parity-n",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = _interrupt(proc, marker.exists, sig)
    assert code == EXIT_CODE[sig], err
    assert "Traceback" not in err
    assert _tree(out) == before and previous.read_bytes() == b"the previous export"
    assert not [p.name for p in Path(env["TMPDIR"]).iterdir() if p.name.startswith("dbd-")]


def test_stale_export_temp_files_are_removed_and_fresh_ones_kept(tmp_path):
    from dbd.core import remove_stale_temps, temp_path

    final = tmp_path / "dbd_student_320_fp32.onnx"
    stale, fresh = temp_path(final), temp_path(final)
    assert stale.suffix == ".onnx" and stale.name.startswith(".dbd_student_320_fp32.onnx.") and stale != fresh
    stale_pkg = temp_path(tmp_path / "dbd_student_320_fp16.mlpackage")
    other = temp_path(tmp_path / "dbd_teacher_320_fp32.onnx")  # another export's: not ours to judge
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    (stale_pkg / "Data").mkdir(parents=True)
    old = time.time() - 3600
    for path in (stale, other, stale_pkg):
        os.utime(path, (old, old))
    remove_stale_temps([final, tmp_path / "dbd_student_320_fp16.mlpackage"], time.time() - 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])


# ---- training data: masks that make no sense, and plain folders without a split file -----------


def _pairs(folder: Path, masks: list[np.ndarray], size: int = 64) -> Path:
    """A plain images/ + masks/ folder, one random photo per mask (PNG, 8-bit grey masks)."""
    for i, mask in enumerate(masks):
        _image(folder / "images" / f"p{i:02d}.png", size, size, value=60 + i)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "masks" / f"p{i:02d}.png"), mask)
    return folder


def _half(size: int = 64, white: int = 255) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[:, : size // 2] = white
    return mask


def _train_cfg(data: Path, **kwargs):
    from dbd.training.config import TrainConfig

    return TrainConfig(
        **{"data": str(data), "polarity": "blur_white", "split": "", "val_fraction": 0.3, **kwargs}
    ).validate()


def test_masks_stored_as_zero_and_one_stop_with_the_file_and_the_fix(tmp_path):
    from dbd.runtime.imageio import read_mask

    path = tmp_path / "m.png"
    cv2.imwrite(str(path), _half(white=1))
    for polarity in ("blur_white", "sharp_white"):
        with pytest.raises(DBDError) as err:
            read_mask(path, polarity)
        assert str(path) in str(err.value) and "0 and 1" in str(err.value) and "255" in str(err.value)
        assert "\n" not in str(err.value)
    # constant masks are legitimate one by one (all-blur and all-sharp photos exist)
    for value, blur in ((0, 0.0), (255, 1.0)):
        cv2.imwrite(str(path), np.full((8, 8), value, np.uint8))
        assert (read_mask(path, "blur_white") == blur).all()


def test_dbd_train_on_zero_one_masks_is_one_line_naming_the_mask(tmp_path, capsys):
    from dbd.training.cli import main as train_main

    data = _pairs(tmp_path / "data", [_half(white=1)] * 6)
    out = tmp_path / "run"
    assert (
        train_main(
            [
                "teacher",
                "--data",
                str(data),
                "--polarity",
                "blur_white",
                "--split",
                "",
                "--out",
                str(out),
                "--workers",
                "0",
                "--threads",
                "1",
            ]
        )
        == 2
    )
    _one_line_error(capsys.readouterr().err, str(data / "masks"), "0 and 1", "255")
    assert not out.exists()


@pytest.mark.parametrize(
    "value, polarity, kind", [(0, "blur_white", "sharp"), (255, "blur_white", "blur"), (255, "sharp_white", "sharp")]
)
def test_a_dataset_of_one_class_is_refused_naming_the_folder(value, polarity, kind, tmp_path):
    from dbd.training.data import load_pairs

    data = _pairs(tmp_path / "data", [np.full((64, 64), value, np.uint8)] * 6)
    with pytest.raises(DBDError) as err:
        load_pairs(_train_cfg(data, polarity=polarity))
    assert f"reads as all {kind}" in str(err.value) and str(data / "masks") in str(err.value)
    assert "--polarity" in str(err.value) and "\n" not in str(err.value)


def test_constant_masks_among_varied_ones_train(tmp_path):
    from dbd.training.data import load_pairs

    data = _pairs(tmp_path / "data", [np.zeros((64, 64), np.uint8), np.full((64, 64), 255, np.uint8)] + [_half()] * 6)
    train, val, description = load_pairs(_train_cfg(data))
    assert len(train) + len(val) == 8


def test_plain_folder_trains_on_all_pairs_with_the_hash_hold_out(tmp_path, capsys):
    from dbd.training.cli import main as train_main
    from dbd.training.data import _holdout, load_pairs

    data = _pairs(tmp_path / "data", [_half()] * 10)
    train, val, description = load_pairs(_train_cfg(data))
    names = sorted(train.names + val.names)
    assert names == [f"p{i:02d}" for i in range(10)] and "split all" in description
    assert val.names == [n for n in names if _holdout(n, 0.3)] and train.names and val.names
    out = tmp_path / "run"
    assert (
        train_main(
            [
                "teacher",
                "--data",
                str(data),
                "--polarity",
                "blur_white",
                "--split",
                "",
                "--out",
                str(out),
                "--val-fraction",
                "0.3",
                "--imgsz",
                "64",
                "--low-res",
                "64",
                "--batch",
                "4",
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "1",
                "--workers",
                "0",
                "--threads",
                "1",
                "--warmup-steps",
                "1",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert 'split = ""' in (out / "config.toml").read_text() and (out / "best.safetensors").is_file()


def test_split_all_never_trains_on_a_test_split_and_plain_folders_are_told_about_it(tmp_path):
    from dbd.training.data import load_pairs

    with pytest.raises(DBDError, match="test split .* use --split train"):
        load_pairs(_train_cfg("cuhk", polarity=None))
    data = _pairs(tmp_path / "data", [_half()] * 4)
    with pytest.raises(DBDError, match="--split '' for all pairs"):
        load_pairs(_train_cfg(data, split="train"))


# ---- runners: interrupts inside onnxruntime, cards without preprocess, non-finite output in bench -


def test_ctrl_c_wrapped_by_onnxruntime_is_not_swallowed(tmp_path, monkeypatch):
    import onnxruntime

    import dbd.runtime.runners as runners
    from dbd.runtime.formats import get_format

    spec = PreprocessSpec.for_model(create_model("dbd_student"), (64, 64)).to_dict()
    monkeypatch.setattr(runners, "read_metadata", lambda path: {"file": {"precision": "fp32"}, "preprocess": spec})

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise RuntimeError("onnxruntime failed") from err

    monkeypatch.setattr(onnxruntime, "InferenceSession", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_format("onnx").runner(tmp_path / "m.onnx")


def test_torch_runner_on_a_card_without_preprocess_is_a_dbd_error(ckpts):
    from dbd.runtime.runners import TorchRunner

    with pytest.raises(DBDError) as err:
        TorchRunner(ckpts["noprep"])
    assert "'preprocess'" in str(err.value) and str(ckpts["noprep"]) in str(err.value)


def test_bench_non_finite_output_names_the_file(ckpts, tmp_path, capsys, monkeypatch):
    from dbd.runtime.runners import TorchRunner

    monkeypatch.setattr(TorchRunner, "run", lambda self, x: np.full(x.shape[:3], np.nan, np.float32))
    report = tmp_path / "report"
    assert bench_main(_bench_args(ckpts, tmp_path, "--report", str(report))) == 2
    _one_line_error(capsys.readouterr().err, str(ckpts["good"]), "non-finite")
    assert not report.exists()


# ---- very large photos: decoded at reduced size, said in one line, no PIL warning ---------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_large_photo_is_decoded_reduced_upright_and_said_in_one_line(suffix, tmp_path, capsys, monkeypatch):
    import warnings

    import PIL.Image

    import dbd.runtime.imageio as imageio

    monkeypatch.setattr(imageio, "LARGE_PHOTO_PIXELS", 10_000)
    monkeypatch.setattr(imageio, "REDUCED_PIXELS", 3_000)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 10_000)  # so this file would trip PIL's bomb warning
    stored = np.zeros((80, 160, 3), np.uint8)
    stored[:, :80] = 255  # stored landscape, left half white
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # displayed portrait: white on top
    path = tmp_path / f"big{suffix}"
    PIL.Image.fromarray(stored).save(path, exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning
        image = imageio.read_image(path)
    assert image.shape == (40, 20, 3)  # 1/4 size, upright
    assert image[2, 10].min() > 200 and image[-3, 10].max() < 50
    err = capsys.readouterr().err
    _one_line_error(err, str(path), "decoded at 1/4 size (20x40)")
    small = tmp_path / f"small{suffix}"
    PIL.Image.fromarray(stored[:40, :60]).save(small)
    assert imageio.read_image(small).shape == (40, 60, 3) and not capsys.readouterr().err


# Peak resident memory of this process's own address space: VmHWM starts afresh at exec, whereas
# ru_maxrss keeps the high-water mark of the forking pytest process (1.3 GB after training tests).
BIG_PNG_SCRIPT = r"""
import sys
from dbd.runtime.cli import main
code = main(sys.argv[1:])
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("maxrss_mb", hwm_kb / 1024)
sys.exit(code)
"""


@pytest.mark.slow
def test_110_megapixel_png_predicts_without_warning_or_a_4gb_peak(ckpts, tmp_path, data_root):
    import PIL.Image

    photo, out = tmp_path / "huge.png", tmp_path / "out"
    h, w = 11000, 10000  # 110 megapixels
    pixels = np.empty((h, w, 3), np.uint8)
    pixels[:] = (np.arange(w) % 251).astype(np.uint8)[None, :, None]
    PIL.Image.fromarray(pixels).save(photo, compress_level=1)
    del pixels
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BIG_PNG_SCRIPT,
            str(photo),
            "--weights",
            str(ckpts["good"]),
            "--out",
            str(out),
            "--threads",
            "1",
            "--save",
            "map",
        ],
        cwd=REPO,
        env=_env(tmp_path, data_root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    _one_line_error(result.stderr, str(photo), "110 megapixels", "decoded at 1/4 size")
    assert "DecompressionBomb" not in result.stderr
    fields = result.stdout.split()
    assert float(fields[fields.index("maxrss_mb") + 1]) < 1200, result.stdout  # it was 4 GB decoded whole
    assert cv2.imread(str(out / "huge_blur.png"), cv2.IMREAD_UNCHANGED).shape == (2750, 2500)


# ---- dbd-train --resume with a damaged or hostile state ---------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("garbage", "truncated or corrupt"),
        ("truncated", "truncated or corrupt"),
        ("code", "pickled code"),
        ("foreign", "not a dbd-train state"),
    ],
)
def test_resume_from_a_damaged_or_pickled_state_is_one_line(case, fragment, tmp_path, capsys):
    from dbd.training.cli import main as train_main

    out = tmp_path / "run"
    out.mkdir()
    state, marker = out / "last_state.pt", tmp_path / "payload-ran"
    if case == "garbage":
        state.write_bytes(b"not a torch file at all" * 10)
    elif case == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 0}, state)
        state.write_bytes(state.read_bytes()[:600])
    elif case == "code":
        torch.save({"model": _Payload(marker), "epoch": 0}, state)
    else:
        torch.save([1, 2, 3], state)
    before = _tree(out)
    assert train_main(["teacher", *TINY, "--resume", "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, str(state), fragment, "--resume")
    assert not marker.exists()  # the payload never ran
    assert _tree(out) == before


# ---- issue 24: crashes and late errors found before any work ------------------------------------


def _fail_if_loaded(monkeypatch) -> None:
    """Any number must be refused before the checkpoint and the images are loaded."""
    import dbd.export.api as export_run

    monkeypatch.setattr(export_run, "make_job", lambda *a, **k: pytest.fail("loaded the model before checking"))


def test_export_of_a_checkpoint_with_nan_maps_stops_before_any_conversion(tmp_path, capsys, monkeypatch):
    import dbd.export.pipeline as pipeline

    torch.manual_seed(0)
    model = create_model("dbd_student")
    with torch.no_grad():  # finite weights, but sqrt(negative variance) = NaN maps
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.fill_(-1.0)
    ckpt = tmp_path / "negative_var.safetensors"
    save_checkpoint(ckpt, model, {"preprocess": PreprocessSpec.for_model(model, (64, 64)).to_dict()})
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: pytest.fail("converted a model with NaN maps"))
    args = ["--format", "tflite", "--weights", str(ckpt), "--calib", "dut", "--calib-n", "1", "--parity-n", "1"]
    assert export_main([*args, "--out", str(tmp_path / "exp")]) == 2
    _one_line_error(capsys.readouterr().err, str(ckpt), "non-finite blur maps")
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--calib-n", "100000"], "--calib-n must be a whole number from 1 to 1000"),
        (["--parity-n", "100000"], "--parity-n"),
        (["--imgsz", "100000"], "at most 4096"),
        (["--imgsz", "2000000000x2000000000"], "at most 4096"),
        (["--fp16-min-psnr", "nan"], "--fp16-min-psnr must be a finite number"),
        (["--int8-max-dfbeta", "-1"], "--int8-max-dfbeta"),
        (["--fp32-max-abs", "inf"], "--fp32-max-abs"),
        (["--int8-min-psnr", "-5"], "--int8-min-psnr"),
    ],
)
def test_export_numbers_are_checked_before_any_work(args, fragment, tmp_path, capsys, monkeypatch):
    _fail_if_loaded(monkeypatch)
    assert export_main(["--format", "onnx", "--precision", "int8", *args, "--out", str(tmp_path / "exp")]) == 2
    _one_line_error(capsys.readouterr().err, fragment)
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    "kwargs, fragment", [({"out": 123}, "out must be a folder path"), ({"weights": 5}, "weights must be")]
)
def test_export_model_refuses_wrong_argument_types(kwargs, fragment, monkeypatch):
    from dbd.export import export_model

    _fail_if_loaded(monkeypatch)
    with pytest.raises(DBDError, match=fragment):
        export_model(formats="onnx", **kwargs)


def test_killed_exports_temp_folders_are_removed_by_the_next_run(tmp_path, monkeypatch):
    import tempfile

    from dbd.export.pipeline import run_tempdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"dbd-export-{int(dead.stdout)}-abcd1234"
    (stale / "ort.quant.x1y2").mkdir(parents=True)  # what a SIGKILLed int8 calibration leaves
    alive = tmp_path / f"dbd-export-{os.getppid()}-efgh5678"  # another export still running
    alive.mkdir()
    legacy, recent = tmp_path / "dbd-onnx-int8-old1", tmp_path / "dbd-onnx-int8-new1"  # earlier versions'
    legacy.mkdir()
    recent.mkdir()
    os.utime(legacy, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    with run_tempdir() as folder:
        assert not stale.exists() and alive.exists()
        assert not legacy.exists() and recent.exists()  # a day old: stale; recent: maybe still in use
        with tempfile.TemporaryDirectory(prefix="ort.quant.") as converter_tmp:  # as onnxruntime makes them
            assert Path(converter_tmp).parent == folder
            (Path(converter_tmp) / "big.onnx").write_bytes(b"x")
            raise_later = folder
    assert not raise_later.exists() and alive.exists()
    assert tempfile.tempdir == str(tmp_path)


def test_thread_counts_are_bounded_before_any_native_pool_starts(ckpts, tmp_path, capsys):
    from dbd.runtime.predict_files import predict

    photo = _image(tmp_path / "in" / "a.png", 32, 32)
    assert predict_main([str(photo), "--weights", str(ckpts["good"]), "--threads", "100000"]) == 2
    _one_line_error(capsys.readouterr().err, "--threads", "256")
    with pytest.raises(DBDError, match="at most 256"):
        Predictor(ckpts["good"], threads=100000)
    with pytest.raises(DBDError, match="--threads"):
        predict(photo, tmp_path / "out", weights=ckpts["good"], threads="4")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"limit": "5"}, "--limit (0: every pair) must be a whole number"),
        ({"limit": 2.5}, "--limit"),
        ({"warmup": -1}, "--warmup must be a whole number at least 0"),
        ({"runs": "50"}, "--runs"),
        ({"threads": [100000]}, "--threads must be a whole number at most 256"),
        ({"threads": "4"}, "threads takes a list"),
    ],
)
def test_bench_run_checks_its_arguments_first(kwargs, fragment, monkeypatch):
    import dbd.benchmarks.bench as bench_module

    monkeypatch.setattr(bench_module, "open_dataset", lambda *a, **k: pytest.fail("opened the data before checking"))
    with pytest.raises(DBDError) as err:
        bench_module.run(report=None, **kwargs)
    assert fragment in str(err.value)


def test_bench_cli_refuses_negative_warmup(ckpts, tmp_path, capsys, monkeypatch):
    import dbd.benchmarks.bench as bench_module

    monkeypatch.setattr(bench_module, "bench_row", lambda *a, **k: pytest.fail("benchmarked with --warmup -1"))
    assert bench_main(_bench_args(ckpts, tmp_path, "--warmup", "-1", "--report", str(tmp_path / "r"))) == 2
    _one_line_error(capsys.readouterr().err, "--warmup")


def test_bench_weights_given_as_one_string_is_one_file(ckpts, tmp_path):
    exported = tmp_path / "x.onnx"
    exported.write_bytes(b"placeholder")
    files = model_files(ckpts["good"], ckpts["noprep"], None, str(exported))
    assert files == [ckpts["good"], ckpts["noprep"], exported]


def test_full_disk_is_one_line_before_the_benchmark_and_keeps_the_old_file(ckpts, tmp_path, capsys, monkeypatch):
    import errno

    import dbd.benchmarks.bench as bench_module
    from dbd.core import atomic_write

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    old = tmp_path / "baseline.json"
    old.write_text("previous")

    def write(tmp):
        Path(tmp).write_text("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DBDError, match="No space left on device"):
        atomic_write(old, write)
    assert old.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["baseline.json"]

    monkeypatch.setattr(bench_module, "bench_row", lambda *a, **k: pytest.fail("benchmarked onto a full disk"))
    monkeypatch.setattr(os, "write", full)
    report = tmp_path / "report"
    assert bench_main(_bench_args(ckpts, tmp_path, "--report", str(report), "--update-baseline", str(old))) == 2
    _one_line_error(capsys.readouterr().err, "--report", "No space left on device")
    assert old.read_text() == "previous" and not report.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lr", "nan"], "--lr"),
        (["--weight-decay", "inf"], "--weight-decay"),
        (["--imgsz", "100000"], "--imgsz must be at most 4096"),
        (["--threads", "100000"], "--threads must be at most 256"),
    ],
)
def test_train_numbers_must_be_finite_and_sane(args, fragment, tmp_path, capsys):
    from dbd.training.cli import main as train_main

    out = tmp_path / "run"
    assert train_main(["teacher", *args, "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, fragment)
    assert not out.exists()


def test_train_config_with_nan_names_the_file_and_key(tmp_path, capsys):
    from dbd.training.cli import main as train_main

    config = tmp_path / "run.toml"
    config.write_text("weight_decay = nan\n")
    assert train_main(["teacher", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys.readouterr().err, str(config), "'weight_decay' must be a finite number")


@pytest.mark.parametrize(
    "cli, args",
    [
        ("dbd.runtime.cli", ["--no-such-flag"]),
        ("dbd.benchmarks.cli", ["--runs", "many"]),
        ("dbd.training.cli", ["teacher", "--epochs", "x"]),
        ("dbd.training.cli", []),
        ("dbd.export.cli", ["--no-such-flag"]),
    ],
)
def test_every_cli_reports_a_bad_flag_on_one_line_without_usage(cli, args, capsys):
    import importlib

    assert importlib.import_module(cli).main(args) == 2
    line = _one_line_error(capsys.readouterr().err, "--help")
    assert "usage:" not in line


def test_one_tflite_predictor_shared_by_threads_gives_each_its_own_result(small_int8_tflite):
    from concurrent.futures import ThreadPoolExecutor

    predictor = Predictor(small_int8_tflite, threads=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(8)]
    expected = [predictor.predict(image) for image in images]
    with ThreadPoolExecutor(4) as pool:  # LiteRT raised "at least 1 reference to internal data" here
        for _ in range(3):
            got = list(pool.map(predictor.predict, images))
            for a, b in zip(got, expected):
                np.testing.assert_array_equal(a, b)


# ---- issue 24: dbd-predict never reads its own outputs; links and folders say what is wrong -------


def test_predict_refuses_an_out_folder_that_is_an_input_folder(ckpts, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    _image(photos / "a.png", 32, 32)
    before = _tree(photos)
    monkeypatch.chdir(tmp_path)
    for out in ("photos", "."):  # outputs at photos/photos/a_* or ./photos/a_*: inside the input folder
        assert predict_main(["photos", "--weights", str(ckpts["good"]), "--out", out]) == 2
        _one_line_error(capsys.readouterr().err, "inside the input folder 'photos'", "--out")
        assert _tree(photos) == before


def test_predict_twice_into_a_sub_folder_of_the_input_never_reads_its_outputs(ckpts, tmp_path, capsys):
    photos = tmp_path / "photos"
    _image(photos / "a.png", 32, 32)
    _image(photos / "b.png", 40, 32)
    out = photos / "predictions"
    for _ in range(2):
        assert predict_main([str(photos), "--weights", str(ckpts["good"]), "--out", str(out)]) == 0
        assert "for 2 file(s)" in capsys.readouterr().out  # not 2 + the first run's 6 outputs
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        f"{n}_{k}" for n in "ab" for k in ("blur.png", "mask.png", "overlay.jpg")
    )


def test_broken_links_and_symlink_loops_are_skipped_saying_what_is_wrong(ckpts, tmp_path, capsys):
    photos = tmp_path / "photos"
    _image(photos / "ok.png", 32, 32)
    (photos / "dangling.jpg").symlink_to("missing.jpg")
    (photos / "loop.jpg").symlink_to("loop.jpg")
    (photos / "again").symlink_to(".")  # a folder loop: symlinked folders are not followed
    out = tmp_path / "out"
    assert predict_main([str(photos), "--weights", str(ckpts["good"]), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert sorted(lines) == [
        f"dbd-predict: skipped: '{photos / 'dangling.jpg'}' is a broken link (to 'missing.jpg', which does not "
        f"exist); fix or remove it",
        f"dbd-predict: skipped: '{photos / 'loop.jpg'}' is a symlink loop (it leads back to itself); fix or remove it",
    ], captured.err
    assert "for 1 file(s)" in captured.out and "2 skipped" in captured.out
    assert predict_main([str(photos / "loop.jpg"), "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, "is a symlink loop")


def test_an_unreadable_folder_is_reported_as_unreadable(ckpts, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    _image(photos / "ok.png", 32, 32)
    _image(photos / "locked" / "x.png", 32, 32)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":  # as chmod 000 does for anyone but root
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    assert predict_main([str(photos), "--weights", str(ckpts["good"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"dbd-predict: skipped: cannot read folder '{photos / 'locked'}' (Permission denied)" in err, err
    assert predict_main([str(photos / "locked"), "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, "cannot read folder", "Permission denied")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_photo_above_pils_bomb_limit_is_decoded_reduced_not_refused(suffix, tmp_path, capsys, monkeypatch):
    import PIL.Image

    import dbd.runtime.imageio as imageio

    # as a 20000x20000 photo is against PIL's default limit (an error above 179 megapixels)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1_000)
    monkeypatch.setattr(imageio, "LARGE_PHOTO_PIXELS", 10_000)
    monkeypatch.setattr(imageio, "REDUCED_PIXELS", 3_000)
    path = tmp_path / f"huge{suffix}"
    PIL.Image.fromarray(np.full((80, 160, 3), 200, np.uint8)).save(path)
    assert imageio.read_image(path).shape == (20, 40, 3)
    _one_line_error(capsys.readouterr().err, "decoded at 1/4 size")
    assert PIL.Image.MAX_IMAGE_PIXELS == 1_000  # PIL's global setting is left as it was
    monkeypatch.setattr(imageio, "MAX_JPEG_PIXELS", 5_000)
    monkeypatch.setattr(imageio, "MAX_OTHER_PIXELS", 5_000)
    with pytest.raises(DBDError, match=r"160x80 is 0 megapixels, more than 0 megapixels .*downscale it"):
        imageio.read_image(path)


# ---- issue 24: smaller ones -------------------------------------------------------------------


def test_checkpoints_are_as_readable_as_exports(tmp_path):
    ckpt = _save_student(tmp_path / "student.safetensors")  # save_checkpoint, as dbd-train writes them
    umask = os.umask(0)
    os.umask(umask)
    assert ckpt.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors alone leaves 0600


def test_a_rerun_removes_stale_video_temps_of_kinds_it_does_not_save(ckpts, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    _video(clips / "clip.mp4", 3)
    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    stale = out / "clips" / ".clip_mask.mp4.tmp.mp4"  # a SIGKILLed run's half-written mask video
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert predict_main([str(clips), "--weights", str(ckpts["good"]), "--out", str(out), "--save", "map"]) == 0
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["clip_blur.mp4"]


# ---- issue 24: an exported file's metadata must agree with itself and with its graph ------------


@pytest.fixture(scope="module")
def small_onnx(ckpts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    args = ["--format", "onnx", "--precision", "fp32", "--weights", str(ckpts["good"]), "--calib", "dut"]
    assert export_main([*args, "--calib-n", "1", "--parity-n", "1", "--out", str(out)]) == 0
    return next(out.glob("*.onnx"))


@pytest.fixture(scope="module")
def small_int8_tflite(ckpts, tmp_path_factory) -> Path:
    """An int8 .tflite exported in the test (a fresh clone has no exports/ folder)."""
    out = tmp_path_factory.mktemp("tflite")
    args = ["--format", "tflite", "--precision", "int8", "--weights", str(ckpts["good"]), "--calib", "dut"]
    assert export_main([*args, "--calib-n", "2", "--parity-n", "1", "--out", str(out)]) == 0
    return next(out.glob("*.tflite"))


def _edited(src: Path, dest: Path, change) -> Path:
    from dbd.export.metadata import dumps
    from dbd.runtime.metadata import read_metadata

    meta = read_metadata(src)
    change(meta)
    if src.suffix == ".onnx":
        import onnx

        model = onnx.load(str(src))
        next(p for p in model.metadata_props if p.key == "dbd").value = dumps(meta)
        onnx.save(model, str(dest))
    else:
        from dbd.export.tflite_flatbuffer import embed_metadata

        dest.write_bytes(embed_metadata(src.read_bytes(), dumps(meta)))
    return dest


def _nhwc(meta: dict) -> None:  # layout and shape edited together: only the graph tells
    meta["input"].update(layout="NHWC", shape=[1, *meta["input"]["size"], 3])
    meta["preprocess"]["layout"] = "NHWC"


EDITS = {
    "onnx_float16_input": (lambda m: m["input"].update(dtype="float16"), "'input.dtype' is float16 but the graph"),
    "onnx_nhwc_layout": (lambda m: m["input"].update(layout="NHWC"), "'input.layout' NHWC contradicts 'input.shape'"),
    "onnx_nhwc_layout_and_shape": (_nhwc, "declares input shape"),
    "tflite_mean": (lambda m: m["input"].update(mean=[0.5, 0.5, 0.5]), "'input.mean' [0.5, 0.5, 0.5] contradicts"),
    "tflite_std": (lambda m: m["input"].update(std=[1, 1, 1]), "contradicts 'preprocess.std'"),
    "tflite_zero_point": (
        lambda m: m["input"]["quantization"].update(zero_point=0),
        "'input.quantization' {'scale': 1.0, 'zero_point': 0} contradicts the graph's (scale 1, zero point -128)",
    ),
    "tflite_output_scale": (lambda m: m["output"]["quantization"].update(scale=1 / 255), "'output.quantization'"),
    "tflite_meaning": (lambda m: m["output"].update(meaning="sharp_probability"), "'output.meaning'"),
    "tflite_blur_value": (lambda m: m["output"].update(blur_value=0), "'output.blur_value' is 0"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_export_whose_metadata_contradicts_itself_or_its_graph_is_refused(
    edit, small_onnx, small_int8_tflite, tmp_path, capsys
):
    change, fragment = EDITS[edit]
    src = small_onnx if edit.startswith("onnx") else small_int8_tflite
    edited = _edited(src, tmp_path / f"edited{src.suffix}", change)
    Predictor(src, threads=1)  # the file as exported loads
    with pytest.raises(DBDError, match="re-export it") as err:
        Predictor(edited, threads=1)
    assert fragment in str(err.value) and str(edited) in str(err.value)
    photo = _image(tmp_path / "a.png", 32, 32)
    assert predict_main([str(photo), "--weights", str(edited), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys.readouterr().err, fragment)


def test_onnx_int8_calibration_holds_one_chunk_of_images_at_a_time(ckpts, tmp_path, monkeypatch):
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    import dbd.export.onnx_format as onnx_format

    monkeypatch.setattr(onnx_format, "CALIB_CHUNK", 2)  # as 64 is for a run with --calib-n above 64
    sizes = []
    collect = HistogramCalibrater.collect_data

    def spy(self, reader):
        n = 0
        real_next = reader.get_next

        def counting():
            nonlocal n
            item = real_next()
            n += item is not None
            return item

        reader.get_next = counting
        collect(self, reader)
        sizes.append(n)

    monkeypatch.setattr(HistogramCalibrater, "collect_data", spy)
    args = ["--format", "onnx", "--precision", "int8", "--weights", str(ckpts["good"]), "--calib", "dut"]
    assert export_main([*args, "--calib-n", "4", "--parity-n", "1", "--out", str(tmp_path / "exp")]) == 0
    assert sizes == [2, 2]  # every image, never more than a chunk of them at once
