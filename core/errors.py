"""User-facing errors and the one place that turns them into a clean CLI exit.

Every error a user can cause (a corrupt image, a foreign checkpoint, a bad flag) is raised as
`DBDError` with a one-line message that names the file and the fix. Command-line entry points
wrap their `main` with `cli_entry`, so the user sees that line, never a traceback.

Interruptions: `cli_entry` turns SIGINT (Ctrl-C) and SIGTERM into exceptions (`KeyboardInterrupt`,
`Terminated`), so every `finally` and every atomic write cleans up its temporary files, and the
command exits 130 (SIGINT) or 143 (SIGTERM). Code that must catch a converter's failures with a
broad `except Exception` calls `reraise_interrupt(err)` first: some libraries wrap the
KeyboardInterrupt they receive in their own exception types, which would otherwise swallow it.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
from typing import Callable


class DBDError(Exception):
    """An error caused by the user's input; its message is one line: what, which file, the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same cleanup runs (a KeyboardInterrupt, not an Exception)."""


_received: list[int] = []  # signals received during the current cli_entry run


def _on_signal(signum, frame) -> None:
    _received.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def reraise_interrupt(err: BaseException) -> None:
    """Re-raise an interrupt hidden in `err`: `err` itself, its cause/context chain, or a signal
    received during this run (for libraries that wrap or drop the KeyboardInterrupt). Call it
    first in every `except Exception` that would otherwise carry on."""
    seen, stack = set(), [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            raise e
        stack += [e.__cause__, e.__context__]
    if _received:
        raise Terminated() if _received[-1] == signal.SIGTERM else KeyboardInterrupt()


class ArgumentParser(argparse.ArgumentParser):
    """argparse for a `cli_entry` main: a bad flag is the same one line as every other error
    ('prog: error: message (see prog --help)', exit 2), not a usage block before it.
    Sub-commands (`add_subparsers`) inherit it."""

    def error(self, message: str):
        raise DBDError(f"{message} (see {self.prog} --help)")


def cli_entry(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Decorate a CLI `main`: DBDError -> 'prog: error: message' on stderr and exit code 2;
    Ctrl-C -> exit 130, SIGTERM -> exit 143, after the cleanup of every temporary file."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            previous = {}
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    previous[sig] = signal.signal(sig, _on_signal)
            _received.clear()
            try:
                return int(main(*args, **kwargs) or 0)
            except DBDError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                return 2
            except KeyboardInterrupt as err:
                terminated = isinstance(err, Terminated)
                print(
                    f"{prog}: {'terminated' if terminated else 'interrupted'}; "
                    f"files written before were kept, none was left half-written",
                    file=sys.stderr,
                )
                return 143 if terminated else 130
            finally:
                _received.clear()
                for sig, handler in previous.items():
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

        return run

    return wrap
