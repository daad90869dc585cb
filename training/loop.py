"""The training loop, teacher and student alike: short and linear, in the spirit of nanoGPT.

    setup -> networks -> data -> optimisers -> (resume) -> for each epoch: loader, train, validate, save

`train()` reads top to bottom as those named steps; the pieces live beside it: the networks
(networks.py), one epoch of optimisation steps and the losses (step.py), and what a run writes and
reads back: log, checkpoints, resume state (run_state.py).

Resumable: at the end of every epoch the whole state (weights, optimisers, best score) is written
atomically to `last_state.pt`; each epoch's randomness is derived from (seed, epoch), so a run
killed mid-epoch and resumed with --resume repeats that epoch exactly and loses nothing else.
Data-parallel over several processes through torchrun (DDP; NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from dbd.core import DBDError, atomic_write
from dbd.data.capture import CaptureAugment
from dbd.data.synthetic import SyntheticDefocus
from dbd.evaluation.metrics import selection_score
from dbd.evaluation.scoring import evaluate
from dbd.runtime.runners import TorchRunner
from dbd.runtime.spec import PreprocessSpec

from .amp import decide_amp
from .config import TrainConfig, to_toml
from .data import AugmentedPairs, PairCache, load_pairs
from .networks import Networks, build_networks
from .run_state import STATE_FILE, Progress, check_out_folder, end_of_epoch, hardware, resume
from .step import train_epoch
from .teacher_cache import load_or_build


def setup_device(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise DBDError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return rank, world, torch.device("cpu")


def validate(
    net: nn.Module, pairs: PairCache, spec: PreprocessSpec, device: torch.device, batch: int
) -> dict[str, float]:
    """D-DFFNet protocol on the held-out pairs, plus the number model selection maximises."""
    net.eval()
    try:
        result = evaluate(TorchRunner.from_model(net, spec, device), zip(pairs.images, pairs.masks), batch)[0].compute()
    finally:
        net.train()
    result["score"] = selection_score(result)
    return result


def train(cfg: TrainConfig, command: str) -> dict:
    rank, world, device = setup_device(cfg)
    main = rank == 0
    out = Path(cfg.out)
    check_out_folder(cfg, out)
    nets = build_networks(cfg, device)
    train_pairs, val_pairs, data_description = load_pairs(cfg)
    dataset, cache_identity = build_dataset(cfg, nets.spec, train_pairs, device, main)
    steps_per_epoch = math.ceil(len(dataset) / (cfg.batch * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    optimizer, d_optimizer = build_optimisers(cfg, nets)
    progress = resume(cfg, out / STATE_FILE, nets, optimizer, d_optimizer, device, main) if cfg.resume else Progress()
    if progress.amp is None:
        progress.amp = choose_amp(cfg, nets.model, device, progress.start_epoch, world)
    ddp_model = DDP(nets.model) if world > 1 else nets.model
    ddp_discs = {k: DDP(d) if world > 1 else d for k, d in nets.discriminators.items()}

    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.toml", lambda tmp: Path(tmp).write_text(to_toml(cfg)))
        print(
            f"dbd-train {cfg.stage} ({cfg.arch}): {data_description}; {steps_per_epoch} steps/epoch x {cfg.epochs} "
            f"epochs on {hardware()} (world size {world}); {progress.amp['dtype']} ({progress.amp['reason']})"
        )
    started = time.time()
    for epoch in range(progress.start_epoch, cfg.epochs):
        loader = epoch_loader(cfg, dataset, epoch, world, rank, device)
        train_sums = train_epoch(
            cfg, ddp_model, ddp_discs, nets, optimizer, d_optimizer, loader, steps_per_epoch, progress, device, main
        )
        if main:
            steps = max(1, min(len(loader), steps_per_epoch))
            train_means = {k: v / steps for k, v in train_sums.items()}
            val = validate(nets.net, val_pairs, nets.spec, device, cfg.batch)
            progress.best = end_of_epoch(
                cfg, out, command, nets, optimizer, d_optimizer, epoch, dataset.size, train_means, val,
                progress, started, data_description, cache_identity,
            )  # fmt: skip
        if world > 1:
            dist.barrier()

    if world > 1:
        dist.destroy_process_group()
    return {"out": str(out), "best_score": progress.best}


def build_dataset(
    cfg: TrainConfig, spec: PreprocessSpec, train_pairs: PairCache, device: torch.device, main: bool
) -> tuple[AugmentedPairs, dict | None]:
    """The augmented training views, with the cached teacher map of each view when distillation uses one."""
    synthetic = None
    if cfg.synthetic:
        synthetic = SyntheticDefocus(
            size=(cfg.imgsz, cfg.imgsz), seed=cfg.seed + 777, length=max(1, round(cfg.synthetic * len(train_pairs)))
        )
    teacher_maps, cache_identity = None, None
    if cfg.uses_cache:
        teacher_maps, cache_identity = load_or_build(
            cfg.teacher,
            cfg.teacher_tta,
            train_pairs.names,
            train_pairs.images,
            cfg.teacher_cache,
            device.type,
            refine=cfg.teacher_refine,
        )
        if main:
            print(f"teacher maps (tta {cache_identity['tta']}): {cache_identity['path']}")
    dataset = AugmentedPairs(
        train_pairs, spec, cfg.imgsz, cfg.seed, synthetic, teacher_maps, CaptureAugment(cfg.acquisition)
    )
    return dataset, cache_identity


def build_optimisers(cfg: TrainConfig, nets: Networks) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """AdamW over two groups (the pretrained encoder at `encoder_lr_mult`, the rest at 1); Adam for
    the discriminators, if any."""
    encoder = list(nets.net.encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in nets.model.parameters() if id(p) not in encoder_ids]
    groups = [{"params": encoder, "lr_mult": cfg.encoder_lr_mult}, {"params": rest, "lr_mult": 1.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    d_params = [p for d in nets.discriminators.values() for p in d.parameters()]
    d_optimizer = torch.optim.Adam(d_params, lr=cfg.lr * 0.5, betas=(0.5, 0.999)) if d_params else None
    return optimizer, d_optimizer


def choose_amp(cfg: TrainConfig, model: nn.Module, device: torch.device, start_epoch: int, world: int) -> dict:
    """bf16 autocast or fp32, decided once per run by a probe of the real step (dbd.training.amp)."""
    first_size = cfg.low_res if start_epoch < cfg.low_res_epochs else cfg.imgsz
    amp = decide_amp(cfg.amp, model, device, cfg.batch, first_size).to_dict()
    if world > 1:  # every process computes alike: rank 0's probe decides for all
        shared = [amp]
        dist.broadcast_object_list(shared, src=0)
        amp = shared[0]
    return amp


def epoch_loader(
    cfg: TrainConfig, dataset: AugmentedPairs, epoch: int, world: int, rank: int, device: torch.device
) -> DataLoader:
    """This epoch's views: the low-res size first, then `imgsz`; the order derives from (seed, epoch)."""
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout / drop-path: reproducible per epoch
    dataset.epoch = epoch
    dataset.size = cfg.low_res if epoch < cfg.low_res_epochs else cfg.imgsz
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    if sampler is not None:
        sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.batch,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        drop_last=len(dataset) > cfg.batch * world,
        generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch),
        pin_memory=device.type == "cuda",
    )
