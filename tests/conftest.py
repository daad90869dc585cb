"""Shared fixtures. The benchmark data lives outside the repo, found through one setting: DBD_DATA
(default: ../shared/data beside the checkout). Tests that need it fail with a message that says
exactly what is missing, rather than silently skipping coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbd.core import DBDError


@pytest.fixture(scope="session")
def data_root() -> Path:
    from dbd.runtime.datasets import find_data_root

    try:
        return find_data_root()
    except DBDError as err:
        pytest.fail(f"benchmark data missing: {err}")
