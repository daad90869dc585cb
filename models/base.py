"""What every DBD network shares: the output convention, the training-time outputs, and the
encoder → context → decoder → head composition the teacher and the student are both built from.

`forward(x)` returns the probability that each pixel is BLURRED (1 = out of focus), at the input
resolution: the one tensor that gets exported. `forward_train(x)` returns logits (for numerically
stable BCE), the deep-supervision side outputs and the decoder features that distillation matches.

A network is parts, as in segmentation_models_pytorch: a `features_only` encoder (timm style,
declaring `feature_info` channels and reductions), a context module on its deepest level, a
top-down decoder generic in its number of levels (one block per level, each fusing the upsampled
stage with the encoder skip of its stride), and a head. Adding a decoder variant is a block class
and a registered model function that passes it to `EncoderDecoderNet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from dbd.core import DBDError

from .attention import SelectiveReceptiveField, SeparatedAttention, SupervisionGuidedAttention
from .layers import upsample_like


@dataclass
class DBDOutput:
    logits: torch.Tensor  # (B, 1, H, W) at the input resolution
    side_logits: list[torch.Tensor]  # deep supervision, each (B, 1, H, W), deepest first
    features: list[torch.Tensor]  # decoder features at `feature_strides` (for distillation)
    connectivity: torch.Tensor | None = None  # (B, 8, H, W) logits: is each of the 8 neighbours the same class?


class DBDNet(nn.Module):
    # The distillation contract: DBDOutput.features are decoder features at these strides, with
    # these channels. A teacher and a student distil features only when their strides agree.
    feature_strides: tuple[int, ...] = ()
    feature_channels: tuple[int, ...] = ()
    # Modules int8 exports keep in float because quantising them costs most of the accuracy
    # (measured per architecture; see dbd.export.mixed_precision).
    int8_float_modules: tuple[str, ...] = ()
    # Options whose modules start as the identity (a zero-initialised residual or a training-only
    # head): a network with them may warm-start from a checkpoint built without them.
    additive_options: dict[str, str] = {}  # option -> prefix of its state-dict keys
    training_only_options: tuple[str, ...] = ()  # of those, the ones forward() never uses

    def forward_train(self, x: torch.Tensor) -> DBDOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_train(x).logits)

    def check_contract(self) -> None:
        """Called by create_model: the declared features are one channel count per stride."""
        strides, channels = tuple(self.feature_strides), tuple(self.feature_channels)
        if (
            len(strides) != len(channels)
            or any(s <= 0 for s in strides)
            or list(strides) != sorted(strides, reverse=True)
        ):
            raise DBDError(
                f"{type(self).__name__} declares feature strides {strides} and channels {channels}: "
                f"one channel count per stride, strides deepest first"
            )


Block = Callable[[int, int, int], nn.Module]  # block(channels_in, skip_channels, channels_out)


class EncoderDecoderNet(DBDNet):
    """encoder → context (deepest level) → top-down decoder (one block per level) → head.

    Optional components from the papers dbd builds on, each a constructor flag, each starting as
    the identity so that a trained network can be fine-tuned with it (see `additive_options`):

    * `srfb` (DD): a selective receptive-field block after every decoder stage.
    * `sab` (DD): every stage is re-weighted by the previous level's side output.
    * `separated_attention` (Relation-aware network): clear and blurred streams refine the logits.
    * `connectivity` (Relation-aware network): an 8-neighbour connectivity head, training only.
    """

    additive_options = {
        "connectivity": "connectivity_head.",
        "srfb": "srfb.",
        "sab": "sab.",
        "separated_attention": "separated_attention.",
    }
    training_only_options = ("connectivity",)
    distilled_strides = (16, 8, 4)

    def __init__(
        self,
        encoder: nn.Module,
        context: nn.Module,
        context_channels: int,
        block: Block,
        decoder_channels: Sequence[int],
        head: nn.Module,
        *,
        connectivity: bool = False,
        srfb: bool = False,
        sab: bool = False,
        separated_attention: bool = False,
    ):
        super().__init__()
        levels = [(f["channels"], f["reduction"]) for f in encoder.feature_info][::-1]  # deepest first
        if not 1 <= len(decoder_channels) < len(levels):
            raise DBDError(
                f"decoder_channels {list(decoder_channels)} needs 1 to {len(levels) - 1} levels: "
                f"the encoder has {len(levels)} feature levels, the deepest feeds the context"
            )
        skips = [c for c, _ in levels[1:]]
        self.stage_strides = tuple(r for _, r in levels[: len(decoder_channels) + 1])
        chans = (context_channels, *decoder_channels)
        self.encoder = encoder
        self.context = context
        self.decoder = nn.ModuleList(block(chans[i], skips[i], chans[i + 1]) for i in range(len(decoder_channels)))
        self.side_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in chans[:-1])  # deep supervision
        self.head = head
        self.srfb = nn.ModuleList(SelectiveReceptiveField(c) for c in decoder_channels) if srfb else None
        self.sab = nn.ModuleList(SupervisionGuidedAttention(c) for c in decoder_channels) if sab else None
        self.separated_attention = SeparatedAttention(chans[-1]) if separated_attention else None
        # Training only: never part of forward(), so never exported.
        self.connectivity_head = nn.Conv2d(chans[-1], 8, 1) if connectivity else None
        self.feature_strides = tuple(s for s in self.stage_strides if s in self.distilled_strides)
        self.feature_channels = tuple(c for c, s in zip(chans, self.stage_strides) if s in self.distilled_strides)
        self.pretrained_cfg = {**encoder.pretrained_cfg, "input_size": (320, 320)}

    def refine_stage(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Hook for an architecture's own per-stage module (the teacher's non-local block)."""
        return x

    def decode(self, x: torch.Tensor, with_sides: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits at the input size, every stage (context first) and the low-res side logits."""
        *skips, deepest = self.encoder(x)
        d = self.context(deepest)
        stages, sides = [d], []
        for level, (block, skip) in enumerate(zip(self.decoder, reversed(skips))):
            if with_sides or self.sab is not None:
                sides.append(self.side_heads[level](d))
            d = self.refine_stage(level, block(d, skip))
            if self.srfb is not None:
                d = self.srfb[level](d)
            if self.sab is not None:
                d = self.sab[level](d, sides[level])
            stages.append(d)
        logits = self.head(d)
        if self.separated_attention is not None:
            logits = self.separated_attention(d, logits)
        return upsample_like(logits, x), stages, sides

    def forward_train(self, x: torch.Tensor) -> DBDOutput:
        logits, stages, sides = self.decode(x, with_sides=True)
        features = [s for s, stride in zip(stages, self.stage_strides) if stride in self.feature_strides]
        connectivity = (
            upsample_like(self.connectivity_head(stages[-1]), x) if self.connectivity_head is not None else None
        )
        return DBDOutput(logits, [upsample_like(s, x) for s in sides], features, connectivity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The exported path: side heads only where an option feeds them back into the decoder.
        return torch.sigmoid(self.decode(x, with_sides=False)[0])

    def check_contract(self) -> None:
        super().check_contract()
        reductions = [f["reduction"] for f in self.encoder.feature_info]
        if reductions != sorted(reductions) or any(b != 2 * a for a, b in zip(reductions, reductions[1:])):
            raise DBDError(
                f"{type(self.encoder).__name__}.feature_info reductions {reductions} must double level by level"
            )
