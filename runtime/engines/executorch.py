"""Running .pte programs: `ExecuTorchRunner` (`executorch.runtime`, XNNPACK, CPU), the reader of the
"dbd" metadata (`metadata_entry`: the String the `dbd_metadata` constant method returns, read from the
flatbuffer with the standard library alone, as is `program_summary`, the forward method's operators
and delegates) and ExecuTorch's own profiler (`profile_executorch`, ETDump).

torch and executorch are imported inside the functions that use them: this module is loaded whenever
formats are looked up (dbd.runtime.engines).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from dbd.core import DBDError, reraise_interrupt
from dbd.runtime.formats import ProfiledRun, ProfilingUnavailable
from dbd.runtime.metadata import METADATA_KEY
from dbd.runtime.runners import ExportedRunner

from . import flatbuffer as fb
from .shared import package_versions, quiet

METHOD = "forward"
METADATA_METHOD = f"{METADATA_KEY}_metadata"  # the constant method that returns the "dbd" JSON

# ---- the metadata with the standard library: just enough flatbuffer (schema/program.fbs) ----------------

_PROGRAM_PLANS = 1  # table Program { version; execution_plan: [ExecutionPlan]; ... }
_PLAN_NAME, _PLAN_VALUES, _PLAN_OPERATORS, _PLAN_DELEGATES = 0, 2, 6, 7  # table ExecutionPlan
_EVALUE_TYPE, _EVALUE_VAL = 0, 1  # table EValue { val: KernelTypes } (a union: type, then value)
_KERNEL_TYPE_STRING = 6  # union KernelTypes { Null, Int, Bool, Double, Tensor, String, ... } after NONE = 0
_FILE_IDENTIFIER = b"ET12"


def _plans(data: bytes, path: Path) -> dict[str, int]:
    """{name: ExecutionPlan table} of a .pte's program."""
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise DBDError(
            f"'{path}' is not an ExecuTorch program (no {_FILE_IDENTIFIER.decode()} identifier); re-export it"
        )
    root = fb.table_at(data, 0)
    return {fb.string(data, plan, _PLAN_NAME) or "": plan for plan in fb.tables(data, root, _PROGRAM_PLANS)}


def metadata_entry(data: bytes, path: Path) -> str | None:
    """The JSON string the `dbd_metadata` constant method returns (None when the program has none)."""
    plan = _plans(data, path).get(METADATA_METHOD)
    if plan is None:
        return None
    values = fb.tables(data, plan, _PLAN_VALUES)
    if len(values) != 1:
        raise ValueError(f"{METADATA_METHOD} holds {len(values)} values")
    kind = fb.field(data, values[0], _EVALUE_TYPE)
    if kind is None or data[kind] != _KERNEL_TYPE_STRING:
        raise ValueError(f"{METADATA_METHOD} does not return a string")
    value = fb.field(data, values[0], _EVALUE_VAL)
    string_table = fb.table_at(data, value)
    return fb.string(data, string_table, 0)  # table String { string_val: string }


def program_summary(data: bytes, path: Path) -> dict[str, Any]:
    """Operators left to ExecuTorch's kernels and the delegates of the forward method."""
    plan = _plans(data, path).get(METHOD)
    if plan is None:
        raise DBDError(f"'{path}' has no '{METHOD}' method; re-export it with dbd-export")
    operators = [
        f"{fb.string(data, op, 0)}" + (f".{fb.string(data, op, 1)}" if fb.string(data, op, 1) else "")
        for op in fb.tables(data, plan, _PLAN_OPERATORS)
    ]
    delegates = [fb.string(data, d, 0) or "?" for d in fb.tables(data, plan, _PLAN_DELEGATES)]
    return {"operators": operators, "delegates": delegates}


def _import_runtime():
    with quiet():  # torchao prints load failures of its CUDA kernels; ExecuTorch logs cpuinfo probes
        from executorch.runtime import Runtime

        return Runtime.get()


class ExecuTorchRunner(ExportedRunner):
    """The ExecuTorch runtime (XNNPACK) on the CPU; one image per execute (fixed batch 1)."""

    format = "executorch"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)  # refuses a program without the dbd metadata before loading it
        if device != "cpu":
            raise DBDError(f"'{path}': ExecuTorch runs on the CPU here (XNNPACK); use --device cpu")
        runtime = _import_runtime()
        try:
            with quiet():
                self.program = runtime.load_program(Path(path))
                self.method = self.program.load_method(METHOD)
                meta = self.program.metadata(METHOD)
        except Exception as err:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError for bad programs
            reraise_interrupt(err)
            raise DBDError(
                f"ExecuTorch cannot load '{path}' ({(str(err).splitlines() or [''])[0][:120]}); re-export it"
            ) from None
        if meta.num_inputs() != 1 or meta.num_outputs() != 1:
            raise DBDError(
                f"'{path}' takes {meta.num_inputs()} inputs and gives {meta.num_outputs()} outputs; re-export it"
            )
        self.check_input_shape(list(meta.input_tensor_meta(0).sizes()))
        self.threads = threads
        self._lock = threading.Lock()

    def run_one(self, x: np.ndarray) -> np.ndarray:
        import torch

        # ExecuTorch's XNNPACK thread pool is process-wide and keeps the size it started with: its
        # Python resize (_unsafe_reset_threadpool) deadlocked a long test session after the pool had
        # run, so `threads` is recorded but not applied.
        with self._lock:  # one method owns one set of planned buffers
            out = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0]
            return out.numpy().copy()


def profile_executorch(path: Path, x: np.ndarray, runs: int, warmup: int) -> ProfiledRun:
    """ExecuTorch's own profiler: the program loaded with ETDump on (the pybindings), read back with
    `executorch.devtools.Inspector`. XNNPACK logs each of its operators as a delegate debug event, so the
    delegated graph shows operator by operator, under XNNPACK's names (no ETRecord: no PyTorch layer names)."""
    import tempfile

    import torch

    with quiet():  # torchao and the CPU probes of the runtime log on load
        try:
            from executorch.devtools import Inspector
            from executorch.extension.pybindings import portable_lib
        except ImportError as err:
            raise ProfilingUnavailable(f"ExecuTorch's ETDump reader is not installed ({err})") from None
        module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    inputs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))]
    with quiet():  # the first run starts the thread pool, which logs its CPU probes
        for _ in range(warmup + runs):
            module.run_method(METHOD, inputs)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        etdump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump))
        blocks = Inspector(etdump_path=str(etdump)).event_blocks
    events = [e for b in blocks if b.name == "Execute" for e in b.events if e.perf_data is not None]
    if not events or any(len(e.perf_data.raw) != warmup + runs for e in events):
        raise ProfilingUnavailable(f"the ETDump of '{path}' does not hold one event per run and operator")
    times = {e.name: list(e.perf_data.raw[warmup:]) for e in events}  # ms in each profiled run
    whole = ("Method::execute", "DELEGATE_CALL")  # what contains the operators below
    return ProfiledRun(
        profiler=f"ExecuTorch {package_versions('executorch')['executorch']} ETDump "
        "(pybindings enable_etdump, executorch.devtools.Inspector)",
        runs=runs,
        threads=portable_lib._threadpool_get_thread_count(),
        nodes=[(e.name, re.sub(r" #\d+$", "", e.name), times[e.name]) for e in events if e.name not in whole],
        total_ms=times.get("Method::execute"),
        notes=["layers are XNNPACK's operators, numbered per type (XNNPACK fuses and renames the PyTorch ops)"],
    )
