"""Issue 13's training components: cached teacher maps warped with their view, capture augmentation,
TTA/ensemble teachers, bf16 decided by a probe, warm starts, and the error anatomy and
robustness tables that judge them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from dbd.core import DBDError
from dbd.data.capture import (
    CAPTURE_CONDITIONS,
    CaptureAugment,
    captured,
    downscale,
    downscaler_of,
    jpeg_recompress,
)
from dbd.data.synthetic import SyntheticDefocus
from dbd.evaluation.metrics import DecisionMetrics
from dbd.evaluation.tta import TTARecipe, TTARunner
from dbd.models import create_model
from dbd.models.checkpoint import read_card
from dbd.runtime.runners import TorchRunner
from dbd.runtime.spec import PreprocessSpec
from dbd.training import teacher_cache
from dbd.training.amp import decide_amp
from dbd.training.cli import main
from dbd.training.data import AugmentedPairs, PairCache
from dbd.training.losses import prob_to_logits, teacher_targets


def _pairs(n=4, size=64):
    return PairCache(SyntheticDefocus(size=(size, size), length=n, seed=3), [f"p{i}" for i in range(n)])


def test_cached_teacher_map_is_warped_exactly_like_the_mask():
    """A 'teacher' that copies the mask must still equal the warped mask after crop, resize and flip."""
    pairs = _pairs()
    maps = [m * 255 for m in pairs.masks]  # teacher == mask, uint8
    data = AugmentedPairs(pairs, PreprocessSpec(input_size=(64, 64)), 48, seed=0, teacher_maps=maps)
    for epoch in range(3):
        data.epoch = epoch
        for i in range(len(pairs)):
            x, y, t = data[i]
            assert t.shape == y.shape == (1, 48, 48)
            assert torch.allclose(t, y, atol=1e-6)


def test_capture_augmentation_changes_only_the_image_and_keeps_the_other_draws():
    pairs = _pairs()
    spec = PreprocessSpec(input_size=(64, 64))
    plain = AugmentedPairs(pairs, spec, 48, seed=0)
    captured_ = AugmentedPairs(pairs, spec, 48, seed=0, capture=CaptureAugment(1.0))
    changed = 0
    for i in range(len(pairs)):
        (x0, y0), (x1, y1) = plain[i], captured_[i]
        assert torch.equal(y0, y1)  # same crop and flip: the mask is untouched
        changed += not torch.equal(x0, x1)
    assert changed >= 3


def test_capture_augmentation_off_is_the_contract_resize():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    assert np.array_equal(CaptureAugment(0.0)(rng, crop, (48, 48)), downscale(crop, (48, 48), "cv2_linear"))
    with pytest.raises(DBDError, match="--acquisition"):
        CaptureAugment(1.5)


def test_downscalers_differ_and_jpeg_keeps_shape():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    outs = {k: downscale(image, (64, 64), k) for k in ("cv2_linear", "cv2_area", "pil_bilinear", "pil_bicubic")}
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outs.values())
    assert not np.array_equal(outs["cv2_linear"], outs["pil_bilinear"])  # PIL antialiases when reducing
    assert jpeg_recompress(image, 70).shape == image.shape
    with pytest.raises(DBDError, match="downscaler"):
        downscale(image, (64, 64), "lanczos9")
    pairs = [(image, np.zeros((200, 300), np.float32))]
    # the photo itself reaches the refinement (as the guide); only jpeg70 changes it
    assert [next(iter(captured(pairs, c)))[0].shape[:2] for c in CAPTURE_CONDITIONS] == [(200, 300)] * 5
    assert not np.array_equal(next(iter(captured(pairs, "jpeg70")))[0], image)
    assert [downscaler_of(c) for c in CAPTURE_CONDITIONS] == [None, "cv2_area", "pil_bilinear", "pil_bicubic", None]


def test_cached_probabilities_keep_the_teachers_decision_when_sharpened():
    prob = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    sharpened = teacher_targets(prob_to_logits(prob), 0.5)
    assert torch.all(torch.isfinite(sharpened))
    assert torch.equal(sharpened > 0.5, prob > 0.5) and sharpened[1] < prob[1] and sharpened[3] > prob[3]


def test_tta_recipe_parses_and_rejects_bad_text():
    assert TTARecipe.parse("384,448+flip") == TTARecipe((384, 448), True)
    assert TTARecipe.parse("flip") == TTARecipe((), True) and TTARecipe.parse("").plain
    assert str(TTARecipe.parse("384+flip")) == "384+flip"
    for bad in ("300", "abc", "384+rotate"):
        with pytest.raises(DBDError, match="TTA recipe"):
            TTARecipe.parse(bad)


def test_tta_runner_averages_views_from_the_photo(tiny_teacher):
    runner = TorchRunner(tiny_teacher)
    photo = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    plain = runner.predict_photos([photo])[1][0]
    same = TTARunner([runner], TTARecipe())  # one view: the plain model exactly
    assert np.allclose(same.predict_photos([photo])[1][0], plain, atol=1e-6)
    flipped = TTARunner([runner], TTARecipe((), True)).predict_photos([photo])[1][0]
    mirror = runner.predict_photos([np.ascontiguousarray(photo[:, ::-1])])[1][0][:, ::-1]
    assert np.allclose(flipped, (plain + mirror) / 2, atol=1e-6)
    ensemble = TTARunner([runner, runner], TTARecipe((64, 96), False)).predict_photos([photo])[1][0]
    assert ensemble.shape == (70, 90) and 0 <= ensemble.min() and ensemble.max() <= 1


def test_teacher_cache_is_keyed_by_teacher_and_recipe_and_reused(tiny_teacher, tmp_path):
    pairs = _pairs(3)
    maps, ident = teacher_cache.load_or_build(str(tiny_teacher), "flip", pairs.names, pairs.images, tmp_path)
    assert len(maps) == 3 and maps[0].dtype == np.uint8 and maps[0].shape == pairs.masks[0].shape
    again, ident2 = teacher_cache.load_or_build(
        str(tiny_teacher), "flip", pairs.names, pairs.images, tmp_path, build=False
    )
    assert ident2["key"] == ident["key"] and all(np.array_equal(a, b) for a, b in zip(maps, again))
    _, other = teacher_cache.load_or_build(str(tiny_teacher), "", pairs.names, pairs.images, tmp_path)
    assert other["key"] != ident["key"]
    with pytest.raises(DBDError, match="does not hold maps of these photos"):
        teacher_cache.read_cache(Path(ident["path"]), ["x", "y", "z"])
    Path(ident["path"]).write_bytes(b"not an npz")
    with pytest.raises(DBDError, match="corrupt"):
        teacher_cache.read_cache(Path(ident["path"]), pairs.names)


def test_refined_teacher_maps_are_cached_under_their_own_key_and_bilinear_keys_are_unchanged(tiny_teacher, tmp_path):
    pairs = _pairs(2)
    teachers = [tiny_teacher]
    recipe = teacher_cache.TTARecipe.parse("")
    # the key a bilinear cache had before refinement existed: no "refine" in its identity
    legacy = teacher_cache.cache_key(teachers, recipe, pairs.names)
    assert "refine" not in legacy and teacher_cache.cache_key(teachers, recipe, pairs.names, "none") == legacy
    plain, ident = teacher_cache.load_or_build(str(tiny_teacher), "", pairs.names, pairs.images, tmp_path)
    refined, ident_refined = teacher_cache.load_or_build(
        str(tiny_teacher), "", pairs.names, pairs.images, tmp_path, refine="guided"
    )
    assert ident["key"] == legacy["key"] and ident_refined["key"] != ident["key"]
    assert ident_refined["refine"] == "guided"
    assert any(not np.array_equal(a, b) for a, b in zip(plain, refined))  # the guided filter changed the maps


def test_student_trains_from_the_cache_without_a_teacher_forward(tiny_teacher, tmp_path, capsys, monkeypatch):
    import dbd.training.networks as networks

    def no_forward(*args, **kwargs):
        raise AssertionError("a teacher forward ran although the maps are cached")

    monkeypatch.setattr(networks.Renormalise, "forward", no_forward)
    out = tmp_path / "student"
    code = main(
        [
            "student",
            *TINY,
            "--teacher",
            str(tiny_teacher),
            "--teacher-cache",
            str(tmp_path / "cache"),
            "--teacher-tta",
            "flip",
            "--kd-feat",
            "0",
            "--acquisition",
            "0.5",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "2",
            "--amp",
            "off",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    card = read_card(out / "best.safetensors")
    assert card["training"]["teacher"]["tta"] == "flip" and len(card["training"]["teacher"]["cache"]["key"]) == 16
    assert card["training"]["amp"]["dtype"] == "fp32" and card["training"]["wall_time_s"] > 0
    assert "train_kd_out" in (out / "log.csv").read_text().splitlines()[0]


def test_warm_start_loads_the_weights_and_refuses_another_architecture(tiny_teacher, tmp_path, capsys):
    out = tmp_path / "ft"
    assert (
        main(
            [
                "teacher",
                *TINY,
                "--init",
                str(tiny_teacher),
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "1",
                "--lr",
                "0",
                "--amp",
                "off",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    # lr 0: the fine-tuned weights are the initial ones (BatchNorm statistics aside)
    a, _ = TorchRunner(tiny_teacher).model, None
    b = TorchRunner(out / "last.safetensors").model
    conv = [k for k, v in a.state_dict().items() if v.ndim == 4][0]
    assert torch.equal(a.state_dict()[conv], b.state_dict()[conv])
    assert (
        main(
            [
                "student",
                *TINY,
                "--init",
                str(tiny_teacher),
                "--kd-out",
                "0",
                "--kd-feat",
                "0",
                "--adv-gt",
                "0",
                "--adv-teacher",
                "0",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "dbd_student" in capsys.readouterr().err


def test_amp_off_and_cpu_decision_are_explained():
    model = create_model("dbd_student")
    assert decide_amp("off", model, torch.device("cpu"), 1, 64).to_dict()["dtype"] == "fp32"
    auto = decide_amp("auto", model, torch.device("cpu"), 1, 64, repeats=1)
    assert auto.reason  # either "no native bf16" or the probe's timings
    with pytest.raises(DBDError, match="--amp"):
        decide_amp("fast", model, torch.device("cpu"), 1, 64)


def test_decision_metrics_split_errors_into_boundary_band_and_interior():
    gt = np.zeros((64, 64), np.float32)
    gt[:, 32:] = 1  # boundary at column 32
    pred = gt.copy()
    pred[:, 30:32] = 1  # 2 wrong columns next to the boundary
    pred[0:4, 0:4] = 1  # 16 wrong pixels far inside the sharp region
    d = DecisionMetrics(band=8)
    d.update(pred, gt)
    r = d.compute()
    assert r["error_boundary"] == pytest.approx(2 * 64 / 64**2)
    assert r["error_interior"] == pytest.approx(16 / 64**2)
    assert r["error_at_05"] == pytest.approx(r["error_boundary"] + r["error_interior"])
    d.update(gt, gt)  # a perfect second image: worst 10 % holds everything
    assert d.compute()["worst10_share"] == 1.0


def test_dof_edge_loss_is_zero_for_a_perfect_map_and_flows_gradients():
    from dbd.training.losses import edge_dice_loss, edge_map

    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:] = 1
    edges = edge_map(mask)
    assert edges[0, 0, 5, 7] == 1 and edges[0, 0, 5, 8] == 1 and edges[0, 0, 5, 2] == 0  # both sides of the step
    perfect = (mask * 2 - 1) * 20.0  # logits that are the mask
    assert edge_dice_loss(perfect, mask).item() < 1e-3
    logits = (torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5).requires_grad_()
    loss = edge_dice_loss(logits, mask)
    loss.backward()
    assert loss.item() > 0.5 and logits.grad.abs().sum() > 0
    assert edge_dice_loss(logits, torch.zeros_like(mask)).item() == 0.0  # no boundary: no edge term


def test_connectivity_targets_mark_the_neighbours_across_a_boundary():
    from dbd.training.losses import NEIGHBOURS, connectivity_loss, connectivity_targets

    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:] = 1  # boundary between columns 1 and 2
    target = connectivity_targets(mask)
    right, left = NEIGHBOURS.index((0, 1)), NEIGHBOURS.index((0, -1))
    assert target[0, right, 0].tolist() == [1, 0, 1, 1] and target[0, left, 0].tolist() == [1, 1, 0, 1]
    assert target[0, :, 0, 0].tolist() == [1.0] * 8  # the corner: every neighbour is the same class
    logits = torch.zeros(1, 8, 4, 4, requires_grad=True)
    loss = connectivity_loss(logits, mask)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(2)) and logits.grad.abs().sum() > 0


def test_connectivity_head_is_training_only_and_warm_starts_from_a_network_without_it(tiny_teacher, tmp_path, capsys):
    student = create_model("dbd_student", connectivity=True).eval()
    x = torch.randn(1, 3, 64, 64)
    assert student.forward_train(x).connectivity.shape == (1, 8, 64, 64)
    assert student(x).shape == (1, 1, 64, 64)  # the exported path has no connectivity output
    out = tmp_path / "conn"
    assert (
        main(
            [
                "teacher",
                *TINY,
                "--init",
                str(tiny_teacher),
                "--connectivity",
                "0.5",
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "1",
                "--amp",
                "off",
                "--out",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    card = read_card(out / "best.safetensors")
    assert card["config"]["connectivity"] is True and card["config"]["encoder"] == "efficientnet_lite2"
    assert "train_connectivity" in (out / "log.csv").read_text().splitlines()[0]


def test_cache_command_with_a_missing_teacher_is_one_line(tmp_path, capsys):
    code = teacher_cache.main(
        [str(tmp_path / "missing.safetensors"), "--data", "synthetic", "--split", "", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.safetensors" in err and "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.glob("teacher_maps-*"))
