"""dbd.models: backbones, the teacher, the student, the discriminator, and their checkpoints."""

from . import discriminator, student, teacher  # noqa: F401  (registers the DBD models)
from .base import DBDNet, DBDOutput, EncoderDecoderNet
from .decoder import DecoderOption, TopDownDecoder, register_decoder_option
from .registry import create_model, list_models, register_model

__all__ = [
    "DBDNet",
    "DBDOutput",
    "DecoderOption",
    "EncoderDecoderNet",
    "TopDownDecoder",
    "create_model",
    "list_models",
    "register_decoder_option",
    "register_model",
]
