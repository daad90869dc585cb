"""`python -m dbd.training.report CKPT [CKPT ...]`: the test-set table of trained checkpoints.

Scores each checkpoint on CUHK-TE-1 (default; any catalogued dataset/split by flag) under the
D-DFFNet protocol (blur = positive, threshold 0.5, per-image Fβ averaged, IoU pooled, MAE at the
mask's original resolution) plus adaptive and max Fβ, and prints a Markdown table. The test
split is only ever read here, never for training or model selection.

Checkpoints that share a label are runs of one recipe with different seeds: the table then shows
their mean ± standard deviation, and a second table compares every such recipe with the first
one seed by seed (the mean paired difference, and on how many seeds it went the right way), because
on 100 test images the spread between seeds can exceed the effect of a loss term.

More columns split what MAE mixes: "error @0.5" (the fraction of pixels the map decides
wrong), split into the boundary band (within 8 px of a mask boundary) and the interior, the share
of all wrong pixels held by the worst 10 % of images, and "unsure" (the fraction of pixels left in
(0.1, 0.9)). MAE rewards confident maps: a map that decides as well but hedges more scores worse.

A checkpoint argument `PATH@384,448+flip` scores that model the way distillation uses a teacher
(input sizes resized from the photo, mirrored, averaged; dbd.evaluation.tta), and several paths
joined by commas are an ensemble: `A.safetensors,B.safetensors@384+flip`. `--latency` adds each recipe's PyTorch latency (batch 1, one thread, median; the CPU is named in
the header), beside its GMACs. `--robustness` adds the capture table: each model fed
photos downscaled by cv2 linear/area and PIL bilinear/bicubic, and recompressed at JPEG quality 70.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

import torch

from dbd.core import DBDError, cli_entry
from dbd.data.capture import CAPTURE_CONDITIONS, captured, downscaler_of
from dbd.data.datasets import open_dataset
from dbd.evaluation.latency import latency, time_calls
from dbd.evaluation.metrics import ANATOMY, LITERATURE, METRICS, DecisionMetrics
from dbd.evaluation.scoring import evaluate
from dbd.evaluation.tta import TTARecipe, TTARunner
from dbd.models.summary import count_macs, count_params
from dbd.runtime.hardware import cpu_info
from dbd.runtime.runners import Runner, TorchRunner

COLUMNS = (*LITERATURE, *ANATOMY)  # the table's metric columns, as dbd.evaluation.metrics.METRICS defines them
ROBUSTNESS_COLUMNS = ("fbeta_fixed", "mae", "iou")


def open_scored(argument: str) -> tuple[Runner, TorchRunner]:
    """(the runner scored, its first member) for 'PATH', 'PATH,PATH' (ensemble) or either '@RECIPE' (TTA)."""
    paths, _, recipe_text = str(argument).partition("@")
    members = [TorchRunner(Path(p)) for p in paths.split(",") if p]
    if not members:
        raise DBDError(f"'{argument}' names no checkpoint; write PATH[,PATH...][@SIZES+flip]")
    recipe = TTARecipe.parse(recipe_text)
    if len(members) == 1 and recipe.plain:
        return members[0], members[0]
    return TTARunner(members, recipe), members[0]


def scored_pairs(data: str, split: str | None) -> list:
    """The (image, mask) pairs a table scores; split 'val' is training's validation hold-out of the
    train split (for choosing a TTA recipe or a schedule without reading the test split)."""
    if split == "val":
        from .data import _holdout

        dataset = open_dataset(data, split="train")
        return [dataset[i] for i, s in enumerate(dataset.samples) if _holdout(s.name, 0.1)]
    return list(open_dataset(data, split=split or None))


def score(checkpoint: str, pairs: list, refine: str | None = None) -> dict:
    """One row: the checkpoint's maps with its own last step, or `refine` ("guided" / "none")."""
    runner, first = open_scored(checkpoint)
    decisions = DecisionMetrics()
    spec = runner.spec.with_refine(refine)
    metrics, _ = evaluate(runner, pairs, decisions=decisions, refine=spec.refine)
    return {
        "refine": "guided" if spec.refine.enabled else "bilinear",
        "checkpoint": str(checkpoint),
        "arch": first.info["arch"],
        "tta": runner.info.get("tta", "none"),
        "seed": first.info.get("training", {}).get("config", {}).get("seed"),
        "params_m": count_params(first.model) / 1e6,
        "gmacs": count_macs(first.model, first.size) / 1e9,
        **metrics.compute(),
        **decisions.compute(),
    }


