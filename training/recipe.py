"""`python -m dbd.training.recipe RECIPE.toml`: the whole release schedule in one command.

    teacher  ->  cached teacher maps (TTA / ensemble)  ->  student(s), one per seed  ->  report

A recipe is a TOML file with three tables: `[teacher]` and `[student]` hold dbd-train settings
(the same keys as `--config`), `[recipe]` holds `out` (the run folder), `seeds` (students to train),
`teacher_tta` (how distillation runs the teacher), `checkpoint` ("last", the default: the end of
the fixed schedule; or "best" on validation) and `report` (score the results on CUHK-TE-1 at the end). The student's teacher and cache are
filled in from the teacher stage. Every stage is resumable: run the same command again after an
interruption and finished stages are skipped, an interrupted one continues with --resume.

    python -m dbd.training.recipe training/recipes/release_cpu.toml          # what shipped, on 2 CPU cores
    python -m dbd.training.recipe training/recipes/release_gpu.toml --device cuda
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import tomllib
import torch

from dbd.core import DBDError, cli_entry

from .cli import main as train_main

RECIPES = Path(__file__).parent / "recipes"
RECIPE_KEYS = {"out", "seeds", "report", "teacher_tta", "checkpoint"}


def load_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in RECIPES.glob("*.toml")))
        raise DBDError(f"recipe '{path}' does not exist; pass a TOML file (shipped: {known} in {RECIPES})")
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DBDError(f"recipe '{path}' is not valid UTF-8 TOML: {err}") from None
    unknown = sorted(set(recipe) - {"recipe", "teacher", "student"})
    if unknown:
        raise DBDError(f"recipe '{path}' has unknown tables {unknown}; use [recipe], [teacher] and [student]")
    for table in ("recipe", "teacher", "student"):
        if not isinstance(recipe.get(table, {}), dict):
            raise DBDError(f"recipe '{path}': '{table}' must be a table ([{table}])")
    extra = sorted(set(recipe.get("recipe", {})) - RECIPE_KEYS)
    if extra:
        raise DBDError(f"recipe '{path}': unknown key recipe.{extra[0]}; known: {', '.join(sorted(RECIPE_KEYS))}")
    if recipe.get("recipe", {}).get("checkpoint", "last") not in ("last", "best"):
        raise DBDError(f'recipe \'{path}\': recipe.checkpoint must be "last" or "best"')
    seeds = recipe.get("recipe", {}).get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise DBDError(f"recipe '{path}': recipe.seeds must be a non-empty list of integers, got {seeds!r}")
    return recipe


def _flags(settings: dict[str, Any]) -> list[str]:
    """A [teacher]/[student] table as dbd-train flags (booleans as --x / --no-x)."""
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            raise DBDError(f"recipe key '{key}' must be a single value, got {type(value).__name__}")
        else:
            flags += [flag, str(value)]
    return flags


def stage_state(out: Path) -> str:
    """'done', 'partial' (resumable) or 'new' for a dbd-train output folder."""
    if not (out / "last_state.pt").is_file():
        return "new"
    config = tomllib.loads((out / "config.toml").read_text()) if (out / "config.toml").is_file() else {}
    state = torch.load(out / "last_state.pt", map_location="cpu", weights_only=True)
    return "done" if state["epoch"] + 1 >= int(config.get("epochs", 0)) else "partial"


def run_stage(stage: str, settings: dict[str, Any], out: Path, extra: list[str], checkpoint: str = "last") -> Path:
    state = stage_state(out)
    if state == "done":
        print(f"recipe: {stage} in {out} is finished; skipped", flush=True)
        return out / f"{checkpoint}.safetensors"
    argv = [stage, *_flags(settings), *extra, "--out", str(out)] + (["--resume"] if state == "partial" else [])
    print(f"recipe: dbd-train {shlex.join(argv)}", flush=True)
    code = train_main(argv)
    if code:
        raise DBDError(
            f"recipe stopped: the {stage} stage in {out} failed (exit {code}); fix it and run the recipe again"
        )
    return out / f"{checkpoint}.safetensors"


@cli_entry("python -m dbd.training.recipe")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbd.training.recipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path, help="recipe TOML (see training/recipes/)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", help="run folder (overrides recipe.out)")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe)
    meta = recipe.get("recipe", {})
    out = Path(args.out or meta.get("out", "runs/release"))
    device = ["--device", args.device]
    checkpoint = meta.get("checkpoint", "last")

    teacher_settings = dict(recipe.get("teacher", {}))
    teacher = Path(teacher_settings.pop("use")) if "use" in teacher_settings else None
    if teacher is None:
        teacher = run_stage("teacher", teacher_settings, out / "teacher", device, checkpoint)
    elif not teacher.is_file():
        raise DBDError(f"recipe '{args.recipe}': teacher.use '{teacher}' does not exist")
    tta = str(meta.get("teacher_tta", ""))
    students = []
    for seed in meta.get("seeds", [0]):
        settings = {**recipe.get("student", {}), "seed": seed}
        settings.setdefault("teacher", str(teacher))
        settings.setdefault("teacher_tta", tta)
        settings.setdefault("teacher_cache", str(out / "teacher_cache"))
        students.append(run_stage("student", settings, out / f"student_seed{seed}", device, checkpoint))
    if meta.get("report", False):
        from .report import main as report

        teacher_arg = f"{teacher}@{tta}" if tta else str(teacher)
        report([teacher_arg, *map(str, students), "--labels", "teacher", *["student"] * len(students)])
    print(f"recipe: teacher {teacher}; students {', '.join(map(str, students))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
