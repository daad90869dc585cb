"""Running .tflite files: `TFLiteRunner` (the LiteRT interpreter with XNNPACK, CPU), the reader of the
"dbd" metadata entry (`metadata_entry`, which walks the flatbuffer with the standard library alone) and
LiteRT's own per-operator profiler (`profile_litert`, through the C API of the wheel's libLiteRt.so).

The LiteRT interpreter is imported inside the functions that use it: this module is loaded whenever
formats are looked up (dbd.runtime.engines).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from pathlib import Path

import numpy as np

from dbd.core import DBDError
from dbd.runtime.formats import ProfiledRun, ProfilingUnavailable
from dbd.runtime.metadata import METADATA_KEY, check_graph_io
from dbd.runtime.runners import ExportedRunner

from . import flatbuffer as fb
from .shared import package_versions


class TFLiteRunner(ExportedRunner):
    """LiteRT interpreter (XNNPACK delegate by default); one image per invoke (fixed batch 1)."""

    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        if device != "cpu":
            raise DBDError(f"'{path}': TFLite runs on the CPU here (GPU delegates are for phones); use --device cpu")
        with _quiet_stderr():
            from ai_edge_litert.interpreter import Interpreter

            try:
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as err:
                raise DBDError(
                    f"LiteRT cannot load '{path}' ({str(err).splitlines()[0][:120]}); re-export it"
                ) from None
        details = self.interpreter.get_input_details()[0]
        self.check_input_shape([int(v) for v in details["shape"]])
        output = self.interpreter.get_output_details()[0]
        # what the metadata says to feed and read must be what the graph takes and gives
        check_graph_io(self.info, path, "input", details["dtype"], details["quantization"])
        check_graph_io(self.info, path, "output", output["dtype"], output["quantization"])
        self.input_index = details["index"]
        self.output_index = output["index"]
        self._lock = threading.Lock()

    def run_one(self, x: np.ndarray) -> np.ndarray:
        # One interpreter owns one set of tensors: two threads sharing a Predictor must take turns
        # (LiteRT refuses set_tensor while another thread holds a view of its output).
        with self._lock:
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output_index).copy()


@contextlib.contextmanager
def _quiet_stderr():
    """LiteRT prints an INFO line about XNNPACK on stderr from C++; keep the CLI output clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


# ---- per-operator profile: LiteRT's own profiler through its C API --------------------------------------
# The wheel's Python API (Interpreter, CompiledModel) exposes no profiler, but the libLiteRt.so it ships
# does (litert_profiler.h): a CompiledModel on the CPU accelerator (XNNPACK), compiled with the runtime
# option enable_profiling, records XNNPACK's time for each of its operators. Called through ctypes.

_CPU, _LOCK_WRITE = 1, 1  # kLiteRtHwAcceleratorCpu, kLiteRtTensorBufferLockModeWrite
_DEFAULT, _TFLITE_OP, _XNNPACK_OP = 1, 2, 8  # event types: default (Invoke), TFLite node, delegate-profiled op


def _litert_events(raw: bytes, count: int) -> list[tuple[int, int, int, int]]:
    """(tag pointer, event type, elapsed µs, metadata1) of each ProfiledEventData. Its size depends on
    the LiteRT build (its MemoryUsage has 3 or 4 words): the stride whose every event is well-formed."""
    for stride in (104, 120):
        events = [struct.unpack_from("<QI4xQQ", raw, i * stride) for i in range(count)]
        meta = [struct.unpack_from("<Q8xI", raw, i * stride + stride - 24) for i in range(count)]
        if all(
            tag and kind in {1 << k for k in range(9)} and src < 3 for (tag, kind, _, _), (_, src) in zip(events, meta)
        ):
            return [(tag, kind, elapsed, m1) for (tag, kind, _, elapsed), (m1, _) in zip(events, meta)]
    raise ProfilingUnavailable("this LiteRT build's profiler events have an unknown layout")


