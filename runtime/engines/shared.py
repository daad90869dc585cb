"""What the engine modules share with each other and with the export side: `quiet`, which keeps an
engine's or a converter's console output (progress bars, banners, C++ logs) off the terminal, and
`package_versions`, the installed versions of the libraries a profile or an export names."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import tempfile
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silence the converters' progress bars, banners and C++ logs (file descriptors 1 and 2).

    On an exception the captured tail is attached to it as a note, so nothing useful is lost.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as err:
            sys.stdout.flush()
            sys.stderr.flush()
            sink.seek(0)
            tail = sink.read()[-4000:].decode("utf-8", "replace")
            if tail.strip() and hasattr(err, "add_note"):
                err.add_note("converter output (tail):\n" + tail)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def package_versions(*names: str) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
