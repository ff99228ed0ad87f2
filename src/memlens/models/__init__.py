"""Recurrent models: layers, the analysis interface (encoder), language models, wrap(), the
layer-type registry, state extraction and the non-recurrent baselines (n-gram, window LM)."""

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
from memlens.models.registry import LayerType, register_layer, unregister_layer

__all__ = ["ARCHITECTURES", "FactorizedLSTMLayer", "GroupedLSTMLayer", "LanguageModel",
           "LayerType", "RecurrentEncoder", "RecurrentLayer", "StepLayer", "Stream",
           "TorchLayer", "as_encoder", "as_stream", "load_checkpoint", "register_layer",
           "save_checkpoint", "unregister_layer", "wrap"]
