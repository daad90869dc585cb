"""`python -m dbd.training.report CKPT [CKPT ...]`: the test-set table of trained checkpoints.

Scores each checkpoint on CUHK-TE-1 (default; any catalogued dataset/split by flag) under the
D-DFFNet protocol (blur = positive, threshold 0.5, per-image Fβ averaged, IoU pooled, MAE at the
mask's original resolution) plus adaptive and max Fβ, and prints a Markdown table. The test
split is only ever read here, never for training or model selection.

Checkpoints that share a label are runs of one recipe with different seeds: the table then shows
their mean ± standard deviation, and a second table compares every such recipe with the first
one seed by seed (the mean paired difference, and on how many seeds it went the right way), because
on 100 test images the spread between seeds can exceed the effect of a loss term.

Two more columns split what MAE mixes: "error @0.5" (the fraction of pixels the map decides
wrong) and "unsure" (the fraction it leaves in (0.1, 0.9)). MAE rewards confident maps: a map
that decides as well but hedges more scores a worse MAE.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from dbd.models.errors import DBDError, cli_entry
from dbd.models.summary import count_macs, count_params
from dbd.runtime.datasets import open_dataset
from dbd.runtime.evaluate import evaluate
from dbd.runtime.metrics import resize_to
from dbd.runtime.runners import TorchRunner

COLUMNS = ("mae", "fbeta_fixed", "iou", "fbeta_adaptive", "fbeta_max", "error_at_05", "unsure")
LOWER_IS_BETTER = {"mae", "error_at_05", "unsure"}


def score(checkpoint: Path, data: str, split: str | None) -> dict:
    runner = TorchRunner(checkpoint)
    masks: list[np.ndarray] = []
    def pairs():
        for image, mask in open_dataset(data, split=split or None):
            masks.append(mask)
            yield image, mask
    metrics, maps = evaluate(runner, pairs(), keep_maps=True)
    return {"checkpoint": str(checkpoint), "arch": runner.info["arch"],
            "seed": runner.info.get("training", {}).get("config", {}).get("seed"),
            "params_m": count_params(runner.model) / 1e6,
            "gmacs": count_macs(runner.model, runner.size) / 1e9, **metrics.compute(), **confidence(maps, masks)}


def confidence(maps: np.ndarray, masks: list[np.ndarray]) -> dict[str, float]:
    """Separate what MAE mixes: how often the map decides wrong (error of the map binarised at
    0.5) and how often it hedges (pixels in (0.1, 0.9)), per image at the mask's resolution, averaged."""
    error, unsure = [], []
    for prob, mask in zip(maps, masks):
        prob = resize_to(prob, mask.shape)
        error.append(float(np.mean((prob >= 0.5) != (mask >= 0.5))))
        unsure.append(float(np.mean((prob > 0.1) & (prob < 0.9))))
    return {"error_at_05": float(np.mean(error)), "unsure": float(np.mean(unsure))}


def group_rows(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    return groups


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def paired_deltas(base: list[dict], other: list[dict]) -> dict[str, tuple[float, int, int]] | None:
    """Per metric: (mean of other − base over the seeds both have, seeds where other is better, seeds)."""
    by_seed = {r["seed"]: r for r in base}
    pairs = [(by_seed[r["seed"]], r) for r in other if r["seed"] in by_seed]
    if not pairs:
        return None
    out = {}
    for c in COLUMNS:
        deltas = [o[c] - b[c] for b, o in pairs]
        better = sum((d < 0) if c in LOWER_IS_BETTER else (d > 0) for d in deltas)
        out[c] = (statistics.mean(deltas), better, len(pairs))
    return out


def print_tables(rows: list[dict], data: str, split: str) -> None:
    groups = group_rows(rows)
    pooled = [(label, group) for label, group in groups.items() if len(group) > 1]
    seeds = bool(pooled)
    print(f"{data} split {split} ({rows[0]['n_images']} images), D-DFFNet protocol (blur = positive; adaptive and max Fβ "
          f"with in-focus positive, as published){'; mean ± std over seeds' if seeds else ''}\n")
    print("| model | params (M) | GMACs | MAE ↓ | Fβ@0.5 ↑ | IoU ↑ | Fβ adaptive (in-focus +) ↑ | Fβ max (in-focus +) ↑ "
          "| error @0.5 ↓ | unsure ↓ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, group in groups.items():
        name = f"{label} ({len(group)} seeds)" if len(group) > 1 else label
        print(f"| {name} | {group[0]['params_m']:.2f} | {group[0]['gmacs']:.2f} | "
              + " | ".join(mean_std([r[c] for r in group]) for c in COLUMNS) + " |")
    if not seeds:
        return
    # Seed-by-seed comparison between recipes: against the first one run with several seeds.
    (base_label, base), *others = pooled
    lines = []
    for label, group in others:
        deltas = paired_deltas(base, group)
        if deltas is not None:
            lines.append(f"| {label} − {base_label} | " + " | ".join(
                f"{m:+.4f} ({better}/{n})" for m, better, n in deltas.values()) + " |")
    if lines:
        print(f"\nPaired by seed against '{base_label}': mean difference (seeds on which it is better / seeds)\n")
        print("| recipe | MAE | Fβ@0.5 | IoU | Fβ adaptive | Fβ max | error @0.5 | unsure |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(lines))


@cli_entry("python -m dbd.training.report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbd.training.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="*", help="row names (default: the checkpoint paths); "
                                                     "repeat a label to pool seeds of one recipe")
    parser.add_argument("--data", default="cuhk")
    parser.add_argument("--split", default="test", help="split name (empty: the whole dataset)")
    parser.add_argument("--json", type=Path, help="also write the rows (one per checkpoint) as JSON")
    args = parser.parse_args(argv)
    labels = args.labels or [str(c) for c in args.checkpoints]
    if len(labels) != len(args.checkpoints):
        raise DBDError(f"--labels gave {len(labels)} names for {len(args.checkpoints)} checkpoints; give one per checkpoint")
    rows = [{"label": label, **score(c, args.data, args.split)} for label, c in zip(labels, args.checkpoints)]
    print_tables(rows, args.data, args.split)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
