"""The networks of a training run: the one being trained (any registered DBD network, warm-started
by --init), the teacher it learns from and the discriminators, checked by the network contract
(dbd.models.base.DBDNet), never by name."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dbd.core import DBDError
from dbd.models import create_model
from dbd.models.base import DBDNet, DBDOutput
from dbd.models.checkpoint import load_checkpoint
from dbd.runtime.spec import PreprocessSpec

from .config import TrainConfig
from .teacher_cache import teacher_paths


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


@dataclass
class Networks:
    """What one run trains (the network, wrapped with its distillation adapters) and learns from."""

    net: DBDNet
    model: TrainForward
    spec: PreprocessSpec
    teacher: nn.Module | None = None  # only when distillation needs a teacher forward per step
    teacher_card: dict | None = None
    renorm: nn.Module | None = None  # the student's batch in the teacher's normalisation
    discriminators: dict[str, nn.Module] = field(default_factory=dict)


def build_networks(cfg: TrainConfig, device: torch.device) -> Networks:
    """The network of `cfg.arch` (warm-started by --init), the teacher and discriminators its losses
    need. Any registered DBD network may be trained or teach: the contract is checked, not the name."""
    torch.manual_seed(cfg.seed)
    model_config = {**cfg.model_config, **({"connectivity": True} if cfg.connectivity else {})}
    net = create_model(cfg.arch, pretrained=cfg.pretrained and not (cfg.resume or cfg.init), **model_config)
    require_dbd_network(net, f"--arch {cfg.arch}")
    net = net.to(device)
    if cfg.init and not cfg.resume:
        warm_start(net, cfg.init)
    spec = PreprocessSpec.for_model(net, (cfg.imgsz, cfg.imgsz))
    teacher, teacher_card, renorm, adapters, discriminators = None, None, None, None, {}
    if cfg.needs_teacher:
        first_teacher = teacher_paths(cfg.teacher)[0]
        teacher, teacher_card = load_checkpoint(first_teacher)
        require_dbd_network(teacher, f"--teacher '{first_teacher}'")
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
        if cfg.needs_live_teacher:
            teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
            # The teacher's encoder was pretrained with another normalisation than the student's.
            renorm = Renormalise(spec, PreprocessSpec.from_card(teacher_card, first_teacher)).to(device)
        else:
            teacher = None  # the maps come from the cache: no teacher forward in a step
    if cfg.stage == "student":
        for name in ("adv_gt", "adv_teacher"):
            if getattr(cfg, name):
                discriminators[name] = create_model("dbd_discriminator").to(device)
    model = TrainForward(net, adapters).to(memory_format=torch.channels_last)  # ~15 % faster convs
    return Networks(net, model, spec, teacher, teacher_card, renorm, discriminators)


def require_dbd_network(net: nn.Module, what: str) -> None:
    if not isinstance(net, DBDNet):
        raise DBDError(
            f"{what} is a '{getattr(net, 'arch', type(net).__name__)}', not a DBD network (dbd.models.base.DBDNet: "
            f"a training forward with logits and decoder features); choose a blur-map model from dbd.models.list_models()"
        )


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
