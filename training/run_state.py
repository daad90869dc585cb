"""What a run leaves in its folder and reads back: log.csv, last/best weights with their card, and
`last_state.pt` for --resume (written atomically at each epoch's end)."""

from __future__ import annotations

import csv
import datetime as dt
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dbd.core import DBDError, atomic_write, reraise_interrupt
from dbd.models.checkpoint import save_checkpoint
from dbd.runtime.hardware import cpu_info
from dbd.runtime.spec import PreprocessSpec

from .config import TrainConfig
from .networks import Networks


@dataclass
class Progress:
    """Where the run stands: what --resume restores, besides the weights and optimisers."""

    start_epoch: int = 0
    step: int = 0
    best: float = -1.0
    amp: dict | None = None
    wall_before: float = 0.0  # training time of earlier sessions


STATE_FILE = "last_state.pt"


def check_out_folder(cfg: TrainConfig, out: Path) -> None:
    if cfg.resume and not (out / STATE_FILE).is_file():
        raise DBDError(f"nothing to resume: '{out / STATE_FILE}' does not exist; drop --resume to start a new run")
    if not cfg.resume and (out / "last.safetensors").exists():
        raise DBDError(f"'{out}' already holds a run; pass --resume to continue it or choose another --out")


def resume(
    cfg: TrainConfig,
    state_path: Path,
    nets: Networks,
    optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer | None,
    device: torch.device,
    main: bool,
) -> Progress:
    """Restore weights, optimisers and progress from `last_state.pt` (written at each epoch's end)."""
    out = state_path.parent
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
    nets.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for name, d in nets.discriminators.items():
        d.load_state_dict(state["discriminators"][name])
    if d_optimizer is not None:
        d_optimizer.load_state_dict(state["d_optimizer"])
    progress = Progress(
        start_epoch=state["epoch"] + 1,
        step=state["step"],
        best=state["best"],
        amp=state.get("amp"),  # the resumed epochs compute exactly as the first ones did
        wall_before=state.get("wall_s", 0.0),
    )
    if main:
        print(
            f"resuming {out} after epoch {progress.start_epoch} (step {progress.step}, best score {progress.best:.4f})"
        )
    return progress


def end_of_epoch(
    cfg: TrainConfig,
    out: Path,
    command: str,
    nets: Networks,
    optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer | None,
    epoch: int,
    size: int,
    train_means: dict[str, float],
    val: dict[str, float],
    progress: Progress,
    started: float,
    data_description: str,
    cache_identity: dict | None,
) -> float:
    """Log the epoch, save last (and best) weights and the whole state for --resume; the new best score."""
    row = {
        "epoch": epoch + 1,
        "step": progress.step,
        "imgsz": size,
        "lr": optimizer.param_groups[1]["lr"],
        **{f"train_{k}": v for k, v in train_means.items()},
        **{f"val_{k}": v for k, v in val.items()},
        "elapsed_s": round(time.time() - started, 1),
    }
    write_log(out / "log.csv", row)
    is_best = val["score"] > progress.best
    best = max(progress.best, val["score"])
    wall_s = round(progress.wall_before + time.time() - started, 1)
    card = model_card(
        cfg,
        nets.spec,
        command,
        data_description,
        val,
        epoch + 1,
        nets.teacher_card,
        amp=progress.amp,
        wall_s=wall_s,
        cache=cache_identity,
    )
    save_checkpoint(out / "last.safetensors", nets.net, card)
    if is_best:
        save_checkpoint(out / "best.safetensors", nets.net, card)
    state = {
        "model": nets.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "discriminators": {k: d.state_dict() for k, d in nets.discriminators.items()},
        "d_optimizer": d_optimizer.state_dict() if d_optimizer else {},
        "epoch": epoch,
        "step": progress.step,
        "best": best,
        "amp": progress.amp,
        "wall_s": wall_s,
    }
    atomic_write(out / STATE_FILE, lambda tmp: torch.save(state, tmp))
    per_epoch = (time.time() - started) / (epoch + 1 - progress.start_epoch)
    eta = dt.timedelta(seconds=int(per_epoch * (cfg.epochs - epoch - 1)))
    print(
        f"epoch {epoch + 1}/{cfg.epochs}  loss {row.get('train_loss', 0):.4f}  val MAE {val['mae']:.4f}  "
        f"Fβ {val['fbeta_fixed']:.4f}  IoU {val['iou']:.4f}{'  *best' if is_best else ''}  ETA {eta}",
        flush=True,
    )
    return best


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


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} x{max(1, int(os.environ.get('WORLD_SIZE', '1')))}"
    cpu = cpu_info()
    return f"{cpu['model']} CPU ({cpu['torch_isa']}), {os.cpu_count()} cores, {torch.get_num_threads()} threads"
