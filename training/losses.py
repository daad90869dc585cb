"""Loss terms. Each returns a scalar; the loop weights and sums them (weight 0 = term off)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dbd.models.base import DBDOutput


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Dice per image, averaged: a region loss that is insensitive to the blur/sharp ratio."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return (1 - (2 * inter + 1) / (prob.sum(1) + target.sum(1) + 1)).mean()


_LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]).view(1, 1, 3, 3)


def edge_map(prob: torch.Tensor) -> torch.Tensor:
    """D-DFFNet's DOF edges: the absolute Laplacian of a blur map, clipped to [0, 1] (a boundary of a
    binary mask gives 1 on both sides of it; flat regions give 0)."""
    return F.conv2d(F.pad(prob, (1, 1, 1, 1), mode="replicate"), _LAPLACIAN.to(prob)).abs().clamp(max=1.0)


def edge_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """D-DFFNet's DOF-edge term: 1 - Dice between the edges of the prediction and of the mask, per
    image, averaged. Images whose mask has no boundary contribute nothing."""
    pred_edges = edge_map(torch.sigmoid(logits.float())).flatten(1)
    gt_edges = edge_map(target.float()).flatten(1)
    inter = (pred_edges * gt_edges).sum(1)
    dice = 1 - (2 * inter + 1) / (pred_edges.sum(1) + gt_edges.sum(1) + 1)
    has_edges = (gt_edges.sum(1) > 0).to(dice.dtype)
    return (dice * has_edges).sum() / has_edges.sum().clamp_min(1.0)


def segmentation_loss(
    out: DBDOutput, target: torch.Tensor, bce: float, dice: float, side: float, edge: float = 0.0
) -> torch.Tensor:
    """BCE + Dice (+ `edge` x DOF-edge Dice) on the main output, plus `side` times the same on every
    deep-supervision output."""

    def term(logits: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if bce:
            loss = loss + bce * F.binary_cross_entropy_with_logits(logits, target)
        if dice:
            loss = loss + dice * dice_loss(logits, target)
        if edge:
            loss = loss + edge * edge_dice_loss(logits, target)
        return loss

    loss = term(out.logits)
    if side:
        loss = loss + side * sum(term(s) for s in out.side_logits)
    return loss


# The 8 neighbours (dy, dx) of a pixel, in the order of the connectivity channels.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def connectivity_targets(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) mask -> (B, 8, H, W): 1 where the neighbour in each direction has the same class
    (binarised at 0.5; beyond the border a pixel counts as its own neighbour)."""
    binary = (mask >= 0.5).float()
    padded = F.pad(binary, (1, 1, 1, 1), mode="replicate")
    h, w = mask.shape[-2:]
    shifted = [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in NEIGHBOURS]
    return (torch.cat(shifted, 1) == binary).float()


def connectivity_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The Relation-aware Network's eight-direction connectivity supervision: BCE of the predicted
    same-class relations against those of the mask. Nearly every relation is 'same' away from a
    boundary, so what the head must learn is where the boundaries are (a large share of the
    errors: docs/metrics.md, "Error anatomy")."""
    return F.binary_cross_entropy_with_logits(logits.float(), connectivity_targets(mask))


def teacher_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's blur map as the student's target; a temperature below 1 sharpens it. The
    sign of each logit (the teacher's decision) is kept; only its doubt shrinks."""
    return torch.sigmoid(teacher_logits.float() / temperature)


def prob_to_logits(prob: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Logits of a cached probability map (uint8 precision: clamp away from 0 and 1)."""
    prob = prob.float().clamp(eps, 1 - eps)
    return torch.log(prob) - torch.log1p(-prob)


def output_distillation(
    student_logits: torch.Tensor, teacher_prob: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE of the student's map against the teacher's soft map: it carries the teacher's
    confidence near boundaries, which binary masks cannot.

    With `target`, only where the teacher is right (same side of 0.5 as the mask). Where it is
    wrong, mask and teacher pull the student to opposite ends and it settles near 0.5: unmasked,
    the distilled student came out softer than both, which raised its MAE although it decided
    better (docs/training.md, "Distillation from cached teacher maps").
    """
    loss = F.binary_cross_entropy_with_logits(student_logits, teacher_prob, reduction="none")
    if target is None:
        return loss.mean()
    agree = ((teacher_prob > 0.5) == (target > 0.5)).to(loss.dtype)
    return (loss * agree).sum() / agree.sum().clamp_min(1.0)


def feature_distillation(adapted_student: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """Match decoder features, the student's already mapped to the teacher's channels by 1x1
    adapters, comparing per-pixel unit vectors (2 - 2 cosine): what matters is the direction of
    the feature, not the magnitude the two architectures happen to use."""
    loss = adapted_student[0].new_zeros(())
    for fs, ft in zip(adapted_student, teacher_feats):
        fs = F.normalize(fs.float(), dim=1)
        ft = F.normalize(ft.detach().float(), dim=1)
        loss = loss + (fs - ft).pow(2).sum(1).mean()
    return loss / len(adapted_student)


def lsgan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): stabler than the log loss on small datasets."""
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))
