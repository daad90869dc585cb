"""`python -m dbd.training.report CKPT [CKPT ...]`: the test-set table of trained checkpoints.

Scores each checkpoint on CUHK-TE-1 (default; any catalogued dataset/split by flag) under the
D-DFFNet protocol (blur = positive, threshold 0.5, per-image Fβ averaged, IoU pooled, MAE at the
mask's original resolution) plus adaptive and max Fβ, and prints a Markdown table. The test
split is only ever read here, never for training or model selection.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dbd.models.errors import cli_entry
from dbd.models.summary import count_macs, count_params
from dbd.runtime.datasets import open_dataset
from dbd.runtime.evaluate import evaluate
from dbd.runtime.runners import TorchRunner

COLUMNS = ("mae", "fbeta_fixed", "iou", "fbeta_adaptive", "fbeta_max")


def score(checkpoint: Path, data: str, split: str | None) -> dict:
    runner = TorchRunner(checkpoint)
    metrics = evaluate(runner, open_dataset(data, split=split or None))[0].compute()
    return {"checkpoint": str(checkpoint), "arch": runner.info["arch"], "params_m": count_params(runner.model) / 1e6,
            "gmacs": count_macs(runner.model, runner.size) / 1e9, **metrics}


@cli_entry("python -m dbd.training.report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbd.training.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="*", help="row names (default: the checkpoint paths)")
    parser.add_argument("--data", default="cuhk")
    parser.add_argument("--split", default="test", help="split name (empty: the whole dataset)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    labels = args.labels or [str(c) for c in args.checkpoints]
    rows = [{"label": label, **score(c, args.data, args.split)} for label, c in zip(labels, args.checkpoints)]
    print(f"{args.data} split {args.split} ({rows[0]['n_images']} images), D-DFFNet protocol (blur = positive; adaptive and max Fβ with in-focus positive, as published)\n")
    print("| model | params (M) | GMACs | MAE ↓ | Fβ@0.5 ↑ | IoU ↑ | Fβ adaptive (in-focus +) ↑ | Fβ max (in-focus +) ↑ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['params_m']:.2f} | {r['gmacs']:.2f} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
