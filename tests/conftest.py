"""Shared fixtures. The benchmark data lives outside the repo, found through one setting: DBD_DATA
(default: ../shared/data beside the checkout). Tests that need it fail with a message that says
exactly what is missing, rather than silently skipping coverage."""

from __future__ import annotations

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
    from dbd.runtime.datasets import find_data_root

    try:
        return find_data_root()
    except DBDError as err:
        pytest.fail(f"benchmark data missing: {err}")
