"""Nemotron-H (``NemotronHForCausalLM``, model_type "nemotron_h"): single-mixer blocks
h = x + mixer(RMSNorm(x)), the mixer per ``config.layers_block_type`` (``hybrid_override_pattern``
M / * / - / E): a Mamba-2 mixer, attention without positional encoding, an MLP or a mixture of
experts (the model's own modules).

Mamba-2 blocks (:class:`NemotronHMambaLayer`, kind ``mamba2``): exactly
:class:`~memlens.models.hf.mamba2.Mamba2Layer` (readouts ``hidden``, ``ssm`` with unit sets
``head:H``, ``conv``; the written-out tangents), with the mixer's own activation. Attention blocks
(:class:`NemotronHAttentionLayer`): readout ``hidden`` only; the key/value cache is their state.
MLP and expert blocks (:class:`NemotronHFeedForwardLayer`, kinds ``mlp`` / ``moe``): no state,
readout ``hidden``. Analysed in ``window:N`` or ``sentence`` only where the model has attention.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms
from memlens.models.hf.hybrid import AttentionLayer, _eager_experts
from memlens.models.hf.mamba2 import Mamba2Layer
from memlens.models.hf.registry import HFFamily
from memlens.protocol import TangentRule


class NemotronHMambaLayer(Mamba2Layer):
    """A ``NemotronHBlock`` with a Mamba-2 mixer: :class:`Mamba2Layer` (``norm``, ``mixer``),
    the activation the mixer's own (``mamba_hidden_act``)."""

    def __init__(self, block: nn.Module, config: Any, index: int):
        # Mamba2Layer reads the activation from ``hidden_act``: Nemotron-H names it otherwise
        super().__init__(block, SimpleNamespace(hidden_size=config.hidden_size,
                                                hidden_act=config.mamba_hidden_act), index)
        self.act = block.mixer.act


class NemotronHAttentionLayer(AttentionLayer):
    """A ``NemotronHBlock`` with attention (no rotary): hidden = x + attn(RMSNorm(x)) by
    :meth:`AttentionLayer.attend`; no feed-forward in the block."""

    attn_attr = "mixer"
    norm_attr = "norm"

    def step(self, x: Tensor, state: HFState) -> HFState:
        out, keys, values = self.attend(_rms(x, self.block.norm.weight, self.eps), state)
        return {"hidden": x + out, "key": keys, "value": values}


class NemotronHFeedForwardLayer(HFBlockLayer):
    """A ``NemotronHBlock`` with an MLP or experts mixer: hidden = x + mixer(RMSNorm(x)) (the
    block's own module on B x 1 x H, experts by their eager forward); no state."""

    tangent_rule = TangentRule.GENERIC

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        self.kind = "moe" if block.block_type == "moe" else "mlp"
        self.eps = float(block.norm.variance_epsilon)
        self.components = {"hidden": (self.hidden_size,)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        xn = _rms(x, self.block.norm.weight, self.eps).unsqueeze(1)
        with _eager_experts(self.block):
            return {"hidden": x + self.block.mixer(xn).squeeze(1)}


class NemotronHFamily(HFFamily):
    """``NemotronHForCausalLM`` / ``NemotronHModel``: blocks ``model.layers`` by their
    ``block_type``, head ``norm_f`` + ``lm_head``."""

    causal_lm = "NemotronHForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, b in enumerate(backbone.layers):
            if b.block_type == "linear_attention":
                out.append(NemotronHMambaLayer(b, config, i))
            elif b.block_type == "full_attention":
                out.append(NemotronHAttentionLayer(b, config, i))
            else:
                out.append(NemotronHFeedForwardLayer(b, config, i))
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.norm_f, model.lm_head)
