"""`python -m dbd.training.release CKPT`: make a trained checkpoint the shipped default.

Scores it on CUHK-TE-1 (the test split, read only here and in reports), records those numbers in
its model card next to the validation metrics, and writes it as fp16 safetensors (half the size,
maps within ~1e-3 of fp32) to models/weights/<arch>.safetensors, where every command finds it.

A teacher released with `--tta 384,448+flip` also carries that recipe (card key `distillation`)
and its CUHK-TE-1 scores with it: the teacher as distillation uses it, which dbd-bench scores by
default and compares every student and exported file with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dbd.core import cli_entry
from dbd.data.datasets import open_dataset
from dbd.evaluation.scoring import evaluate
from dbd.evaluation.tta import TTARecipe, TTARunner
from dbd.models.checkpoint import save_checkpoint
from dbd.models.shipped import RELEASED, WEIGHTS_DIR
from dbd.runtime.runners import TorchRunner


@cli_entry("python -m dbd.training.release")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbd.training.release", description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--tta", default="", help="teacher: the TTA recipe distillation uses, e.g. 384,448+flip")
    args = parser.parse_args(argv)
    runner = TorchRunner(args.checkpoint)
    model, card = runner.model, runner.info
    test = evaluate(runner, open_dataset("cuhk", split="test"))[0].compute()
    card["metrics"]["cuhk_te1"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in test.items()}
    recipe = TTARecipe.parse(args.tta)
    if not recipe.plain:
        if model.arch != "dbd_teacher":
            parser.error("--tta is for the teacher (the student ships as one plain forward)")
        tta = evaluate(TTARunner([runner], recipe), open_dataset("cuhk", split="test"))[0].compute()
        card["metrics"]["cuhk_te1_tta"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in tta.items()}
        card["distillation"] = {"tta": str(recipe)}
    card["metrics"]["protocol"] = (
        "D-DFFNet: blur positive, threshold 0.5, per-image Fβ (β²=0.3) averaged, IoU pooled, "
        "MAE at the mask's resolution; fbeta_adaptive / fbeta_max with in-focus positive"
    )
    card["released_from"] = str(args.checkpoint)
    card.pop("format", None), card.pop("arch", None), card.pop("config", None), card.pop("created", None)
    out = args.out_dir / f"{model.arch}.safetensors"
    if model.arch not in RELEASED:
        parser.error(f"{model.arch} is not a released architecture ({', '.join(RELEASED)})")
    save_checkpoint(out, model, card, dtype=torch.float16)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): CUHK-TE-1 MAE {test['mae']:.4f}  "
        f"Fβ {test['fbeta_fixed']:.4f}  IoU {test['iou']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
