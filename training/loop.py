"""The training loop, teacher and student alike: short and linear, in the spirit of nanoGPT.

    setup -> data -> models -> optimisers -> (resume) -> for each epoch: train, validate, save

Resumable: at the end of every epoch the whole state (weights, optimisers, best score) is written
atomically to `last_state.pt`; each epoch's randomness is derived from (seed, epoch), so a run
killed mid-epoch and resumed with --resume repeats that epoch exactly and loses nothing else.
Data-parallel over several processes through torchrun (DDP; NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import pickle
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dbd.core import DBDError, atomic_write, reraise_interrupt
from dbd.models import create_model
from dbd.models.base import DBDOutput
from dbd.models.checkpoint import load_checkpoint, save_checkpoint
from dbd.runtime.acquisition import CaptureAugment
from dbd.runtime.evaluate import evaluate
from dbd.runtime.hardware import cpu_info
from dbd.runtime.runners import TorchRunner
from dbd.runtime.spec import PreprocessSpec
from dbd.runtime.synthetic import SyntheticDefocus

from . import losses
from .amp import decide_amp
from .config import TrainConfig, to_toml
from .data import AugmentedPairs, PairCache, load_pairs
from .teacher_cache import load_or_build, teacher_paths


class TrainForward(nn.Module):
    """What DDP wraps: the network's training forward, plus the distillation adapters, so that
    every trainable parameter's gradient is averaged across processes."""

    def __init__(self, net: nn.Module, adapters: nn.ModuleList | None = None):
        super().__init__()
        self.net, self.adapters = net, adapters

    def forward(self, x: torch.Tensor) -> DBDOutput:
        out = self.net.forward_train(x)
        if self.adapters is not None:
            out.features = [a(f) for a, f in zip(self.adapters, out.features)]
        return out


