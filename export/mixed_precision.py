"""Which modules an int8 export keeps in float, and how each converter names them.

Why: quantising the student's MobileNetV2 stem and first inverted residual (the 160x160 layers
whose output is also the decoder's finest skip) loses most of the blur-map PSNR that full int8
loses, while they are a small share of its MACs; kept in float, the file stays int8 in all but its
first three convolutions. The measurements: docs/export.md ("Precisions and mixed int8").

An architecture declares its modules (`DBDNet.int8_float_modules`, dotted names as in
`named_modules()`); `dbd-export --int8-float` overrides them. Converters do not keep PyTorch's
names, so each format plug-in translates them with what is here: `trace_calls` (the chain of modules
called at each module entry, for converters that name tensors after it) and `conv_call_order` (the
Conv2d modules in the order they run, for graphs whose Conv nodes are anonymous).
"""

from __future__ import annotations

import difflib
from typing import Iterable

import torch
from torch import nn

from dbd.core import DBDError


def resolve_modules(model: nn.Module, names: Iterable[str]) -> tuple[str, ...]:
    """The module names, checked against the model (one-line error with a suggestion otherwise)."""
    known = dict(model.named_modules())
    resolved = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, [k for k in known if k], n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DBDError(
                f"--int8-float: '{name}' is not a module of {type(model).__name__}; {hint}"
                f"pass dotted names from model.named_modules(), e.g. encoder.features.1, or 'none'"
            )
        resolved.append(name)
    return tuple(resolved)


def default_modules(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "int8_float_modules", ()))


def _inside(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def trace_calls(model: nn.Module, example: torch.Tensor, on_call) -> None:
    """Run `model(example)`, calling on_call(name, module, stack of called (name, module), args) at each
    module entry (args: the positional inputs of that call)."""
    stack: list[tuple[str, nn.Module]] = []
    handles = []
    for name, module in model.named_modules():

        def pre(mod, args, name=name):
            stack.append((name, mod))
            on_call(name, mod, list(stack), args)

        def post(mod, args, output):
            stack.pop()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()


def conv_call_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, weight shape) of every Conv2d in the order the forward pass runs them."""
    calls: list[tuple[str, tuple[int, ...]]] = []

    def on_call(name, module, stack, args):
        if isinstance(module, nn.Conv2d):
            calls.append((name, tuple(module.weight.shape)))

    trace_calls(model, example, on_call)
    return calls


def float_convs(calls: list[tuple[str, tuple[int, ...]]], names: Iterable[str]) -> list[int]:
    """Positions in `calls` (from conv_call_order) of the Conv2d modules inside the float modules."""
    names = tuple(names)
    return [i for i, (conv, _) in enumerate(calls) if _inside(conv, names)]