def profile_litert(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
    """LiteRT's own per-operator profile of a .tflite file: XNNPACK's time for each of its operators and
    LiteRT's time for each whole inference ("Invoke"), `runs` runs after `warmup` unprofiled ones."""
    import ctypes

    import ai_edge_litert

    try:
        lib = ctypes.CDLL(str(Path(ai_edge_litert.__file__).parent / "libLiteRt.so"))
        libc = ctypes.CDLL(None)
        lib.LiteRtCompiledModelGetProfiler  # noqa: B018 - the C API has a profiler in this build
    except (OSError, AttributeError) as err:
        raise ProfilingUnavailable(f"the ai-edge-litert wheel has no usable libLiteRt.so profiler ({err})") from None
    ptr, size = ctypes.c_void_p, ctypes.c_size_t
    libc.strdup.restype = ptr
    owned: list[tuple[str, ctypes.c_void_p]] = []  # (destroy function, handle), destroyed last-made first

    def call(name: str, *args) -> None:
        status = getattr(lib, name)(*args)
        if status != 0:
            raise DBDError(f"LiteRT cannot profile '{path}' ({name} returned status {status}); re-export it")

    def make(name: str, destroy: str | None, *args) -> ctypes.c_void_p:
        handle = ptr()
        call(name, *args, ctypes.byref(handle))
        if destroy:
            owned.append((destroy, handle))
        return handle

    try:
        with _quiet_stderr():  # the environment logs every accelerator it looks for
            env = make("LiteRtCreateEnvironment", "LiteRtDestroyEnvironment", 0, None)
            model = make("LiteRtCreateModelFromFile", "LiteRtDestroyModel", env, str(path).encode())
            options = make("LiteRtCreateOptions", "LiteRtDestroyOptions")
            call("LiteRtSetOptionsHardwareAccelerators", options, _CPU)
            for identifier, toml in (
                ("runtime_options_string", "enable_profiling = true"),
                ("xnnpack", f"num_threads = {threads}"),  # read by the XNNPACK accelerator
                ("cpu_delegate", f"num_threads = {threads}"),  # read by the interpreter under it
            ):
                payload = ptr(libc.strdup(f"{toml}\n".encode()))  # freed by LiteRT with the options
                call(
                    "LiteRtAddOpaqueOptions",
                    options,
                    make("LiteRtCreateOpaqueOptions", None, identifier.encode(), payload, ctypes.cast(libc.free, ptr)),
                )
            compiled = make("LiteRtCreateCompiledModel", "LiteRtDestroyCompiledModel", env, model, options)
        profiler = make("LiteRtCompiledModelGetProfiler", None, compiled)
        signature = make("LiteRtGetModelSignature", None, model, size(0))
        buffers = {}
        for kind in ("Input", "Output"):
            count = size()
            call(f"LiteRtGetNumSignature{kind}s", signature, ctypes.byref(count))
            for i in range(count.value):
                tensor_type = ctypes.create_string_buffer(256)  # a LiteRtRankedTensorType, passed through
                call(
                    "LiteRtGetRankedTensorType",
                    make(f"LiteRtGetSignature{kind}TensorByIndex", None, signature, size(i)),
                    tensor_type,
                )
                needs = make(f"LiteRtGetCompiledModel{kind}BufferRequirements", None, compiled, size(0), size(i))
                buffers.setdefault(kind, []).append(
                    make(
                        "LiteRtCreateManagedTensorBufferFromRequirements",
                        "LiteRtDestroyTensorBuffer",
                        env,
                        tensor_type,
                        needs,
                    )
                )
        (given,) = buffers["Input"]
        nbytes, address = size(), ptr()
        call("LiteRtGetTensorBufferSize", given, ctypes.byref(nbytes))
        if nbytes.value != x.nbytes:
            raise DBDError(f"'{path}' takes {nbytes.value} input bytes, its metadata {x.nbytes}; re-export it")
        call("LiteRtLockTensorBuffer", given, ctypes.byref(address), _LOCK_WRITE)
        ctypes.memmove(address, np.ascontiguousarray(x).ctypes.data, x.nbytes)
        call("LiteRtUnlockTensorBuffer", given)
        ins, outs = ((ptr * len(b))(*b) for b in (buffers["Input"], buffers["Output"]))
        for i in range(warmup + runs):
            if i == warmup:
                call("LiteRtResetProfiler", profiler)
                call("LiteRtStartProfiler", profiler)
            call("LiteRtRunCompiledModel", compiled, size(0), size(len(ins)), ins, size(len(outs)), outs)
        call("LiteRtStopProfiler", profiler)
        count = ctypes.c_int()
        call("LiteRtGetNumProfilerEvents", profiler, ctypes.byref(count))
        raw = ctypes.create_string_buffer(128 * max(count.value, 1))
        call("LiteRtGetProfilerEvents", profiler, count, raw)
        events = [
            (ctypes.string_at(tag).decode(errors="replace"), kind, us, m1)
            for tag, kind, us, m1 in _litert_events(raw.raw, count.value)
        ]
    finally:
        with _quiet_stderr():  # the environment logs every accelerator it destroys
            for destroy, handle in reversed(owned):
                getattr(lib, destroy)(handle)
    nodes: dict[tuple[str, str], list[float]] = {}
    delegated = any(kind == _XNNPACK_OP for _, kind, _, _ in events)
    for tag, kind, us, index in events:
        if kind == _XNNPACK_OP or (kind == _TFLITE_OP and not (delegated and "Delegate" in tag)):
            key = (f"{'xnnpack' if kind == _XNNPACK_OP else 'tflite'} op {index}", tag)
            nodes.setdefault(key, []).append(us / 1000)
    invokes = [us for tag, kind, us, _ in events if kind == _DEFAULT and tag == "Invoke"]
    return ProfiledRun(
        profiler=f"LiteRT {package_versions('ai-edge-litert')['ai-edge-litert']} profiler (its C API in the wheel's "
        "libLiteRt.so, CompiledModel on the CPU accelerator, XNNPACK)",
        runs=runs,
        threads=threads,
        nodes=[(layer, op, ms) for (layer, op), ms in nodes.items()],
        total_ms=[us / 1000 for us in invokes] if len(invokes) == runs else None,
        notes=[
            "layers are XNNPACK's operators by index (XNNPACK fuses and renames the TFLite ops, which keep no names)"
        ],
    )


# The "dbd" metadata with the standard library: just enough flatbuffer to reach Model.metadata and
# Model.buffers (field indices of schema.fbs).
_TFL_MODEL_BUFFERS, _TFL_MODEL_METADATA = 4, 6  # `table Model`
_TFL_METADATA_NAME, _TFL_METADATA_BUFFER = 0, 1  # `table Metadata`
_TFL_BUFFER_DATA, _TFL_BUFFER_OFFSET, _TFL_BUFFER_SIZE = 0, 1, 2  # `table Buffer`


def metadata_entry(data: bytes, path: Path) -> str | None:
    """The "dbd" metadata entry of a TFLite flatbuffer (None when absent)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise DBDError(
            f"'{path}' is not a TFLite flatbuffer (no TFL3 identifier); pass a .tflite written by dbd-export"
        )
    model = fb.table_at(data, 0)
    meta_start, meta_len = fb.vector(data, model, _TFL_MODEL_METADATA, item_size=4)
    buf_start, buf_len = fb.vector(data, model, _TFL_MODEL_BUFFERS, item_size=4)
    for i in range(meta_len):
        entry = fb.table_at(data, meta_start + 4 * i)
        if fb.string(data, entry, _TFL_METADATA_NAME) != METADATA_KEY:
            continue
        index_pos = fb.field(data, entry, _TFL_METADATA_BUFFER)
        index = fb.u32(data, index_pos) if index_pos is not None else 0
        if index >= buf_len:
            raise ValueError("metadata buffer index out of range")
        buffer = fb.table_at(data, buf_start + 4 * index)
        start, length = fb.vector(data, buffer, _TFL_BUFFER_DATA)
        if length:
            return data[start : start + length].decode("utf-8")
        # Buffers of large models may live after the flatbuffer: Buffer.offset / Buffer.size.
        off_pos = fb.field(data, buffer, _TFL_BUFFER_OFFSET)
        size_pos = fb.field(data, buffer, _TFL_BUFFER_SIZE)
        if off_pos is not None and size_pos is not None:
            offset, size = (struct.unpack_from("<Q", data, p)[0] for p in (off_pos, size_pos))
            if offset > 1 and offset + size <= len(data):
                return data[offset : offset + size].decode("utf-8")
        raise ValueError("empty metadata buffer")
    return None
