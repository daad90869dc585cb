"""dbd-train: a short real run of both stages, exact resume after SIGKILL, DDP on CPU, and every
bad configuration answered with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

from dbd.data.synthetic import SyntheticDefocus
from dbd.models import create_model
from dbd.models.checkpoint import read_card, save_checkpoint
from dbd.runtime.spec import PreprocessSpec
from dbd.training.cli import main
from dbd.training.data import AugmentedPairs, PairCache
from dbd.training.networks import Renormalise
from dbd.training.step import lr_factor

# A few steps at 64x64 on synthetic defocus: seconds, yet every code path of the real run.


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A real (tiny) teacher run of this module's own, whose outputs the tests below inspect."""
    out = tmp_path_factory.mktemp("teacher")
    assert main(["teacher", *TINY, "--epochs", "1", "--max-steps-per-epoch", "2", "--out", str(out)]) == 0
    return out / "best.safetensors"


def test_teacher_run_writes_checkpoints_card_log_and_config(teacher_run):
    out = teacher_run.parent
    assert {"best.safetensors", "last.safetensors", "best.json", "last_state.pt", "log.csv", "config.toml"} <= {
        p.name for p in out.iterdir()
    }
    card = read_card(teacher_run)
    assert card["arch"] == "dbd_teacher" and card["training"]["stage"] == "teacher"
    assert card["training"]["command"].startswith("dbd-train teacher")
    assert PreprocessSpec.from_dict(card["preprocess"]).input_size == (64, 64)
    assert {"mae", "fbeta_fixed", "iou", "fbeta_max"} <= set(card["metrics"]["validation"])
    assert "val_mae" in (out / "log.csv").read_text().splitlines()[0]


