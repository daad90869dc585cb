"""python -m dbd.training.recipe: teacher -> cached maps -> students -> report in one command,
resumable stage by stage, and every bad recipe answered with one line."""

from __future__ import annotations

import pytest

from dbd.core import DBDError
from dbd.models.checkpoint import read_card
from dbd.training.recipe import RECIPES, load_recipe, main, stage_state

# Both stages on a few synthetic 64x64 samples: seconds, yet every stage of the real recipe.
TINY_STAGE = """data = "synthetic"
synthetic_len = 12
val_fraction = 0.25
imgsz = 64
low_res = 64
batch = 4
workers = 0
threads = 1
epochs = 1
max_steps_per_epoch = 1
amp = "off"
"""
TINY_RECIPE = f"""
[recipe]
seeds = [0, 1]
teacher_tta = "flip"

[teacher]
{TINY_STAGE}
[student]
{TINY_STAGE}kd_feat = 0.0
adv_gt = 0.0
adv_teacher = 0.0
acquisition = 0.5
"""


def test_recipe_runs_teacher_cache_and_one_student_per_seed_then_skips_finished_stages(tmp_path, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "run"
    assert main([str(recipe), "--device", "cpu", "--out", str(out)]) == 0
    assert stage_state(out / "teacher") == "done"
    for seed in (0, 1):
        card = read_card(out / f"student_seed{seed}" / "last.safetensors")
        assert card["training"]["config"]["seed"] == seed and card["training"]["teacher"]["tta"] == "flip"
    assert len(list((out / "teacher_cache").glob("teacher_maps-*.npz"))) == 1  # one cache for every seed
    capsys.readouterr()
    assert main([str(recipe), "--device", "cpu", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("is finished; skipped") == 3


@pytest.mark.parametrize(
    "text, key",
    [
        ("[recipe]\nseeds = []\n", "recipe.seeds"),
        ("[recipe]\nfoo = 1\n", "recipe.foo"),
        ('[recipe]\ncheckpoint = "first"\n', "recipe.checkpoint"),
        ("[model]\n", "unknown tables"),
        ("recipe = 3\n", "'recipe' must be a table"),
        ("[recipe\n", "not valid UTF-8 TOML"),
    ],
)
def test_bad_recipes_are_one_line_errors_naming_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DBDError, match=key.replace("[", r"\[").replace("(", r"\(")):
        load_recipe(path)


def test_shipped_recipes_parse():
    names = sorted(p.name for p in RECIPES.glob("*.toml"))
    assert "release_cpu.toml" in names and "release_gpu.toml" in names
    for name in names:
        load_recipe(RECIPES / name)


def test_a_missing_recipe_is_one_line_naming_the_shipped_ones(tmp_path, capsys):
    assert main([str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.toml" in err and "release_cpu.toml" in err and "\n" not in err and "Traceback" not in err
