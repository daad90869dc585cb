"""The learned-refinement probe (dbd.training.refine_learn): its torch filter is the contract's
guided filter before any fitting, so what the probe reports as "learned" is measured against the
shipped refinement, and fitting moves the parameters the way its objective asks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dbd.core import DBDError
from dbd.runtime.imageio import read_image
from dbd.runtime.refine import RefineSpec, refine_map
from dbd.training.refine_learn import VARIANTS, LearnedRefinement, fit, main, prepare, score


@pytest.fixture(scope="module")
def cuhk_photo(data_root) -> np.ndarray:
    return read_image(sorted((data_root / "CUHK" / "images").iterdir())[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_starts_as_the_contracts_refinement(cuhk_photo, variant):
    spec = RefineSpec()
    noise = np.random.default_rng(0).normal(size=(320, 320)).astype(np.float32)
    prob = 1 / (1 + np.exp(-cv2.GaussianBlur(noise, (0, 0), 12) * 40))  # a smooth map with boundaries
    example = prepare(prob, cuhk_photo, np.zeros(cuhk_photo.shape[:2], np.float32), spec)
    with torch.no_grad():
        ours = torch.sigmoid(LearnedRefinement(variant, spec.eps)(example)).numpy()
    assert np.abs(ours - refine_map(prob, cuhk_photo, spec)).max() < 1e-5


def _hedging_example(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo whose left half is blurred (mask 1) and a map that decides right but hedges (0.3 / 0.7)."""
    photo = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), np.float32)
    mask[:, :32] = 1
    prob = np.where(mask > 0.5, 0.7, 0.3).astype(np.float32)
    return prob, photo, mask


def test_fitting_the_scale_by_mae_sharpens_a_hedging_map_and_keeps_its_decisions():
    rng = np.random.default_rng(0)
    spec = RefineSpec(grid=0, radius=0.05)
    train = [prepare(*_hedging_example(rng), spec) for _ in range(2)]
    held = [prepare(*_hedging_example(rng), spec) for _ in range(2)]
    model = LearnedRefinement("scale", spec.eps)
    before = score(model, held)
    fit(model, train, "l1", steps=30, lr=0.1)
    after = score(model, held)
    assert model.scale.item() > 1.5
    assert after["mae"] < before["mae"] - 0.05
    assert after["iou"] == pytest.approx(before["iou"])  # a positive scale moves no decision at 0.5


def test_fitting_touches_only_the_variants_parameters():
    rng = np.random.default_rng(1)
    spec = RefineSpec(grid=0, radius=0.05)
    model = LearnedRefinement("regulariser", spec.eps)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in ("log_diag", "lower")}
    fit(model, [prepare(*_hedging_example(rng), spec)], "bce", steps=3)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_unknown_variants_and_objectives_are_refused_in_one_line(capsys):
    with pytest.raises(DBDError, match="unknown refinement variant 'sharpen'"):
        LearnedRefinement("sharpen", 1e-3)
    assert main(["model.tflite", "--variants", "sharpen"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--variants ['sharpen']" in err and "\n" not in err
