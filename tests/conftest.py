"""Shared fixtures. The benchmark data lives outside the repo, found through one setting: DBD_DATA
(default: ../shared/data beside the checkout). Tests that need it fail with a message that says
exactly what is missing, rather than silently skipping coverage."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest

from dbd.core import DBDError

# A training run small enough for a test: synthetic data at 64², one thread. Test modules take it as
# `from conftest import TINY`.
TINY = [
    "--data",
    "synthetic",
    "--synthetic-len",
    "12",
    "--val-fraction",
    "0.25",
    "--imgsz",
    "64",
    "--low-res",
    "64",
    "--batch",
    "4",
    "--workers",
    "0",
    "--threads",
    "1",
    "--warmup-steps",
    "2",
]


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """One tiny teacher run for the whole session (distillation, architecture and cache tests)."""
    from dbd.training.cli import main

    out = tmp_path_factory.mktemp("teacher")
    assert (
        main(["teacher", *TINY, "--epochs", "1", "--max-steps-per-epoch", "1", "--amp", "off", "--out", str(out)]) == 0
    )
    return out / "best.safetensors"


@pytest.fixture(scope="session")
def data_root() -> Path:
    from dbd.data.datasets import find_data_root

    try:
        return find_data_root()
    except DBDError as err:
        pytest.fail(f"benchmark data missing: {err}")


def quietly(main, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a CLI's main called in-process. Test modules take it as
    `from conftest import quietly`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


SMALL_SIZE = 64  # the input size of `small_shipped_student`


@pytest.fixture(scope="session")
def small_shipped_student(tmp_path_factory) -> Path:
    """The shipped student's weights with a 64x64 input size (quick exports of the real network)."""
    from dbd.models.checkpoint import load_checkpoint, save_checkpoint
    from dbd.models.shipped import released_checkpoint
    from dbd.runtime.spec import PreprocessSpec

    model, card = load_checkpoint(released_checkpoint("dbd_student"))
    spec = dataclasses.replace(PreprocessSpec.from_dict(card["preprocess"]), input_size=(SMALL_SIZE, SMALL_SIZE))
    path = tmp_path_factory.mktemp("ckpt") / "dbd_student.safetensors"
    save_checkpoint(path, model, {**card, "preprocess": spec.to_dict()})
    return path


def predicts_a_photo_and_benches_like_its_checkpoint(
    predicted: Path, benched: Path, checkpoint: Path, data_root: Path, out: Path
) -> None:
    """What a format plug-in owes the two other commands: dbd-predict writes the blur map of a real
    photo with `predicted`, and dbd-bench scores `benched` with rows whose maps match `checkpoint`'s
    (PSNR > 60 dB). Test modules take it as `from conftest import predicts_a_photo_and_benches_like_its_checkpoint`."""
    from dbd.benchmarks import run
    from dbd.runtime.cli import main as predict_main
    from dbd.runtime.formats import format_of

    photo = sorted((data_root / "photos").rglob("*.jpg"))[0]
    code, stdout, stderr = quietly(
        predict_main, [str(photo), "--weights", str(predicted), "--out", str(out), "--save", "map"]
    )
    assert code == 0, stderr + stdout
    assert [p.name for p in out.rglob("*_blur.png")] == [f"{photo.stem}_blur.png"]

    result = run(teacher=checkpoint, student=checkpoint, exports=None, weights=[benched], runs=0, limit=3, report=None)
    rows = [row for row in result.rows if row.get("file") == str(benched)]
    row_id = f"dbd_student:{format_of(benched).name}:{benched.stem.rsplit('_', 1)[1]}"
    assert rows and all(row["id"].startswith(row_id) for row in rows)
    assert all(row["vs_student"]["psnr"] > 60 for row in rows)  # the same maps as the checkpoint's
