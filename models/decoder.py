"""The top-down decoder of every DBD network and the options it can be built with.

`TopDownDecoder` is the decoder of segmentation_models_pytorch's encoder / decoder / head split:
built from the encoder's `feature_info`, the context channels, a block class and
`decoder_channels`, it runs one block per level (each fusing the upsampled stage with the encoder
skip of its stride) and returns the final features, every stage and the deep-supervision side
logits.

The components from the papers dbd builds on are decoder OPTIONS, declared once, here, in
`DECODER_OPTIONS`: a flag of that name switches the component on in every `EncoderDecoderNet`
(teacher, student and any registered variant), its card records it, and `--init` may add it to a
trained network when it starts as the identity. Adding a paper's block is one class and one
`register_decoder_option` call (tests/test_models_decoder.py registers a toy one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import nn

from dbd.core import DBDError

from .attention import SelectiveReceptiveField, SeparatedAttention, SupervisionGuidedAttention

Block = Callable[[int, int, int], nn.Module]  # block(channels_in, skip_channels, channels_out)


@dataclass(frozen=True)
class DecoderOption:
    """A component a decoder flag adds, and where the decoder runs it.

    `at` says where:
      * "stage": one module per decoder stage, built from that stage's channels, run after the
        block: `module(x)`, or `module(x, side_logits)` with `uses_side` (the side output of the
        level before, which the decoder then computes in the exported forward too).
      * "logits": one module on the last stage's channels: `module(features, logits) -> logits`.
      * "training_head": one module on the last stage's channels, run by `forward_train` only:
        `module(features)` becomes the DBDOutput field `output`, so it is never exported.
    """

    build: Callable[[int], nn.Module]  # from a channel count
    at: Literal["stage", "logits", "training_head"]
    # Where the network keeps the module: its attribute and state-dict prefix. The shipped
    # checkpoints fix the existing ones.
    attribute: str
    uses_side: bool = False
    output: str | None = None  # the DBDOutput field of a training head
    # Starts as the identity (a zero-initialised last layer, or a training head): a network with it
    # may warm-start from a checkpoint built without it.
    additive: bool = True

    @property
    def training_only(self) -> bool:
        return self.at == "training_head"


DECODER_OPTIONS: dict[str, DecoderOption] = {}  # flag name -> option, in the order they run


def register_decoder_option(name: str, option: DecoderOption) -> DecoderOption:
    if name in DECODER_OPTIONS:
        raise DBDError(f"decoder option '{name}' is already registered")
    if option.at == "training_head" and not option.output:
        raise DBDError(f"decoder option '{name}' is a training head: name the DBDOutput field it fills (output=)")
    DECODER_OPTIONS[name] = option
    return option


def unregister_decoder_option(name: str) -> None:
    DECODER_OPTIONS.pop(name, None)


# DD: a selective receptive-field block after every decoder stage.
register_decoder_option("srfb", DecoderOption(SelectiveReceptiveField, "stage", "srfb"))
# DD: every stage re-weighted by the previous level's supervised side output.
register_decoder_option("sab", DecoderOption(SupervisionGuidedAttention, "stage", "sab", uses_side=True))
# Relation-aware network: clear and blurred feature streams refine the logits.
register_decoder_option("separated_attention", DecoderOption(SeparatedAttention, "logits", "separated_attention"))
# Relation-aware network: an 8-neighbour connectivity head, training only.
register_decoder_option(
    "connectivity",
    DecoderOption(lambda c: nn.Conv2d(c, 8, 1), "training_head", "connectivity_head", output="connectivity"),
)


def unknown_options(options: dict) -> list[str]:
    return [name for name in options if name not in DECODER_OPTIONS]


@dataclass
class DecoderOutput:
    features: torch.Tensor  # the last stage, what the head reads
    stages: list[torch.Tensor]  # every stage, the context first
    sides: list[torch.Tensor]  # low-resolution side logits, one per level (deepest first), or none


class TopDownDecoder(nn.Module):
    """context -> one `block` per level, deepest first, with side heads and the enabled options.

    Its parts are the attributes `blocks`, `side_heads` and, per option, the option's `attribute`
    (None when off); `EncoderDecoderNet` registers them under the names the shipped checkpoints use.
    """

    def __init__(
        self,
        feature_info: Sequence[dict],
        context_channels: int,
        block: Block,
        decoder_channels: Sequence[int],
        **options: bool,
    ):
        super().__init__()
        unknown = unknown_options(options)
        if unknown:  # a TypeError, as for any unknown keyword: create_model reports it in one line
            raise TypeError(f"unknown decoder option(s) {unknown}; known: {', '.join(DECODER_OPTIONS)}")
        levels = [(f["channels"], f["reduction"]) for f in feature_info][::-1]  # deepest first
        if not 1 <= len(decoder_channels) < len(levels):
            raise DBDError(
                f"decoder_channels {list(decoder_channels)} needs 1 to {len(levels) - 1} levels: "
                f"the encoder has {len(levels)} feature levels, the deepest feeds the context"
            )
        skips = [c for c, _ in levels[1:]]
        chans = (context_channels, *decoder_channels)
        self.stage_strides = tuple(r for _, r in levels[: len(decoder_channels) + 1])  # context first
        self.stage_channels = chans
        # Built in this order (blocks, side heads, then the options in registration order) so a
        # seeded network initialises exactly as before the decoder was a module of its own.
        self.blocks = nn.ModuleList(block(chans[i], skips[i], chans[i + 1]) for i in range(len(decoder_channels)))
        self.side_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in chans[:-1])  # deep supervision
        self.enabled = {name: bool(options.get(name, False)) for name in DECODER_OPTIONS}
        for name, option in DECODER_OPTIONS.items():
            module = None
            if self.enabled[name]:
                per_stage = option.at == "stage"
                module = nn.ModuleList(map(option.build, decoder_channels)) if per_stage else option.build(chans[-1])
            setattr(self, option.attribute, module)

    def _active(self, at: str) -> list[tuple[DecoderOption, nn.Module]]:
        return [
            (o, getattr(self, o.attribute)) for n, o in DECODER_OPTIONS.items() if o.at == at and self.enabled.get(n)
        ]

    def forward(
        self,
        context: torch.Tensor,
        skips: Sequence[torch.Tensor],
        with_sides: bool = True,
        refine_stage: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> DecoderOutput:
        """`skips` are the encoder levels above the context's, finest first (as the encoder returns
        them). `refine_stage(level, x)` is an architecture's own per-stage module (the teacher's
        non-local block), run right after the block. Side logits are computed only when asked for
        or when an option feeds them back: the exported forward does not pay for them otherwise."""
        stage_options = self._active("stage")
        need_sides = with_sides or any(o.uses_side for o, _ in stage_options)
        d = context
        stages, sides = [d], []
        for level, (block, skip) in enumerate(zip(self.blocks, reversed(skips))):
            if need_sides:
                sides.append(self.side_heads[level](d))
            d = block(d, skip)
            if refine_stage is not None:
                d = refine_stage(level, d)
            for option, modules in stage_options:
                d = modules[level](d, sides[level]) if option.uses_side else modules[level](d)
            stages.append(d)
        return DecoderOutput(d, stages, sides)

    def refine_logits(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The "logits" options, on the head's output (at the last stage's resolution)."""
        for _, module in self._active("logits"):
            logits = module(features, logits)
        return logits

    def training_outputs(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training heads' outputs, by DBDOutput field, at the last stage's resolution."""
        return {option.output: module(features) for option, module in self._active("training_head")}
