"""Bamba (``BambaForCausalLM``, model_type "bamba"): a hybrid of Mamba-2 mixers and attention
blocks (:mod:`.hybrid`), each decoder layer followed by an MLP. Mamba-2 blocks
(:class:`BambaMambaLayer`): readouts ``hidden`` (the decoder layer's output), ``ssm`` (heads x
head_dim x d_state; unit sets ``head:H``, split ``heads``) and ``conv`` (conv_dim x
(conv_kernel - 1)), as :class:`~memlens.models.hf.mamba2.Mamba2Layer`. Attention blocks
(:class:`BambaAttentionLayer`, partial rotary from the model's ``rotary_emb``): readout
``hidden`` only; the key/value cache is their state. Tangents: the generic path. Analysed in
``window:N`` or ``sentence`` only."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState
from memlens.models.hf.hybrid import AttentionLayer, feed_forward
from memlens.models.hf.mamba2 import Mamba2Layer
from memlens.models.hf.registry import HFFamily
from memlens.protocol import TangentRule


class BambaMambaLayer(Mamba2Layer):
    """A ``BambaDecoderLayer`` with a ``mamba`` mixer: the Mamba-2 step of
    :class:`Mamba2Layer` on ``input_layernorm`` and ``mamba`` (h = x + mixer(RMSNorm(x))),
    then hidden = h + MLP(RMSNorm(h)) with the block's ``pre_ff_layernorm`` and
    ``feed_forward``."""

    kind = "mamba2"
    tangent_rule = TangentRule.GENERIC  # Mamba2Layer.jvp_step does not cover the MLP
    mixer_attr = "mamba"
    norm_attr = "input_layernorm"

    def step(self, x: Tensor, state: HFState) -> HFState:
        new = super().step(x, state)
        new["hidden"] = feed_forward(self.block, new["hidden"])
        return new


class BambaAttentionLayer(AttentionLayer):
    """A ``BambaDecoderLayer`` with ``self_attn``: :class:`AttentionLayer` (rotary on the
    first ``partial_rotary_factor`` of each head's channels, by the model's rotary module)."""


class BambaFamily(HFFamily):
    """``BambaForCausalLM`` / ``BambaModel``: blocks ``model.layers`` (a ``mamba`` or a
    ``self_attn`` mixer each), rotary ``model.rotary_emb``, head ``final_layernorm`` +
    ``lm_head``."""

    causal_lm = "BambaForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        return [BambaMambaLayer(b, config, i) if hasattr(b, "mamba")
                else BambaAttentionLayer(b, config, i, backbone.rotary_emb)
                for i, b in enumerate(backbone.layers)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.final_layernorm, model.lm_head)
