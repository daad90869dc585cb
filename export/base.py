"""What the export side of every format plug-in works with: the job, the verification outcome, and
helpers the plug-ins share.

The interface itself is `dbd.runtime.formats.FileFormat` (called `ExportFormat` here). A format
plug-in provides its conversion, `export(job, precision, dest)` and optionally `prepare(job)` (the
conversion all its precisions share, done once per job and timed on its own), its structural check
`check_structure(path, meta)`, `describe(path)`, and its runner (`runner(path)`, the runtime side);
see that class. Verifying a written file is the same template for every format
(`pipeline.verify`): read the metadata, the plug-in's structural check, then its runner against
PyTorch on the parity images and the precision's budget. Formats are found through the registry
(`get_format`, `list_formats`): this module imports no plug-in.

What several plug-ins need from one job is made once, on first use, and kept on the job: the example
input, the reference maps, the `torch.export` program (`ExportJob.exported_program`); a plug-in's own
intermediate (e.g. its float conversion) is kept with `ExportJob.memo(plug_in, make)`.

Everything shared (loading the checkpoint, calibration images, reference maps, parity figures and
budgets, metadata, atomic replacement, the report) lives outside the plug-ins, in `run`,
`pipeline`, `calibration`, `parity` and `metadata`; silencing the converters (`quiet`) and naming
their versions (`package_versions`) is dbd.runtime.engines.shared's, whose runners need them too.

Plug-in modules import this module when formats are looked up, also at prediction time, so it
imports nothing heavy (torch, the converters) at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from dbd.core import DBDError
from dbd.runtime.formats import FileFormat, FormatOption, get_format, list_formats, register_format, unknown_choice
from dbd.runtime.spec import PreprocessSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .calibration import ImageSet
    from .parity import ParityBudget

ExportFormat = FileFormat  # the export layer's name for the one format interface
T = TypeVar("T")


@dataclass
class ExportJob:
    """What every format needs to export and check one model at one input size."""

    model: nn.Module  # float32, eval mode, forward(x NCHW normalised) -> P(blur) (B, 1, H, W)
    card: dict[str, Any]  # the checkpoint's model card
    weights: Path  # the source checkpoint
    weights_sha256: str
    spec: PreprocessSpec  # input_size = the export size, layout NCHW
    calibration: ImageSet  # real images for int8 calibration
    parity: ImageSet  # real images (with masks) for the parity check
    budget: ParityBudget
    options: dict[str, str] = field(default_factory=dict)  # format-specific settings (FormatOption.key -> value)
    int8_float: tuple[str, ...] = ()  # modules int8 exports keep in float (mixed_precision.py)
    verbose: bool = False
    # Made once, on first use (a `dataclasses.replace` of the job starts without them):
    _reference: np.ndarray | None = field(default=None, init=False, repr=False)
    _program: torch.export.ExportedProgram | None = field(default=None, init=False, repr=False)
    _memos: dict[ExportFormat, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def arch(self) -> str:
        return self.card.get("arch", getattr(self.model, "arch", "model"))

    def example_input(self) -> torch.Tensor:
        """A zero NCHW batch of one at the export size (for tracing the model's calls)."""
        import torch

        return torch.zeros(1, 3, *self.spec.input_size)

    def reference_maps(self) -> np.ndarray:
        """PyTorch fp32 P(blur) of the parity images, (N, H, W), computed once per job."""
        if self._reference is None:
            from .parity import torch_maps

            self._reference = torch_maps(self.model, self.spec, self.parity.unit)
        return self._reference

    def exported_program(self) -> torch.export.ExportedProgram:
        """`torch.export` of the float32 model at `example_input()`, exported once per job for every
        format that converts from one (the formats must not change it)."""
        if self._program is None:
            import torch

            from dbd.runtime.engines.shared import quiet

            with quiet(not self.verbose):
                self._program = torch.export.export(self.model.eval(), (self.example_input(),))
        return self._program

    def memo(self, owner: ExportFormat, make: Callable[[], T]) -> T:
        """`owner`'s own intermediate for this job (e.g. its float conversion): `make()` on first use."""
        if owner not in self._memos:
            self._memos[owner] = make()
        return self._memos[owner]


@dataclass
class Verification:
    """The outcome of verifying one written file (`pipeline.verify`)."""

    parity: dict[str, Any] | None  # figures from parity.measure, None where not runnable here
    failures: list[str]  # budget violations (empty: passed)
    notes: list[str] = field(default_factory=list)  # e.g. "prediction is macOS-only: ..."

    @property
    def ok(self) -> bool:
        return not self.failures


__all__ = [
    "ExportFormat",
    "ExportJob",
    "FileFormat",
    "FormatOption",
    "Verification",
    "check_io",
    "get_format",
    "list_formats",
    "quant_dict",
    "register_format",
    "same_quant",
    "unknown_choice",
]


# ---- helpers the format modules share ---------------------------------------------------------


def quant_dict(scale: float, zero_point: int) -> dict[str, float | int]:
    return {"scale": float(scale), "zero_point": int(zero_point)}


def same_quant(a: dict | None, b: dict | None, rtol: float = 1e-6) -> bool:
    if not a or not b:
        return not a and not b
    return int(a["zero_point"]) == int(b["zero_point"]) and abs(a["scale"] - b["scale"]) <= rtol * abs(b["scale"])


def check_io(path: Path, meta: dict[str, Any], inputs: list[dict], outputs: list[dict]) -> None:
    """The file's single input/output must be what its metadata says (name, shape, dtype, quantisation)."""
    for role, found in (("input", inputs), ("output", outputs)):
        if len(found) != 1:
            raise DBDError(f"'{path}' has {len(found)} {role}s, a dbd model has exactly one; re-export it")
        want, got = meta[role], found[0]
        for key in ("name", "shape", "dtype"):
            have, said = got[key], want[key]
            if key == "shape":
                have, said = [int(v) for v in have], [int(v) for v in said]
            if have != said:
                raise DBDError(
                    f"{role} {key} of '{path}' is {have!r} but its metadata says {said!r}; "
                    f"the export is inconsistent, re-export it"
                )
        if not same_quant(got.get("quantization"), want.get("quantization")):
            raise DBDError(
                f"quantised {role} of '{path}' has scale/zero-point {got.get('quantization')} but its "
                f"metadata says {want.get('quantization')}; the {role} contract would be wrong on the phone"
            )
