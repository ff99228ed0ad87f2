"""LFM2-MoE (``Lfm2MoeForCausalLM``, model_type "lfm2_moe"): LFM2 (:mod:`.lfm2`: gated short
convolutions and attention blocks) whose feed-forward is, after the first ``num_dense_layers``
dense MLPs, a mixture of experts (sigmoid router with an expert bias for the choice, top-k
weights renormalised and scaled). The blocks are LFM2's (:class:`Lfm2MoeConvLayer`,
:class:`Lfm2MoeAttentionLayer`); the feed-forward is the model's own module, its experts by
their eager forward (:func:`~memlens.models.hf.hybrid.feed_forward`); the rotary embedding is
the model's ``pos_emb``. Readouts: convolution blocks ``hidden`` and ``conv`` (hidden x
(conv_L_cache - 1)); attention blocks ``hidden`` only (the key/value cache is their state).
Tangents: the generic path. Analysed in ``window:N`` or ``sentence`` only."""

from __future__ import annotations

from typing import Any

from torch import nn

from memlens.models.hf.block import HFBlockLayer
from memlens.models.hf.lfm2 import Lfm2AttentionLayer, Lfm2ConvLayer, Lfm2Family


class Lfm2MoeConvLayer(Lfm2ConvLayer):
    """An ``Lfm2MoeDecoderLayer`` with a ``conv`` operator: :class:`Lfm2ConvLayer`, the
    feed-forward an MLP or the sparse mixture of experts (``feed_forward``)."""


class Lfm2MoeAttentionLayer(Lfm2AttentionLayer):
    """An ``Lfm2MoeDecoderLayer`` with ``self_attn``: :class:`Lfm2AttentionLayer` (q/k norms,
    rotary from the model's ``pos_emb``), the feed-forward an MLP or experts."""


class Lfm2MoeFamily(Lfm2Family):
    """``Lfm2MoeForCausalLM`` / ``Lfm2MoeModel``: blocks ``model.layers``, rotary
    ``model.pos_emb``, head ``embedding_norm`` + ``lm_head`` (as LFM2)."""

    causal_lm = "Lfm2MoeForCausalLM"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        rotary = getattr(backbone, "pos_emb", None) or backbone.rotary_emb
        return [Lfm2MoeAttentionLayer(b, config, i, rotary)
                if getattr(b, "is_attention_layer", False) else Lfm2MoeConvLayer(b, config, i)
                for i, b in enumerate(backbone.layers)]