def latencies_ms(checkpoints: dict[str, str], runs: int = 30) -> dict[str, float]:
    """Median ms of one forward of each plain model (first member), batch 1, one thread, the models
    taking turns (dbd.evaluation.latency): the figures compare within one call."""
    runners = {label: TorchRunner(Path(str(c).partition("@")[0].split(",")[0])) for label, c in checkpoints.items()}
    inputs = {label: torch.zeros(1, 3, *r.size) for label, r in runners.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            calls = {label: functools.partial(r.model, inputs[label]) for label, r in runners.items()}
            times = time_calls(calls, runs, warmup=5)
    finally:
        torch.set_num_threads(threads)
    return {label: latency(t, 1).median_ms for label, t in times.items()}


def robustness(checkpoint: str, pairs: list, refine: str | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the plain model (first member) under each capture condition."""
    runner = TorchRunner(Path(str(checkpoint).partition("@")[0].split(",")[0]))
    return {
        c: evaluate(runner, captured(pairs, c), refine=refine, downscaler=downscaler_of(c))[0].compute()
        for c in CAPTURE_CONDITIONS
    }


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
        better = sum(METRICS[c].improved(d) for d in deltas)
        out[c] = (statistics.mean(deltas), better, len(pairs))
    return out


def print_tables(rows: list[dict], data: str, split: str) -> None:
    groups = group_rows(rows)
    pooled = [(label, group) for label, group in groups.items() if len(group) > 1]
    seeds = bool(pooled)
    print(
        f"{data} split {split} ({rows[0]['n_images']} images), D-DFFNet protocol (blur = positive; adaptive and max Fβ "
        f"with in-focus positive, as published){'; mean ± std over seeds' if seeds else ''}\n"
    )
    latency = "latency_ms" in rows[0]
    if latency:
        print(
            f"Latency: PyTorch fp32, batch 1, one thread, median of 30, models taking turns, on {cpu_info()['model']} "
            f"({cpu_info()['torch_isa']})\n"
        )
    print(
        "| model | params (M) | GMACs |"
        + (" ms ↓ |" if latency else "")
        + "".join(f" {METRICS[c].label} {METRICS[c].arrow} |" for c in COLUMNS)
    )
    print("|---|---:|---:|" + ("---:|" if latency else "") + "---:|" * len(COLUMNS))
    for label, group in groups.items():
        name = f"{label} ({len(group)} seeds)" if len(group) > 1 else label
        print(
            f"| {name} | {group[0]['params_m']:.2f} | {group[0]['gmacs']:.2f} | "
            + (f"{group[0]['latency_ms']:.1f} | " if latency else "")
            + " | ".join(mean_std([r[c] for r in group]) for c in COLUMNS)
            + " |"
        )
    if not seeds:
        return
    # Seed-by-seed comparison between recipes: against the first one run with several seeds.
    (base_label, base), *others = pooled
    lines = []
    for label, group in others:
        deltas = paired_deltas(base, group)
        if deltas is not None:
            lines.append(
                f"| {label} − {base_label} | "
                + " | ".join(f"{m:+.4f} ({better}/{n})" for m, better, n in deltas.values())
                + " |"
            )
    if lines:
        print(f"\nPaired by seed against '{base_label}': mean difference (seeds on which it is better / seeds)\n")
        print("| recipe |" + "".join(f" {METRICS[c].label} |" for c in COLUMNS))
        print("|---|" + "---:|" * len(COLUMNS))
        print("\n".join(lines))


def print_robustness(rows: list[dict]) -> None:
    """Per model: each metric under each capture condition, and its change against cv2 linear (the contract)."""
    print(
        "\nCapture robustness: photos downscaled to the model input by another kernel, or recompressed at "
        "JPEG quality 70 before the contract's resize; Δ against the contract's own resize (cv2 linear)\n"
    )
    head = " | ".join(f"{c} Fβ@0.5 (Δ)" for c in CAPTURE_CONDITIONS)
    print(f"| model | {head} | worst ΔFβ | worst ΔMAE |")
    print("|---|" + "---:|" * (len(CAPTURE_CONDITIONS) + 2))
    for row in rows:
        rob = row["robustness"]
        base = rob[CAPTURE_CONDITIONS[0]]
        cells = [
            f"{rob[c]['fbeta_fixed']:.4f} ({rob[c]['fbeta_fixed'] - base['fbeta_fixed']:+.4f})"
            for c in CAPTURE_CONDITIONS
        ]
        worst_f = min(rob[c]["fbeta_fixed"] - base["fbeta_fixed"] for c in CAPTURE_CONDITIONS)
        worst_m = max(rob[c]["mae"] - base["mae"] for c in CAPTURE_CONDITIONS)
        print(f"| {row['label']} | " + " | ".join(cells) + f" | {worst_f:+.4f} | {worst_m:+.4f} |")


@cli_entry("python -m dbd.training.report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbd.training.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="checkpoints; several joined by commas form an ensemble")
    parser.add_argument(
        "--labels",
        nargs="*",
        help="row names (default: the checkpoint paths); repeat a label to pool seeds of one recipe",
    )
    parser.add_argument("--data", default="cuhk")
    parser.add_argument(
        "--split",
        default="test",
        help="split name (empty: the whole dataset; val: training's validation hold-out of the train split)",
    )
    parser.add_argument("--robustness", action="store_true", help="add the capture-robustness table")
    parser.add_argument(
        "--latency", action="store_true", help="add each recipe's PyTorch latency (batch 1, one thread)"
    )
    parser.add_argument(
        "--refine",
        choices=("both", "guided", "none"),
        default="both",
        help="the maps' last step: both (a row each: guided, then bilinear), guided, or none (bilinear)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows (one per checkpoint) as JSON")
    args = parser.parse_args(argv)

    labels = args.labels or [str(c) for c in args.checkpoints]
    if len(labels) != len(args.checkpoints):
        raise DBDError(
            f"--labels gave {len(labels)} names for {len(args.checkpoints)} checkpoints; give one per checkpoint"
        )
    pairs = scored_pairs(args.data, args.split)  # decoded once for every row
    modes = ("guided", "none") if args.refine == "both" else (args.refine,)
    rows = [
        {
            "label": f"{label} [{'bilinear' if mode == 'none' else mode}]" if len(modes) > 1 else label,
            **score(c, pairs, mode),
        }
        for mode in modes
        for label, c in zip(labels, args.checkpoints)
    ]
    if args.latency:
        first = {}  # once per recipe: its seeds share the architecture
        for row in rows:
            first.setdefault(row["label"], row["checkpoint"])
        timed = latencies_ms(first)
        for row in rows:
            row["latency_ms"] = timed[row["label"]]
    print_tables(rows, args.data, args.split)
    if args.robustness:
        for row in rows:
            row["robustness"] = robustness(
                row["checkpoint"], pairs, "none" if row["refine"] == "bilinear" else "guided"
            )
        print_robustness(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
