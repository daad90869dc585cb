"""The bottom layer every stage may import: user-facing errors, the CLI wrapper and safe file writes.

Dependencies flow core → models → runtime → {benchmarks, export, training}; nothing here imports
torch or any other stage.
"""

from .checks import MAX_THREADS, check_float, check_int
from .data_root import find_data_root
from .errors import ArgumentParser, DBDError, Terminated, cli_entry, reraise_interrupt
from .files import atomic_write, check_writable, remove_stale_temps, sha256_file, temp_path

__all__ = [
    "ArgumentParser",
    "DBDError",
    "Terminated",
    "cli_entry",
    "reraise_interrupt",
    "atomic_write",
    "check_writable",
    "sha256_file",
    "remove_stale_temps",
    "temp_path",
    "check_int",
    "check_float",
    "MAX_THREADS",
    "find_data_root",
]
