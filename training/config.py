"""Training configuration: one dataclass, filled from defaults, then a TOML file, then flags.

The defaults train from ImageNet weights; training/recipes/release_cpu.toml reproduces the shipped
ones (docs/training.md). Every loss term has a weight; 0 switches it off, so an ablation is one
flag away.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from dbd.core import MAX_THREADS, DBDError

STAGES = ("teacher", "student")
MAX_IMGSZ = 4096  # --imgsz / --low-res: larger training crops exhaust any memory
# Schedules that fit a few hours on 2 CPU cores (the shipped weights); a GPU run can afford more.
STAGE_DEFAULTS = {
    "teacher": {"out": "runs/teacher", "epochs": 12, "low_res_epochs": 9},
    "student": {"out": "runs/student", "epochs": 8, "low_res_epochs": 6},
}


@dataclass
class TrainConfig:
    stage: str = "teacher"
    # the network: any registered DBD network (dbd.models.list_models); the stage decides the losses
    # only. "" = the stage's own (dbd_teacher / dbd_student). A new decoder is one registered model.
    arch: str = ""
    # data
    data: str = "cuhk"  # catalogue name, a folder with images/ + masks/, or "synthetic"
    split: str | None = "train"  # CUHK-TR-1; the test split is never used for training or selection
    polarity: str | None = None  # for plain folders: blur_white or sharp_white
    val_fraction: float = 0.1  # held out of the training split for validation / model selection
    synthetic: float = 0.0  # extra synthetic defocus samples, as a fraction of the real ones
    synthetic_len: int = 64  # dataset size when data == "synthetic"
    # schedule
    imgsz: int = 320
    low_res: int = 256  # image size of the first `low_res_epochs` epochs (cheaper on CPU)
    low_res_epochs: int = 9
    epochs: int = 12
    batch: int = 8
    lr: float = 1e-3
    encoder_lr_mult: float = 0.3  # the pretrained encoder moves slower than the new decoder
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    max_steps_per_epoch: int = 0  # 0 = full epochs; >0 caps them (smoke tests)
    # losses (0 switches a term off)
    bce: float = 1.0
    dice: float = 1.0
    side: float = 0.4  # deep supervision: weight of each side output
    edge: float = 0.0  # D-DFFNet's DOF-edge term: Dice of the Laplacian edges of map and mask
    connectivity: float = 0.0  # Relation-aware Network's 8-direction connectivity (a training-only head)
    kd_out: float = 1.0  # student: BCE to the teacher's soft blur map
    kd_feat: float = 1.0  # student: decoder features matched through 1x1 adapters
    kd_temperature: float = 0.5  # student: the teacher's logits are divided by this (< 1 sharpens)
    kd_agree_only: bool = True  # student: output KD only where the teacher agrees with the mask
    adv_gt: float = 0.01  # student: discriminator of (image, gt) vs (image, student)
    adv_teacher: float = 0.01  # student: discriminator of (image, teacher) vs (image, student)
    teacher: str | None = None  # student: teacher checkpoint (.safetensors), or several joined by commas
    teacher_tta: str = ""  # student: the teacher's test-time augmentation, e.g. "384,448+flip"
    teacher_cache: str | None = None  # student: folder of cached teacher maps; then kd_out/adv_teacher run no teacher
    teacher_refine: str = "none"  # student: the cached teacher maps' last step, "none" (bilinear) or "guided"
    # acquisition robustness: the capture pipeline varied, never the focus (0 switches it off)
    acquisition: float = 0.0  # probability that a sample goes through a random downscaler/JPEG/noise
    # run
    model_config: dict[str, Any] = field(default_factory=dict)  # kwargs of the architecture (--model-config k=v,...)
    pretrained: bool = True  # ImageNet-initialised encoder
    init: str | None = None  # warm start: weights of a checkpoint of the same stage (fine-tuning)
    amp: str = "auto"  # bf16 autocast: auto (GPU, or a CPU where a probe measures it faster), on, off
    seed: int = 0
    out: str = "runs/teacher"
    resume: bool = False
    device: str = "auto"  # auto, cpu, cuda
    workers: int = 2
    threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self) -> None:
        self.arch = self.arch or f"dbd_{self.stage}"

    @property
    def needs_teacher(self) -> bool:
        return self.stage == "student" and bool(self.kd_out or self.kd_feat or self.adv_teacher)

    @property
    def uses_cache(self) -> bool:
        """Teacher maps come from the cache (computed once), not from a teacher forward per step."""
        return self.needs_teacher and bool(self.teacher_cache) and bool(self.kd_out or self.adv_teacher)

    @property
    def needs_live_teacher(self) -> bool:
        """Feature distillation matches the teacher's decoder features on each view: those are not cached."""
        return self.needs_teacher and (bool(self.kd_feat) or not self.teacher_cache)

    def check_types(self) -> None:
        """Every setting has its field's type, whether it came from a flag or a TOML file: TOML
        `pretrained = "no"` or `epochs = 1.5` is an error naming the key, never a silent guess."""
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if kind == "bool":
                ok = isinstance(value, bool)
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind == "float":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif kind.startswith("str"):
                ok = isinstance(value, str) or (value is None and "None" in kind)
            else:
                ok = isinstance(value, dict)
            if not ok:
                expected = {"bool": "true or false", "int": "an integer", "float": "a number"}.get(
                    kind, "a table" if kind.startswith("dict") else "a string"
                )
                raise DBDError(
                    f"setting '{f.name}' must be {expected}, got {value!r} "
                    f"({type(value).__name__}); fix --{f.name.replace('_', '-')} or the config file"
                )

    def validate(self) -> "TrainConfig":
        self.check_types()
        if self.stage not in STAGES:
            raise DBDError(f"unknown stage '{self.stage}'; use one of {', '.join(STAGES)}")
        from dbd.models import list_models

        if self.arch not in list_models():
            close = difflib.get_close_matches(self.arch, list_models(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DBDError(f"unknown --arch '{self.arch}'; {hint}registered models: {', '.join(list_models())}")
        if self.teacher_refine not in ("none", "guided"):
            raise DBDError(f"--teacher-refine must be none or guided, got {self.teacher_refine!r}")
        if self.needs_teacher and not self.teacher:
            raise DBDError(
                "distillation (--kd-out, --kd-feat, --adv-teacher) needs a teacher: pass --teacher "
                "runs/teacher/best.safetensors (or set those weights to 0 to train the student alone)"
            )
        for f in fields(self):  # NaN passes every `< 0` test below; inf is no setting either
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise DBDError(
                    f"{_flag(f.name)} (key '{f.name}' in a --config file) must be a finite number, got {value}"
                )
        for name in ("epochs", "batch", "imgsz", "low_res"):
            if getattr(self, name) <= 0:
                raise DBDError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("imgsz", "low_res"):
            if getattr(self, name) > MAX_IMGSZ:
                raise DBDError(f"{_flag(name)} must be at most {MAX_IMGSZ}, got {getattr(self, name)}")
        if self.threads > MAX_THREADS:
            raise DBDError(f"--threads must be at most {MAX_THREADS} (0: torch's default), got {self.threads}")
        if self.imgsz % 32 or self.low_res % 32:
            raise DBDError(f"--imgsz and --low-res must be multiples of 32, got {self.imgsz} and {self.low_res}")
        if not 0.0 < self.val_fraction < 1.0:
            raise DBDError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.split is not None:
            self.split = self.split.strip()  # '' (--split ''): all pairs, validation held out by hash
        if self.split and self.split.lower() == "test":
            raise DBDError("training on the test split would make every reported number meaningless; use --split train")
        if self.kd_temperature <= 0:
            raise DBDError(f"--kd-temperature must be positive, got {self.kd_temperature}")
        for name in (
            "bce",
            "dice",
            "side",
            "edge",
            "connectivity",
            "kd_out",
            "kd_feat",
            "adv_gt",
            "adv_teacher",
            "synthetic",
            "lr",
            "encoder_lr_mult",
            "weight_decay",
            "warmup_steps",
            "low_res_epochs",
            "max_steps_per_epoch",
            "workers",
            "threads",
            "seed",
        ):
            if getattr(self, name) < 0:
                raise DBDError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.synthetic_len <= 0:
            raise DBDError(f"--synthetic-len must be positive, got {self.synthetic_len}")
        if not 0.0 <= self.acquisition <= 1.0:
            raise DBDError(f"--acquisition is a probability in [0, 1], got {self.acquisition}")
        for name, allowed in (("device", ("auto", "cpu", "cuda")), ("amp", ("auto", "on", "off"))):
            if getattr(self, name) not in allowed:
                raise DBDError(f"--{name} must be one of {', '.join(allowed)}, got '{getattr(self, name)}'")
        return self


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (default None = 'not given', so file values survive)."""
    parser.add_argument("--config", type=Path, help="TOML file with any of the fields below")
    parser.add_argument(
        "--model-config",
        metavar="KEY=VALUE,...",
        default=None,
        help="architecture options as TOML values, e.g. 'srfb=true,sab=true' or "
        "'decoder_channels=[96,64,48]' (merged over the config file's model_config)",
    )
    for f in fields(TrainConfig):
        if f.name in ("stage", "model_config"):
            continue
        if f.type in ("bool", bool):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            default = f.default if f.default is not dataclasses.MISSING else None
            parser.add_argument(
                _flag(f.name), type=kind, default=None, metavar=kind.__name__.upper(), help=f"(default: {default})"
            )


def load_config(stage: str, args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {"stage": stage, **STAGE_DEFAULTS[stage]}
    if args.config is not None:
        if not args.config.is_file():
            raise DBDError(f"config file '{args.config}' does not exist; check the --config path")
        try:
            file_values = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DBDError(f"config file '{args.config}' is not UTF-8 text; save it as UTF-8 TOML") from None
        except OSError as err:
            raise DBDError(f"cannot read config file '{args.config}' ({err.strerror}); check its permissions") from None
        except tomllib.TOMLDecodeError as err:
            raise DBDError(f"config file '{args.config}' is not valid TOML: {err}") from None
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise DBDError(f"config file '{args.config}' has unknown keys {unknown}; see dbd-train {stage} --help")
        for key, value in file_values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise DBDError(
                    f"config file '{args.config}': '{key}' must be a finite number, got {value}; fix the file"
                )
        values.update(file_values)
    flags = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(TrainConfig)} and v is not None}
    if isinstance(flags.get("model_config"), str):
        flags["model_config"] = {**values.get("model_config", {}), **parse_model_config(flags["model_config"])}
    values.update(flags)
    return TrainConfig(**values).validate()


def parse_model_config(text: str) -> dict[str, Any]:
    """'srfb=true, decoder_channels=[96,64,48]' -> {'srfb': True, 'decoder_channels': [96, 64, 48]}."""
    lines, depth, part = [], 0, ""
    for ch in text:  # split on commas outside brackets
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            lines.append(part)
            part = ""
        else:
            part += ch
    lines.append(part)
    try:
        return tomllib.loads("\n".join(line.strip() for line in lines if line.strip()))
    except tomllib.TOMLDecodeError as err:
        raise DBDError(
            f"--model-config '{text}' is not KEY=VALUE pairs with TOML values ({err}); "
            f"write e.g. --model-config 'srfb=true,decoder_channels=[96,64,48]'"
        ) from None


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as TOML (written into every run folder, re-usable with --config)."""
    lines = []
    for key, value in dataclasses.asdict(cfg).items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, dict):
            text = (
                "{"
                + ", ".join(
                    f"{k} = {v!r}" if not isinstance(v, (list, tuple)) else f"{k} = {list(v)!r}"
                    for k, v in value.items()
                )
                + "}"
            )
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
