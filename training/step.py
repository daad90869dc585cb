"""One optimisation step's pieces: the learning-rate schedule, the loss terms of a batch and the
discriminators' loss, and one epoch of steps."""

from __future__ import annotations

import math
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import losses
from .config import TrainConfig
from .networks import Networks
from .run_state import Progress


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def train_epoch(
    cfg: TrainConfig,
    model: nn.Module,
    discriminators: dict[str, nn.Module],
    nets: Networks,
    optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer | None,
    loader: DataLoader,
    steps_per_epoch: int,
    progress: Progress,
    device: torch.device,
    show_progress: bool,
) -> dict[str, float]:
    """One pass over the loader (at most `steps_per_epoch` steps); the summed loss terms."""
    use_amp = progress.amp["dtype"] == "bf16"
    total_steps = steps_per_epoch * cfg.epochs
    model.train()
    sums: dict[str, float] = {}
    bar = tqdm(
        loader,
        total=min(len(loader), steps_per_epoch),
        disable=not show_progress,
        mininterval=2 if sys.stderr.isatty() else 60,  # sparse lines in log files
        desc=f"{cfg.stage} {loader.dataset.epoch + 1}/{cfg.epochs} @{loader.dataset.size}",
        leave=False,
    )
    for i, (x, y, *cached) in enumerate(bar):
        if i >= steps_per_epoch:
            break
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        cached_prob = cached[0].to(device, non_blocking=True) if cached else None
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * g["lr_mult"] * lr_factor(progress.step, total_steps, cfg.warmup_steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            parts = compute_losses(cfg, model, nets.teacher, discriminators, x, y, nets.renorm, cached_prob)
        maps = {k: parts.pop(k) for k in ("student_prob", "teacher_prob") if k in parts}
        loss = sum(parts.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if d_optimizer is not None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                d_loss = discriminator_loss(discriminators, x, y, maps["student_prob"], maps.get("teacher_prob"))
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            parts["d_loss"] = d_loss
        parts = {k: float(v.detach()) for k, v in parts.items()}
        parts["loss"] = sum(v for k, v in parts.items() if k != "d_loss")
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        progress.step += 1
        bar.set_postfix(loss=f"{parts['loss']:.4f}", lr=f"{optimizer.param_groups[1]['lr']:.2e}", refresh=False)
    return sums


def compute_losses(
    cfg: TrainConfig,
    model: nn.Module,
    teacher: nn.Module | None,
    discriminators: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    renorm: nn.Module | None,
    cached_prob: torch.Tensor | None = None,
) -> dict:
    out = model(x)
    parts = {"seg": losses.segmentation_loss(out, y, cfg.bce, cfg.dice, cfg.side, cfg.edge)}
    if cfg.connectivity:
        parts["connectivity"] = cfg.connectivity * losses.connectivity_loss(out.connectivity, y)
    if cfg.stage == "teacher":
        return parts
    s_prob = torch.sigmoid(out.logits.float())
    if teacher is not None:
        with torch.no_grad():
            t_out = teacher.forward_train(renorm(x))
    if cached_prob is not None:  # the teacher's map of this very view, warped from the cache
        t_prob = losses.teacher_targets(losses.prob_to_logits(cached_prob), cfg.kd_temperature)
    elif teacher is not None:
        t_prob = losses.teacher_targets(t_out.logits, cfg.kd_temperature)
    if cfg.needs_teacher:
        parts["teacher_prob"] = t_prob  # also the discriminator's "real" maps
    if cfg.kd_out:
        parts["kd_out"] = cfg.kd_out * losses.output_distillation(
            out.logits.float(), t_prob, y if cfg.kd_agree_only else None
        )
    if cfg.kd_feat:
        parts["kd_feat"] = cfg.kd_feat * losses.feature_distillation(out.features, t_out.features)
    if cfg.adv_gt:
        parts["adv_gt"] = cfg.adv_gt * losses.lsgan_loss(discriminators["adv_gt"](x, s_prob), real=True)
    if cfg.adv_teacher:
        parts["adv_teacher"] = cfg.adv_teacher * losses.lsgan_loss(discriminators["adv_teacher"](x, s_prob), real=True)
    parts["student_prob"] = s_prob.detach()
    return parts


def discriminator_loss(
    discriminators: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    student_prob: torch.Tensor,
    teacher_prob: torch.Tensor | None,
) -> torch.Tensor:
    """Real vs fake in one forward per discriminator (DDP expects one forward per backward)."""
    loss = x.new_zeros(())
    for name, disc in discriminators.items():
        real = y if name == "adv_gt" else teacher_prob
        logits = disc(torch.cat([x, x]), torch.cat([real, student_prob]))
        real_logits, fake_logits = logits.chunk(2)
        loss = loss + losses.lsgan_loss(real_logits, True) + losses.lsgan_loss(fake_logits, False)
    return loss
