"""What every DBD network shares: the output convention, the training-time outputs, and the
encoder → context → decoder → head composition the teacher and the student are both built from.

`forward(x)` returns the probability that each pixel is BLURRED (1 = out of focus), at the input
resolution: the one tensor that gets exported. `forward_train(x)` returns logits (for numerically
stable BCE), the deep-supervision side outputs and the decoder features that distillation matches.

A network is parts, as in segmentation_models_pytorch: a `features_only` encoder (timm style,
declaring `feature_info` channels and reductions), a context module on its deepest level, a
top-down decoder generic in its number of levels (`models/decoder.py`: one block per level, each
fusing the upsampled stage with the encoder skip of its stride), and a head. Adding a decoder
variant is a block class and a registered model function that passes it to `EncoderDecoderNet`;
adding a paper's component is a class and one decoder option (`register_decoder_option`), a flag
of every such network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dbd.core import DBDError

from .decoder import DECODER_OPTIONS, Block, TopDownDecoder
from .layers import BilinearUpsample, upsample_like


@dataclass
class DBDOutput:
    logits: torch.Tensor  # (B, 1, H, W) at the input resolution
    side_logits: list[torch.Tensor]  # deep supervision, each (B, 1, H, W), deepest first
    features: list[torch.Tensor]  # decoder features at `feature_strides` (for distillation)
    # Outputs of the decoder's training heads (models/decoder.py, DecoderOption.output), None when off:
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


class EncoderDecoderNet(DBDNet):
    """encoder → context (deepest level) → `TopDownDecoder` (one block per level) → head.

    `**options` are the decoder options (`models/decoder.py`, `DECODER_OPTIONS`): the papers'
    components (srfb, sab, separated_attention, connectivity, ...), each a flag, each starting as
    the identity so that a trained network can be fine-tuned with it (see `additive_options`).

    The decoder's parts are registered on the network itself, under the names the shipped
    checkpoints were written with (`decoder.N` for the blocks, `side_heads.N`, `srfb.N`, `sab.N`,
    `separated_attention.*`, `connectivity_head.*`), not under a prefix of the decoder's own: the
    state-dict keys and the module names that exports and `--int8-float` see stay what they were.
    `self.top_down` runs them; it is not a child module, since its parts already are.
    """

    distilled_strides = (16, 8, 4)

    def __init__(
        self,
        encoder: nn.Module,
        context: nn.Module,
        context_channels: int,
        block: Block,
        decoder_channels: Sequence[int],
        head: nn.Module,
        **options: bool,
    ):
        super().__init__()
        top_down = TopDownDecoder(encoder.feature_info, context_channels, block, decoder_channels, **options)
        self.encoder = encoder
        self.context = context
        self.decoder = top_down.blocks
        self.side_heads = top_down.side_heads
        self.head = head
        self.upsample_logits = BilinearUpsample()  # no weights; an exporter may swap in an equivalent
        for option in DECODER_OPTIONS.values():  # None when off, as before
            setattr(self, option.attribute, getattr(top_down, option.attribute))
        self.__dict__["top_down"] = top_down  # bypasses nn.Module.__setattr__: not a second registration
        self.decoder_options = dict(top_down.enabled)  # every known option, on or off: the card's record
        self.stage_strides = top_down.stage_strides
        distilled = [
            (s, c) for s, c in zip(top_down.stage_strides, top_down.stage_channels) if s in self.distilled_strides
        ]
        self.feature_strides = tuple(s for s, _ in distilled)
        self.feature_channels = tuple(c for _, c in distilled)
        self.pretrained_cfg = {**encoder.pretrained_cfg, "input_size": (320, 320)}

    # Declared once, by the decoder options; read by --init (training/networks.py warm_start).
    @property
    def additive_options(self) -> dict[str, str]:  # option -> prefix of its state-dict keys
        return {name: f"{o.attribute}." for name, o in DECODER_OPTIONS.items() if o.additive or o.training_only}

    @property
    def training_only_options(self) -> tuple[str, ...]:
        return tuple(name for name, o in DECODER_OPTIONS.items() if o.training_only)

    def train(self, mode: bool = True) -> "EncoderDecoderNet":
        super().train(mode)
        self.top_down.training = mode  # its parts are switched as children of this network
        return self

    def refine_stage(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Hook for an architecture's own per-stage module (the teacher's non-local block)."""
        return x

    def decode(self, x: torch.Tensor, with_sides: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits at the input size, every stage (context first) and the low-res side logits."""
        *skips, deepest = self.encoder(x)
        decoded = self.top_down(self.context(deepest), skips, with_sides, self.refine_stage)
        logits = self.top_down.refine_logits(decoded.features, self.head(decoded.features))
        return self.upsample_logits(logits, x), decoded.stages, decoded.sides

    def forward_train(self, x: torch.Tensor) -> DBDOutput:
        logits, stages, sides = self.decode(x, with_sides=True)
        features = [s for s, stride in zip(stages, self.stage_strides) if stride in self.feature_strides]
        heads = {field: upsample_like(y, x) for field, y in self.top_down.training_outputs(stages[-1]).items()}
        return DBDOutput(logits, [upsample_like(s, x) for s in sides], features, **heads)

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
