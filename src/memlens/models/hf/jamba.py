"""Jamba (``JambaForCausalLM``, model_type "jamba"): a hybrid of Mamba-1 mixers and attention
blocks without positional encoding (:mod:`.hybrid`), each decoder layer followed by an MLP or a
mixture of experts (the model's own module). Mamba blocks (:class:`JambaMambaLayer`): readouts
``hidden`` (the decoder layer's output), ``ssm`` (d_inner x d_state) and ``conv`` (d_inner x
(conv_kernel - 1)), as :class:`~memlens.models.hf.mamba.MambaLayer` with RMS norms (with
weights) on dt, B and C. Attention blocks (:class:`JambaAttentionLayer`): readout ``hidden``
only; the key/value cache is their state. Tangents: the generic path. Analysed in
``window:N`` or ``sentence`` only."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms
from memlens.models.hf.hybrid import AttentionLayer, feed_forward
from memlens.models.hf.mamba import MambaLayer
from memlens.models.hf.registry import HFFamily
from memlens.protocol import TangentRule


class JambaMambaLayer(MambaLayer):
    """A ``JambaMambaDecoderLayer``: the Mamba step of :class:`MambaLayer` on
    ``input_layernorm`` and ``mamba``, whose low-rank dt, B and C go through the mixer's
    ``dt_layernorm``, ``b_layernorm``, ``c_layernorm`` (RMS norms with weights) before the SSM;
    then hidden = h + FF(RMSNorm(h)) (``pre_ff_layernorm``, ``feed_forward``: MLP or experts).
    """

    kind = "mamba"
    mixer_attr = "mamba"
    norm_attr = "input_layernorm"
    tangent_rule = TangentRule.GENERIC  # MambaLayer.jvp_step covers neither the norms nor FF

    def _select(self, dt: Tensor, b: Tensor, cc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mix = self.mixer
        return tuple(_rms(v, n.weight, float(n.variance_epsilon)) for v, n in
                     ((dt, mix.dt_layernorm), (b, mix.b_layernorm), (cc, mix.c_layernorm)))

    def step(self, x: Tensor, state: HFState) -> HFState:
        new = super().step(x, state)
        new["hidden"] = feed_forward(self.block, new["hidden"])
        return new


class JambaAttentionLayer(AttentionLayer):
    """A ``JambaAttentionDecoderLayer``: :class:`AttentionLayer` without rotary (Jamba's
    attention has no positional encoding)."""


class JambaFamily(HFFamily):
    """``JambaForCausalLM`` / ``JambaModel``: blocks ``model.layers`` (``mamba`` or
    ``self_attn`` decoder layers), head ``final_layernorm`` + ``lm_head``."""

    causal_lm = "JambaForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        return [JambaMambaLayer(b, config, i) if hasattr(b, "mamba")
                else JambaAttentionLayer(b, config, i)
                for i, b in enumerate(backbone.layers)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.final_layernorm, model.lm_head)
