"""Writing files safely: `atomic_write` (never a half-written file) and `check_writable`.

Checks that the files a command will write can be written, done BEFORE the work: a file where
a folder is needed, a folder where a file will go, or a folder the user cannot write to is a
one-line DBDError naming the path, never a traceback after a long run."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import DBDError

_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _probe(folder: Path, flag: str, root: Path) -> None:
    """`folder` exists: can a file be created in it? (os.access alone misses read-only mounts.)"""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".dbd-write-check-", suffix=".tmp")
    except OSError as err:
        where = "" if folder == root else f" ('{folder}')"
        raise DBDError(
            f"{flag} '{root}' is not writable{where}: {err.strerror}; pass a folder you can write to"
        ) from None
    try:  # an empty file fits on a full disk: write some data to find out before the work
        os.write(fd, b"\0" * 65536)
    except OSError as err:
        where = "" if folder == root else f" ('{folder}')"
        raise DBDError(
            f"{flag} '{root}' cannot be written{where}: {err.strerror}; free some space or pass another folder"
        ) from None
    finally:
        os.close(fd)
        os.unlink(tmp)


def check_writable(folder: str | Path, flag: str, files: Iterable[str | Path] = ()) -> None:
    """`folder` (created later if missing) and every file of `files` (paths under it, or absolute)
    can be written: no file in the way of a folder, no folder in the way of a file, permission to
    write. Creates nothing."""
    root = Path(folder)
    try:
        _check(root, flag, [root / f for f in files])
    except OSError as err:  # e.g. a folder on the way that cannot even be looked into
        raise DBDError(
            f"{flag} '{root}' cannot be used ('{err.filename}': {err.strerror}); pass a folder you can write to"
        ) from None


def _check(root: Path, flag: str, targets: list[Path]) -> None:
    if root.exists() and not root.is_dir():
        raise DBDError(f"{flag} '{root}' is a file, not a folder; pass a folder (or move the file away)")
    for target in targets:
        if target.is_dir():
            raise DBDError(f"output '{target}' exists as a folder; remove or rename it, or pass another {flag}")
    probed: set[Path] = set()
    for parent in dict.fromkeys([root, *(t.parent for t in targets)]):
        existing = parent
        while not existing.exists():
            if existing.is_symlink():
                raise DBDError(f"'{existing}' is a broken link where an output folder is needed; remove it")
            existing = existing.parent
        if not existing.is_dir():
            raise DBDError(
                f"'{existing}' is a file where an output folder is needed; move it away or pass another {flag}"
            )
        if existing not in probed:
            probed.add(existing)
            _probe(existing, flag, root)


def atomic_write(path: Path, write: callable) -> None:
    """Write through a temp file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shared files unreadable to others
    try:
        write(tmp)
        # again: a writer may replace the file rather than write into it (safetensors' save_file
        # leaves a fresh 0600 file), and checkpoints must be as readable as every other output
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in _DISK_ERRORS:  # the disk, not the data: one line, and the old file is intact
            raise DBDError(
                f"cannot write '{path}' ({err.strerror}); nothing was changed there: free some space "
                f"(or pass another folder) and run again"
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (checkpoints, exports and caches are keyed by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The temporary names outputs are written under before the final rename, one pattern for every
# writer: atomic_write's `.NAME.XXXX.tmp`, an export's `.NAME.XXXXXXXX.tmp.SUFFIX` (converters want
# the suffix) and a video's `.NAME.tmp.mp4`. A later run removes those a killed run left.
_TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.(?:[A-Za-z0-9_]+\.tmp(?:\.[A-Za-z0-9]+)?|tmp\.mp4)$")


def temp_path(final: Path) -> Path:
    """A fresh temporary name beside `final` that keeps its suffix (for writers that dispatch on it)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp{final.suffix}")


def remove_stale_temps(finals: Iterable[Path], started: float) -> None:
    """Delete what earlier, killed runs left while writing these outputs: temporary files or folders
    named after one of `finals`, older than `started` (a concurrent run's fresh ones are kept)."""
    by_folder: dict[Path, set[str]] = {}
    for path in finals:
        by_folder.setdefault(Path(path).parent, set()).add(Path(path).name)
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _TEMP_NAME.match(entry.name)
            if not match or match["final"] not in names:
                continue
            try:
                if entry.lstat().st_mtime >= started:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            except OSError:  # gone meanwhile, or not ours to remove: the run goes on
                pass
