"""ExecuTorch: fp32 and int8 .pte programs (XNNPACK delegate) for apps that ship ExecuTorch instead of LiteRT.

Route: `torch.export` of the float32 student -> `to_edge_transform_and_lower(XnnpackPartitioner())`
-> `to_executorch()`; every op of the network is delegated to XNNPACK (verify refuses a program
that leaves any op to the portable kernels). int8: PT2E static quantisation with ExecuTorch's
`XNNPACKQuantizer` (symmetric per-channel int8 weights, int8 activations whose ranges are the
99.99th percentile of the calibration values), calibrated on the job's calibration
images (the same photos as the other int8 files, calibration.py), the modules in `job.int8_float`
left in float32 (the student's stem, as in the int8 .tflite and .onnx: mixed_precision.py), then
lowered the same way. Input: NCHW float32 normalised
per the spec (like ONNX); output: NCHW float32 P(blur).

The "dbd" metadata is embedded in the program as a constant method `dbd_metadata` that returns
the JSON string (`constant_methods` of the lowering): an app reads it with
`module.execute("dbd_metadata")`, and dbd reads it from the flatbuffer with the standard library
alone (the ExecutionPlan named `dbd_metadata`, its String value).

This module is the export side (the `ExecuTorchFormat` plug-in). Running the programs
(`ExecuTorchRunner`), reading their metadata and ExecuTorch's profiler are dbd.runtime.engines.executorch,
which the plug-in's `runner`, `read_metadata` and `profile` hand over to. Heavy modules (torch,
executorch, torchao) are imported inside the functions that use them: this module is loaded whenever
formats are looked up.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dbd.core import DBDError
from dbd.runtime.engines.executorch import (
    METADATA_METHOD,
    METHOD,
    ExecuTorchRunner,
    _import_runtime,
    _plans,
    metadata_entry,
    profile_executorch,
    program_summary,
)
from dbd.runtime.engines.shared import package_versions, quiet
from dbd.runtime.formats import Availability, FileFormat, ProfiledRun

from .base import ExportJob, check_io
from .metadata import dumps, float_nchw_metadata

INPUT_NAME, OUTPUT_NAME = "input", "blur_prob"  # documentation only: a .pte addresses I/O by position
INSTALL_HINT = "pip install -e '.[executorch]'"
QUANTIZATION_WORDS = {
    "fp32": "none (float32, XNNPACK delegate)",
    "int8": "static PT2E (XNNPACKQuantizer): int8 per-channel symmetric weights, int8 activations "
    "(99.99th-percentile calibration), XNNPACK delegate; float32 input/output",
}
_SCALAR_TYPES = {0: "uint8", 1: "int8", 5: "float16", 6: "float32"}  # ExecuTorch ScalarType codes


CALIBRATION_PERCENTILE = 99.99  # int8 activation ranges: this percentile of the calibration values
_OBSERVER: list = []  # the percentile observer class, made once (torchao is imported only when exporting int8)


def percentile_observer():
    """torchao's HistogramObserver with the range cut at the CALIBRATION_PERCENTILE of the calibration
    values on each side, instead of its L2 search: on the shipped student with 64 calibration photos
    the L2 search kept the few extreme activations (map PSNR 26.8 dB on the parity images, like
    MinMax); 99.99 gave 33.8 dB, 99.999 29.6 dB and 99.9 29.1 dB (docs/export.md, "Optional formats")."""
    if not _OBSERVER:
        import torch
        from torchao.quantization.pt2e.observer import HistogramObserver

        class PercentileHistogramObserver(HistogramObserver):
            def _non_linear_param_search(self):
                histogram = self.histogram.double()
                total = float(histogram.sum())
                if total <= 0 or float(self.max_val) <= float(self.min_val):
                    return self.min_val, self.max_val
                cdf = torch.cumsum(histogram, 0) / total
                tail = torch.tensor([1 - CALIBRATION_PERCENTILE / 100, CALIBRATION_PERCENTILE / 100], dtype=cdf.dtype)
                low, high = (int(i) for i in torch.searchsorted(cdf, tail).clamp(0, self.bins - 1))
                width = (self.max_val - self.min_val) / self.bins
                return self.min_val + width * low, self.min_val + width * (high + 1)

        _OBSERVER.append(PercentileHistogramObserver)
    return _OBSERVER[0]


class ExecuTorchFormat(FileFormat):
    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "int8")
    default_precision = "fp32"
    calibrated_precisions = ("int8",)  # static PT2E reads the calibration images
    runtime_modules = ("executorch.runtime", "torch")  # what the runner imports (dbd-bench measures memory above them)
    export_modules = ("executorch", "torchao")  # the optional extra: --format all skips the format without it
    order = 50

    def available(self) -> Availability:
        if not super().available():
            return Availability(
                False,
                f"running .pte programs needs the Python package executorch, which is not installed ({INSTALL_HINT})",
            )
        return Availability(True)

    def read_metadata(self, path: Path) -> str | None:
        return metadata_entry(Path(path).read_bytes(), Path(path))

    def runner(self, path: Path, threads: int | None = None, device: str = "cpu") -> ExecuTorchRunner:
        return ExecuTorchRunner(Path(path), threads, device)

    def profile(self, path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> ProfiledRun:
        # XNNPACK's thread pool is process-wide and keeps its size (ExecuTorchRunner): the profile runs
        # with that pool, whatever `threads` asks; ProfiledRun.threads says its size.
        return profile_executorch(path, x, runs, warmup)

    def tools(self) -> dict[str, str]:
        return package_versions("torch", "executorch", "torchao")

    def prepare(self, job: ExportJob) -> None:
        self._program(job)

    def _program(self, job: ExportJob):
        """The float32 `torch.export` program (the job's, exported once per job)."""
        if not super().available():
            raise DBDError(f"exporting ExecuTorch programs needs the package executorch ({INSTALL_HINT})")
        return job.exported_program()

    def _quantized(self, job: ExportJob):
        """The int8 program: PT2E with the XNNPACK quantizer, calibrated, float modules left out."""
        import torch

        from .calibration import normalised_nchw

        with quiet(not job.verbose):
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

            config = get_symmetric_quantization_config(is_per_channel=True)
            observer = percentile_observer().with_args(eps=2**-12)
            activations = {
                role: dataclasses.replace(getattr(config, role), observer_or_fake_quant_ctr=observer)
                for role in ("input_activation", "output_activation")
            }
            quantizer = XNNPACKQuantizer().set_global(dataclasses.replace(config, **activations))
            in_float = [get_module_name_filter(name) for name in job.int8_float]
            if in_float:  # the quantizer annotates only the nodes this returns True for
                quantizer.set_filter_function(lambda node: not any(f(node) for f in in_float))
            graph = self._program(job).module()  # a copy: annotating it leaves the job's program as it is
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for i in range(len(job.calibration)):
                    prepared(torch.from_numpy(normalised_nchw(job.calibration.unit[i : i + 1], job.spec)))
            converted = convert_pt2e(prepared)
            return torch.export.export(converted, (job.example_input(),))

    def export(self, job: ExportJob, precision: str, dest: Path) -> dict[str, Any]:
        if precision not in self.precisions:
            raise DBDError(f"executorch has no precision '{precision}'; choose from {', '.join(self.precisions)}")
        program = self._program(job) if precision == "fp32" else self._quantized(job)
        meta = float_nchw_metadata(
            job,
            self.name,
            precision,
            QUANTIZATION_WORDS[precision],
            (INPUT_NAME, OUTPUT_NAME),
            self.tools(),
            calibrated=self.needs_calibration(precision),
        )
        with quiet(not job.verbose):
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            lowered = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()], constant_methods={METADATA_METHOD: dumps(meta)}
            ).to_executorch()
        Path(dest).write_bytes(lowered.buffer)
        return meta

    def _io(self, path: Path) -> tuple[list[dict], list[dict]]:
        runtime = _import_runtime()
        with quiet():
            meta = runtime.load_program(Path(path)).metadata(METHOD)
        rows = []
        for count, info in ((meta.num_inputs(), meta.input_tensor_meta), (meta.num_outputs(), meta.output_tensor_meta)):
            rows.append([])
            for i in range(count):
                tensor = info(i)
                dtype = _SCALAR_TYPES.get(int(tensor.dtype()), f"ScalarType {int(tensor.dtype())}")
                rows[-1].append({"name": None, "shape": list(tensor.sizes()), "dtype": dtype, "quantization": None})
        return rows[0], rows[1]

    def check_structure(self, path: Path, meta: dict[str, Any]) -> None:
        summary = program_summary(Path(path).read_bytes(), Path(path))
        if summary["operators"] or not summary["delegates"]:
            left = ", ".join(summary["operators"][:3]) or "no delegate at all"
            raise DBDError(f"'{path}' leaves ops outside the XNNPACK delegate ({left}); the lowering is incomplete")
        inputs, outputs = self._io(path)
        for row, role in ((inputs, "input"), (outputs, "output")):  # a .pte names no tensors: compare by position
            for entry in row:
                entry["name"] = meta[role]["name"]
        check_io(path, meta, inputs, outputs)

    def describe(self, path: Path) -> dict[str, Any]:
        summary = program_summary(Path(path).read_bytes(), Path(path))
        inputs, outputs = self._io(path)
        return {
            # every op runs inside the delegate(s): the program's own ops are the delegate calls
            "ops": dict(collections.Counter(summary["operators"] + [f"delegate {d}" for d in summary["delegates"]])),
            "inputs": inputs,
            "outputs": outputs,
            "methods": sorted(_plans(Path(path).read_bytes(), Path(path))),
        }


FORMAT = ExecuTorchFormat()  # the object the dbd.formats entry point names