class Renormalise(nn.Module):
    """Re-normalise a batch prepared for one spec (the student's) into another's (the teacher's)."""

    def __init__(self, source: PreprocessSpec, target: PreprocessSpec):
        super().__init__()

        def column(v):
            return torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)

        self.register_buffer("scale", column(source.std) / column(target.std))
        self.register_buffer("shift", (column(source.mean) - column(target.mean)) / column(target.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


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


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def validate(
    net: nn.Module, pairs: PairCache, spec: PreprocessSpec, device: torch.device, batch: int
) -> dict[str, float]:
    """D-DFFNet protocol on the held-out pairs, plus the number model selection maximises."""
    net.eval()
    try:
        result = evaluate(TorchRunner.from_model(net, spec, device), zip(pairs.images, pairs.masks), batch)[0].compute()
    finally:
        net.train()
    result["score"] = (result["fbeta_fixed"] + result["iou"] + (1 - result["mae"])) / 3
    return result


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} x{max(1, int(os.environ.get('WORLD_SIZE', '1')))}"
    cpu = cpu_info()
    return f"{cpu['model']} CPU ({cpu['torch_isa']}), {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def train(cfg: TrainConfig, command: str) -> dict:
    rank, world, device = setup_device(cfg)
    main = rank == 0
    out = Path(cfg.out)
    state_path = out / "last_state.pt"
    if cfg.resume and not state_path.is_file():
        raise DBDError(f"nothing to resume: '{state_path}' does not exist; drop --resume to start a new run")
    if not cfg.resume and (out / "last.safetensors").exists():
        raise DBDError(f"'{out}' already holds a run; pass --resume to continue it or choose another --out")

    # --- models --------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model_config = {**cfg.model_config, **({"connectivity": True} if cfg.connectivity else {})}
    net = create_model(cfg.arch, pretrained=cfg.pretrained and not (cfg.resume or cfg.init), **model_config).to(device)
    if cfg.init and not cfg.resume:
        warm_start(net, cfg.init)
    spec = PreprocessSpec.for_model(net, (cfg.imgsz, cfg.imgsz))
    teacher, teacher_card, adapters, discriminators = None, None, None, {}
    if cfg.needs_teacher:
        first_teacher = teacher_paths(cfg.teacher)[0]
        teacher, teacher_card = load_checkpoint(first_teacher, expected_arch="dbd_teacher")
        teacher_spec = PreprocessSpec.from_dict(teacher_card["preprocess"])
        if cfg.needs_live_teacher:
            teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        else:
            teacher = None  # the maps come from the cache: no teacher forward in a step
    if cfg.stage == "student":
        if cfg.kd_feat:
            if tuple(net.feature_strides) != tuple(teacher.feature_strides):
                raise DBDError(
                    f"--kd-feat matches decoder features stride by stride, but the student has them at "
                    f"strides {net.feature_strides} and the teacher at {teacher.feature_strides}; "
                    f"give both decoders the same levels or pass --kd-feat 0"
                )
            adapters = nn.ModuleList(
                nn.Conv2d(cs, ct, 1) for cs, ct in zip(net.feature_channels, teacher.feature_channels)
            ).to(device)
        for name in ("adv_gt", "adv_teacher"):
            if getattr(cfg, name):
                discriminators[name] = create_model("dbd_discriminator").to(device)
    model = TrainForward(net, adapters).to(memory_format=torch.channels_last)  # ~15 % faster convs

    # --- data ----------------------------------------------------------------------------------
    train_pairs, val_pairs, data_description = load_pairs(cfg)
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
    steps_per_epoch = math.ceil(len(dataset) / (cfg.batch * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs

    # --- optimisers ----------------------------------------------------------------------------
    encoder = [p for p in net.encoder.parameters()]
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    groups = [{"params": encoder, "lr_mult": cfg.encoder_lr_mult}, {"params": rest, "lr_mult": 1.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    d_params = [p for d in discriminators.values() for p in d.parameters()]
    d_optimizer = torch.optim.Adam(d_params, lr=cfg.lr * 0.5, betas=(0.5, 0.999)) if d_params else None

    start_epoch, step, best = 0, 0, -1.0
    if cfg.resume:
        try:
            state = torch.load(state_path, map_location=device, weights_only=True)  # no pickled code
        except Exception as err:  # UnpicklingError (code in the pickle, refused), RuntimeError (corrupt zip), ...
            reraise_interrupt(err)
            why = (
                "holds pickled code or objects, which are never loaded"
                if isinstance(err, pickle.UnpicklingError) and "global" in str(err).lower()
                else f"cannot be read ({err.strerror})"
                if isinstance(err, OSError) and err.strerror
                else f"is truncated or corrupt ({type(err).__name__})"
            )
            raise DBDError(
                f"cannot resume from '{state_path}': it {why}; start a new run without --resume and "
                f"another --out (warm-start it with --init {out / 'last.safetensors'})"
            ) from None
        if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "step", "best"} <= state.keys():
            raise DBDError(
                f"cannot resume from '{state_path}': it is not a dbd-train state; start a new run "
                f"without --resume and another --out (warm-start it with --init {out / 'last.safetensors'})"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, d in discriminators.items():
            d.load_state_dict(state["discriminators"][name])
        if d_optimizer is not None:
            d_optimizer.load_state_dict(state["d_optimizer"])
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best"]
        if main:
            print(f"resuming {out} after epoch {start_epoch} (step {step}, best score {best:.4f})")

    # The teacher's encoder was pretrained with another normalisation than the student's.
    renorm = Renormalise(spec, teacher_spec).to(device) if teacher is not None else None
    ddp_model = DDP(model) if world > 1 else model
    ddp_discs = {k: DDP(d) if world > 1 else d for k, d in discriminators.items()}
    if cfg.resume and "amp" in state:
        amp = state["amp"]  # the resumed epochs compute exactly as the first ones did
    else:
        first_size = cfg.low_res if start_epoch < cfg.low_res_epochs else cfg.imgsz
        amp = decide_amp(cfg.amp, model, device, cfg.batch, first_size).to_dict()
        if world > 1:  # every process computes alike: rank 0's probe decides for all
            shared = [amp]
            dist.broadcast_object_list(shared, src=0)
            amp = shared[0]
    use_amp = amp["dtype"] == "bf16"

    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.toml", lambda tmp: Path(tmp).write_text(to_toml(cfg)))
        print(
            f"dbd-train {cfg.stage}: {data_description}; {steps_per_epoch} steps/epoch x {cfg.epochs} epochs "
            f"on {hardware()} (world size {world}); {amp['dtype']} ({amp['reason']})"
        )
    log_path = out / "log.csv"
    started = time.time()
    wall_before = state.get("wall_s", 0.0) if cfg.resume else 0.0  # training time of earlier sessions

    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout / drop-path: reproducible per epoch
        dataset.epoch = epoch
        dataset.size = cfg.low_res if epoch < cfg.low_res_epochs else cfg.imgsz
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=cfg.workers,
            drop_last=len(dataset) > cfg.batch * world,
            generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch),
            pin_memory=device.type == "cuda",
        )
        ddp_model.train()
        sums: dict[str, float] = {}
        bar = tqdm(
            loader,
            total=min(len(loader), steps_per_epoch),
            disable=not main,
            mininterval=2 if sys.stderr.isatty() else 60,  # sparse lines in log files
            desc=f"{cfg.stage} {epoch + 1}/{cfg.epochs} @{dataset.size}",
            leave=False,
        )
        for i, (x, y, *cached) in enumerate(bar):
            if i >= steps_per_epoch:
                break
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            cached_prob = cached[0].to(device, non_blocking=True) if cached else None
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * g["lr_mult"] * lr_factor(step, total_steps, cfg.warmup_steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                parts = compute_losses(cfg, ddp_model, teacher, ddp_discs, x, y, renorm, cached_prob)
            maps = {k: parts.pop(k) for k in ("student_prob", "teacher_prob") if k in parts}
            loss = sum(parts.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if d_optimizer is not None:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    d_loss = discriminator_loss(ddp_discs, x, y, maps["student_prob"], maps.get("teacher_prob"))
                d_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                d_optimizer.step()
                parts["d_loss"] = d_loss
            parts = {k: float(v.detach()) for k, v in parts.items()}
            parts["loss"] = sum(v for k, v in parts.items() if k != "d_loss")
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            step += 1
            bar.set_postfix(loss=f"{parts['loss']:.4f}", lr=f"{optimizer.param_groups[1]['lr']:.2e}", refresh=False)

        if main:
            val = validate(net, val_pairs, spec, device, cfg.batch)
            n = max(1, min(len(loader), steps_per_epoch))
            row = {
                "epoch": epoch + 1,
                "step": step,
                "imgsz": dataset.size,
                "lr": optimizer.param_groups[1]["lr"],
                **{f"train_{k}": v / n for k, v in sums.items()},
                **{f"val_{k}": v for k, v in val.items()},
                "elapsed_s": round(time.time() - started, 1),
            }
            write_log(log_path, row)
            is_best = val["score"] > best
            best = max(best, val["score"])
            wall_s = round(wall_before + time.time() - started, 1)
            card = model_card(
                cfg,
                spec,
                command,
                data_description,
                val,
                epoch + 1,
                teacher_card,
                amp=amp,
                wall_s=wall_s,
                cache=cache_identity,
            )
            save_checkpoint(out / "last.safetensors", net, card)
            if is_best:
                save_checkpoint(out / "best.safetensors", net, card)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "discriminators": {k: d.state_dict() for k, d in discriminators.items()},
                "d_optimizer": d_optimizer.state_dict() if d_optimizer else {},
                "epoch": epoch,
                "step": step,
                "best": best,
                "amp": amp,
                "wall_s": wall_s,
            }
            atomic_write(state_path, lambda tmp: torch.save(state, tmp))
            per_epoch = (time.time() - started) / (epoch + 1 - start_epoch)
            eta = dt.timedelta(seconds=int(per_epoch * (cfg.epochs - epoch - 1)))
            print(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {row.get('train_loss', 0):.4f}  val MAE {val['mae']:.4f}  "
                f"Fβ {val['fbeta_fixed']:.4f}  IoU {val['iou']:.4f}{'  *best' if is_best else ''}  ETA {eta}",
                flush=True,
            )
        if world > 1:
            dist.barrier()

    if world > 1:
        dist.destroy_process_group()
    return {"out": str(out), "best_score": best}


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


def warm_start(net: nn.Module, path: str) -> None:
    """--init: start from a trained checkpoint of the same architecture and config (fine-tuning).
    Options whose modules start as the identity (`net.additive_options`: training-only heads,
    zero-initialised residual blocks) may be added to the trained network."""
    source, card = load_checkpoint(path, expected_arch=net.arch)
    additive = getattr(net, "additive_options", {})
    training_only = getattr(net, "training_only_options", ())

    def architecture(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in additive}

    if architecture(source.config) != architecture(net.config) or any(  # dropping a block changes the network
        source.config.get(k) and not net.config.get(k) for k in additive if k not in training_only
    ):
        raise DBDError(
            f"--init '{path}' was built with config {source.config} but this run builds "
            f"{net.config}; pass the same model_config or another --init"
        )
    missing, unexpected = net.load_state_dict(source.state_dict(), strict=False)
    added = tuple(
        prefix for option, prefix in additive.items() if net.config.get(option) and not source.config.get(option)
    )
    new = [k for k in missing if not k.startswith(added)] if added else missing
    unexpected = [k for k in unexpected if not k.startswith(tuple(additive[k] for k in training_only))]
    if new or unexpected:
        raise DBDError(f"--init '{path}' does not fit this network (missing {new[:2]}, unexpected {unexpected[:2]})")


def model_card(
    cfg: TrainConfig,
    spec: PreprocessSpec,
    command: str,
    data: str,
    val: dict,
    epochs_done: int,
    teacher_card: dict | None,
    amp: dict | None = None,
    wall_s: float | None = None,
    cache: dict | None = None,
) -> dict:
    card = {
        "preprocess": spec.to_dict(),
        "training": {
            "stage": cfg.stage,
            "data": data,
            "command": command,
            "epochs_done": epochs_done,
            "config": {k: v for k, v in vars(cfg).items() if v is not None},
            "hardware": hardware(),
            "torch": torch.__version__,
            "amp": amp,
            "wall_time_s": wall_s,
            "date": dt.date.today().isoformat(),
        },
        "metrics": {"validation": {k: round(v, 5) if isinstance(v, float) else v for k, v in val.items()}},
    }
    if teacher_card is not None:
        card["training"]["teacher"] = {
            "arch": teacher_card["arch"],
            "created": teacher_card.get("created"),
            "metrics": teacher_card.get("metrics", {}),
            "tta": cfg.teacher_tta or "none",
            "cache": {k: v for k, v in (cache or {}).items() if k != "path"} or None,
        }
    return card


def write_log(path: Path, row: dict) -> None:
    """Append one row per epoch to log.csv (the header grows if a later epoch logs new columns)."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows = [r for r in rows if int(r["epoch"]) != row["epoch"]]  # an epoch repeated after a resume
    rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    header = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
