"""Recurrent models: layers, the analysis interface (encoder), language models, wrap()."""

from memlens.models.checkpoint import load_checkpoint, save_checkpoint
from memlens.models.encoder import RecurrentEncoder, as_encoder, wrap
from memlens.models.inputs import Stream, as_stream
from memlens.models.layers import (
    FactorizedLSTMLayer,
    GroupedLSTMLayer,
    RecurrentLayer,
    StepLayer,
    TorchLayer,
)
from memlens.models.lm import ARCHITECTURES, LanguageModel

__all__ = ["ARCHITECTURES", "FactorizedLSTMLayer", "GroupedLSTMLayer", "LanguageModel",
           "RecurrentEncoder", "RecurrentLayer", "StepLayer", "Stream", "TorchLayer",
           "as_encoder", "as_stream", "load_checkpoint", "save_checkpoint", "wrap"]
