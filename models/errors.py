"""User-facing errors and the one place that turns them into a clean CLI exit.

Every error a user can cause (a corrupt image, a foreign checkpoint, a bad flag) is raised as
`DBDError` with a one-line message that names the file and the fix. Command-line entry points
wrap their `main` with `cli_entry`, so the user sees that line, never a traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable


class DBDError(Exception):
    """An error caused by the user's input; its message is one line: what, which file, the fix."""


def cli_entry(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Decorate a CLI `main`: DBDError -> 'prog: error: message' on stderr and exit code 2."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return int(main(*args, **kwargs) or 0)
            except DBDError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130

        return run

    return wrap
