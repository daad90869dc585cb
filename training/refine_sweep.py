"""Choose the refinement's settings honestly: sweep radius, eps and grid of the guided filter on
training's validation hold-out (never a test split), with the model's maps computed once.

    python -m dbd.training.refine_sweep exports/dbd_student_320_int8.tflite
    python -m dbd.training.refine_sweep CKPT --radius 0.015,0.025,0.04 --eps 1e-4,3e-4,1e-3 --grid 128,256

Prints one row per setting (MAE, Fβ@0.5, IoU, error in the 8-px boundary band), bilinear first;
the shipped defaults (dbd.runtime.refine.RefineSpec) came from this table (docs/results.md).
"""

from __future__ import annotations

import argparse
import itertools

from dbd.core import DBDError, cli_entry
from dbd.evaluation.scoring import score_maps
from dbd.runtime.refine import RefineSpec
from dbd.runtime.runners import open_runner

from .report import scored_pairs


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DBDError(f"'{text}' is not a comma-separated list of numbers, e.g. 0.015,0.025") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DBDError(f"'{text}' is not a comma-separated list of whole numbers, e.g. 128,256") from None


def model_maps(runner, data: str, split: str) -> tuple[list, list]:
    """The model's maps (at its input size) of every photo of `split`, and the (photo, mask) pairs:
    computed once, then refined many ways. Settings are chosen on training's hold-out only."""
    if split not in ("val",):
        raise DBDError(f"--split {split!r}: settings are chosen on training's validation hold-out only (val)")
    pairs = scored_pairs(data, split)
    return [runner.run(runner.model_inputs([photo]))[0] for photo, _ in pairs], pairs


def sweep(weights: str, specs: list[RefineSpec], data: str = "cuhk", split: str = "val") -> list[dict]:
    """Score every refinement setting on the same maps of `weights` (one model run per photo)."""
    runner = open_runner(weights)
    maps, pairs = model_maps(runner, data, split)
    rows = []
    for spec in specs:
        metrics, decisions = score_maps(maps, pairs, runner.spec.with_refine(spec))
        rows.append({"refine": spec, **metrics.compute(), **decisions.compute()})
    return rows


@cli_entry("python -m dbd.training.refine_sweep")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbd.training.refine_sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("weights", help="a checkpoint or exported file")
    parser.add_argument("--data", default="cuhk")
    parser.add_argument("--split", default="val", help="only val: training's validation hold-out")
    parser.add_argument("--radius", type=_floats, default=_floats("0.015,0.025,0.04,0.07"))
    parser.add_argument("--eps", type=_floats, default=_floats("1e-4,3e-4,1e-3,3e-3"))
    parser.add_argument("--grid", type=_ints, default=_ints("128,256"))
    args = parser.parse_args(argv)
    specs = [RefineSpec.none()] + [
        RefineSpec(radius=r, eps=e, grid=g) for r, e, g in itertools.product(args.radius, args.eps, args.grid)
    ]
    rows = sweep(args.weights, specs, args.data, args.split)
    print(f"{args.weights} on {args.data} {args.split} ({rows[0]['n_images']} images)\n")
    print("| map | radius | eps | grid | MAE ↓ | Fβ@0.5 ↑ | IoU ↑ | boundary ≤8px ↓ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        s = row["refine"]
        setting = f"{s.radius:g} | {s.eps:g} | {s.grid}" if s.enabled else "– | – | –"
        print(
            f"| {'guided' if s.enabled else 'bilinear'} | {setting} | {row['mae']:.4f} | {row['fbeta_fixed']:.4f} "
            f"| {row['iou']:.4f} | {row['error_boundary']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