def test_student_distills_with_every_loss_term(teacher_run, tmp_path, capsys):
    out = tmp_path / "student"
    code, err = run_cli(
        [
            "student",
            *TINY,
            "--teacher",
            str(teacher_run),
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "2",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    for term in ("train_seg", "train_kd_out", "train_kd_feat", "train_adv_gt", "train_adv_teacher", "train_d_loss"):
        assert term in header
    card = read_card(out / "best.safetensors")
    assert card["arch"] == "dbd_student" and card["training"]["teacher"]["arch"] == "dbd_teacher"


def test_student_ablation_switches_terms_off(teacher_run, tmp_path, capsys):
    out = tmp_path / "alone"
    code, err = run_cli(
        [
            "student",
            *TINY,
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
            "--kd-out",
            "0",
            "--kd-feat",
            "0",
            "--adv-gt",
            "0",
            "--adv-teacher",
            "0",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    header = (out / "log.csv").read_text().splitlines()[0]
    assert "train_seg" in header and "kd" not in header and "adv" not in header


def test_config_file_is_read_and_flags_override_it(tmp_path, capsys):
    import argparse

    from dbd.training.config import add_arguments, load_config

    config = tmp_path / "run.toml"
    config.write_text('epochs = 7\nlr = 0.002\ndata = "synthetic"\n')
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = load_config("teacher", parser.parse_args(["--config", str(config), "--lr", "0.0005"]))
    assert (cfg.epochs, cfg.lr, cfg.data) == (7, 0.0005, "synthetic")


def test_augmentation_is_reproducible_and_flips_image_and_mask_together():
    synthetic = SyntheticDefocus(size=(64, 64), length=4, seed=3)
    pairs = PairCache(synthetic, ["a", "b", "c", "d"])
    spec = PreprocessSpec(input_size=(64, 64))
    data = AugmentedPairs(pairs, spec, 64, seed=0)
    x1, y1 = data[2]
    x2, y2 = data[2]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    data.epoch = 1
    x3, _ = data[2]
    assert not torch.equal(x1, x3)  # a new epoch draws new augmentations
    assert x1.shape == (3, 64, 64) and y1.shape == (1, 64, 64) and 0 <= y1.min() and y1.max() <= 1


def test_renormalise_maps_student_inputs_to_teacher_normalisation():
    student, teacher = PreprocessSpec(), PreprocessSpec.for_model(create_model("dbd_teacher"))
    image = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    converted = Renormalise(student, teacher)(torch.from_numpy(student.preprocess(image)))
    assert torch.allclose(converted, torch.from_numpy(teacher.preprocess(image)), atol=1e-5)


def test_output_distillation_learns_from_the_teacher_only_where_it_agrees_with_the_mask():
    from dbd.training.losses import output_distillation

    logits = torch.tensor([[[[0.3, -1.2, 2.0]]]])
    teacher = torch.tensor([[[[0.9, 0.2, 0.6]]]])  # right, wrong, right
    mask = torch.tensor([[[[1.0, 1.0, 1.0]]]])
    right = torch.nn.functional.binary_cross_entropy_with_logits(logits[..., [0, 2]], teacher[..., [0, 2]])
    assert torch.allclose(output_distillation(logits, teacher, mask), right)
    assert torch.allclose(
        output_distillation(logits, teacher),  # without a mask: every pixel
        torch.nn.functional.binary_cross_entropy_with_logits(logits, teacher),
    )
    assert output_distillation(logits, torch.zeros_like(teacher), mask).item() == 0.0  # teacher wrong everywhere


def test_learning_rate_warms_up_then_decays_by_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.505, abs=0.01)
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)


# --- bad configurations: one line on stderr, exit 2 --------------------------------------------


def _assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, err = run_cli(
        ["teacher", "--data", str(missing), "--polarity", "blur_white", "--out", str(tmp_path / "o")], capsys
    )
    _assert_one_line(code, err, str(missing))


def test_a_teacher_checkpoint_that_is_no_blur_map_network_is_one_line(tmp_path, capsys):
    """The teacher is checked by the network contract (a DBDNet), not by its name: an ImageNet
    backbone's checkpoint is refused, naming the file."""
    wrong = tmp_path / "backbone.safetensors"
    save_checkpoint(wrong, create_model("mobilenetv2_100"))
    code, err = run_cli(["student", *TINY, "--teacher", str(wrong), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, str(wrong), "'mobilenetv2_100', not a DBD network")


def test_an_unknown_or_non_dbd_arch_is_one_line(tmp_path, capsys):
    code, err = run_cli(["teacher", *TINY, "--arch", "dbd_studnet", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "unknown --arch 'dbd_studnet'", "did you mean 'dbd_student'?")
    code, err = run_cli(["teacher", *TINY, "--arch", "mobilenetv2_100", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "--arch mobilenetv2_100 is a 'mobilenetv2_100', not a DBD network")


def test_pickled_teacher_checkpoint_is_one_line(tmp_path, capsys):
    pickled = tmp_path / "teacher.pt"
    torch.save({"x": torch.zeros(1)}, pickled)
    code, err = run_cli(["student", *TINY, "--teacher", str(pickled), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, str(pickled), "pickle")


def test_empty_split_is_one_line(tmp_path, capsys):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(folder / "images" / "a.png")
    Image.new("L", (64, 64)).save(folder / "masks" / "a.png")
    split = tmp_path / "empty.txt"
    split.write_text("\n")
    code, err = run_cli(
        [
            "teacher",
            "--data",
            str(folder),
            "--polarity",
            "blur_white",
            "--split",
            str(split),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    _assert_one_line(code, err, str(split))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["student", "--data", "synthetic"], "--teacher"),
        (["student", "--data", "synthetic", "--kd-out", "0", "--kd-feat", "0"], "--teacher"),  # --adv-teacher needs one
        (["teacher", "--split", "test"], "test split"),
        (["teacher", "--imgsz", "300"], "multiples of 32"),
        (["teacher", "--epochs", "0"], "--epochs"),
        (["teacher", "--kd-out", "-1"], "--kd-out"),
        (["teacher", "--kd-temperature", "0"], "--kd-temperature"),
        (["teacher", "--resume", "--out", "{tmp}/never"], "nothing to resume"),
        (["teacher", "--device", "tpu"], "--device"),
        (["teacher", "--warmup-steps", "-1"], "--warmup-steps"),
        (["teacher", "--low-res-epochs", "-2"], "--low-res-epochs"),
        (["teacher", "--threads", "-1"], "--threads"),
        (["teacher", "--workers", "-1"], "--workers"),
        (["teacher", "--amp", "fast"], "--amp"),
        (["teacher", "--acquisition", "2"], "--acquisition"),
    ],
)
def test_bad_flags_are_one_line(args, fragment, tmp_path, capsys):
    code, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    _assert_one_line(code, err, fragment)


def test_bad_config_files_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    _assert_one_line(*run_cli(["teacher", "--config", str(bad)], capsys), str(bad), "TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epocs = 3\n")
    _assert_one_line(*run_cli(["teacher", "--config", str(unknown)], capsys), "epocs")


@pytest.mark.parametrize(
    "text, key",
    [
        ('pretrained = "no"\n', "pretrained"),  # a string is not a boolean (it used to count as true)
        ('epochs = "1"\n', "epochs"),
        ("epochs = 1.5\n", "epochs"),
        ('lr = "fast"\n', "lr"),
        ("[teacher]\nepochs = 3\n", "teacher"),  # a table where a path belongs
    ],
)
def test_wrongly_typed_config_values_are_one_line_and_write_nothing(text, key, tmp_path, capsys):
    config = tmp_path / "typed.toml"
    config.write_text(text)
    out = tmp_path / "run"
    _assert_one_line(*run_cli(["teacher", "--config", str(config), "--out", str(out)], capsys), f"'{key}'")
    assert not out.exists()


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "latin1.toml"
    config.write_bytes('data = "caf\u00e9"\n'.encode("latin-1"))
    _assert_one_line(*run_cli(["teacher", "--config", str(config)], capsys), "UTF-8")


def test_existing_run_is_never_overwritten_without_resume(teacher_run, capsys):
    before = teacher_run.read_bytes()
    code, err = run_cli(["teacher", *TINY, "--out", str(teacher_run.parent)], capsys)
    _assert_one_line(code, err, "already holds a run", "--resume")
    assert teacher_run.read_bytes() == before


# --- resume and DDP (subprocesses) --------------------------------------------------------------


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dbd.training.cli",
        "teacher",
        *TINY,
        "--synthetic-len",
        "40",
        "--epochs",
        "3",
        "--no-pretrained",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_reproduces_the_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "last_state.pt").exists():  # epoch 1 saved: we are now inside epoch 2
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(killed / "last_state.pt", weights_only=True)["epoch"] < 2  # really interrupted

    subprocess.run(_train_cmd(killed, "--resume"), check=True, capture_output=True)
    expected, resumed = load_file(reference / "last.safetensors"), load_file(killed / "last.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains_one_model(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "dbd.training.cli",
        "teacher",
        *TINY,
        "--synthetic-len",
        "24",
        "--epochs",
        "1",
        "--no-pretrained",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "world size 2" in proc.stdout
    assert (out / "best.safetensors").exists() and read_card(out / "best.safetensors")["arch"] == "dbd_teacher"


def test_report_prints_the_test_table_for_checkpoints(teacher_run, data_root, tmp_path, capsys):
    from dbd.training.report import main as report

    assert (
        report(
            [str(teacher_run), "--labels", "tiny", "--data", "dut", "--split", "", "--json", str(tmp_path / "r.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    # a row per last step: the checkpoint's maps refined (its card's contract), then bilinear
    row = next(line for line in out.splitlines() if line.startswith("| tiny [guided] |"))
    assert len(row.split("|")) == 15 and "(5 images)" in out and "| tiny [bilinear] |" in out
    import json

    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["refine"] for r in rows] == ["guided", "bilinear"] and rows[0]["n_images"] == 5
    assert rows[0]["mae"] != rows[1]["mae"]  # the refinement changed the maps that were scored


def test_report_latency_column_times_each_recipe_once_and_names_the_cpu(teacher_run, data_root, capsys):
    from dbd.training.report import main as report

    assert (
        report([str(teacher_run), str(teacher_run), "--labels", "a", "a", "--data", "dut", "--split", "", "--latency"])
        == 0
    )
    out = capsys.readouterr().out
    assert "one thread" in out and "Latency" in out
    row = next(line for line in out.splitlines() if line.startswith("| a [guided] (2 seeds) |"))
    assert len(row.split("|")) == 16 and float(row.split("|")[4]) > 0


def test_report_pools_seeds_of_a_recipe_and_compares_recipes_seed_by_seed(teacher_run, data_root, capsys):
    from dbd.training.report import main as report

    tiny = str(teacher_run)
    assert (
        report(
            [
                tiny,
                tiny,
                tiny,
                tiny,
                tiny,
                "--labels",
                "single",
                "base",
                "base",
                "other",
                "other",
                "--data",
                "dut",
                "--split",
                "",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| base [guided] (2 seeds) |" in out and " ± 0.0000 " in out  # the same weights twice: no spread
    assert "against 'base [guided]'" in out and "| other [guided] − base [guided] | +0.0000 (0/" in out
    assert "| single [guided] − " not in out  # a one-run row is no baseline
    assert "| base [bilinear] − base [guided] |" in out  # the refinement itself, paired by seed


def test_paired_deltas_count_a_lower_mae_and_a_higher_fbeta_as_better():
    from dbd.training.report import COLUMNS, paired_deltas

    def row(seed, mae, f):
        return {"seed": seed, **{c: 0.5 for c in COLUMNS}, "mae": mae, "fbeta_fixed": f}

    base = [row(0, 0.08, 0.95), row(1, 0.07, 0.96), row(2, 0.09, 0.94)]
    other = [row(0, 0.07, 0.96), row(1, 0.075, 0.97), row(3, 0.01, 0.99)]  # seed 3 has no partner
    deltas = paired_deltas(base, other)
    assert deltas["mae"][1:] == (1, 2) and deltas["fbeta_fixed"][1:] == (2, 2)
    assert abs(deltas["mae"][0] - (-0.01 + 0.005) / 2) < 1e-12
    assert paired_deltas(base, [row(7, 0.0, 1.0)]) is None


def test_report_with_a_label_per_checkpoint_missing_is_one_line(teacher_run, capsys):
    from dbd.training.report import main as report

    code = report([str(teacher_run), str(teacher_run), "--labels", "only-one"])
    _assert_one_line(code, capsys.readouterr().err, "--labels")


def test_sharpened_teacher_targets_keep_the_decision_and_drop_the_doubt():
    from dbd.training.losses import teacher_targets

    logits = torch.tensor([-3.0, -0.4, 0.0, 0.4, 3.0])
    plain, sharp = teacher_targets(logits, 1.0), teacher_targets(logits, 0.5)
    assert torch.allclose(plain, torch.sigmoid(logits))
    assert torch.equal(plain > 0.5, sharp > 0.5) and sharp[2] == 0.5  # same side of 0.5 everywhere
    assert ((sharp - 0.5).abs() >= (plain - 0.5).abs()).all()  # and never less sure


def test_decision_columns_separate_wrong_decisions_from_hedging():
    from dbd.evaluation.metrics import DecisionMetrics

    mask = np.zeros((4, 6), np.float32)
    mask[:, :3] = 1
    hedging = np.where(mask > 0, 0.6, 0.4).astype(np.float32)  # right side of 0.5 everywhere
    wrong = 1 - mask
    for pred, error, unsure in ((hedging, 0.0, 1.0), (wrong, 1.0, 0.0)):
        d = DecisionMetrics()
        d.update(pred, mask)
        assert (d.compute()["error_at_05"], d.compute()["unsure"]) == (error, unsure)
