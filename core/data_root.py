"""Where the benchmark data lives: one setting for every stage (DBD_DATA, default ../shared/data).

The data never lives in the repository; tests, benchmarks, training and dbd-predict's demo photos
all find it here, and say exactly what is missing when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DBDError

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_data_root() -> Path:
    """The shared data folder: $DBD_DATA if set, else ../shared/data beside the cwd or the repo."""
    configured = os.environ.get("DBD_DATA", "").strip()
    if configured:
        root = Path(configured).expanduser()
        if not root.is_dir():
            raise DBDError(
                f"DBD_DATA points to '{root}', which is not an existing folder; "
                f"set DBD_DATA=/path/to/shared/data (or unset it to use ../shared/data)"
            )
        return root.resolve()
    candidates = [Path.cwd() / "../shared/data", REPO_ROOT / "../shared/data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    looked = ", ".join(f"'{c.resolve()}'" for c in candidates)
    raise DBDError(f"benchmark data not found (looked in {looked}); set DBD_DATA=/path/to/shared/data")
