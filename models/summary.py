"""Parameter and multiply-accumulate counts, the numbers the student's phone budget is set in."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def example_inputs(model: nn.Module, input_size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Zero inputs for one forward pass; a model taking more than an image defines `example_inputs`."""
    if hasattr(model, "example_inputs"):
        return model.example_inputs(input_size)
    return (torch.zeros(1, 3, *input_size),)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int] = (320, 320)) -> int:
    """MACs of one inference forward pass on a 1x3xHxW input.

    torch's FlopCounterMode counts every conv (groups included), matmul and attention op at the
    aten level, so the non-local blocks are counted too; 1 MAC = 2 FLOPs. Element-wise ops
    (BN folded at export, activations, resize) are not counted, as is the convention in papers.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(*example_inputs(model, input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2
