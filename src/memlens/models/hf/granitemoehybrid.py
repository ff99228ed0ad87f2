"""Granite-4.0 hybrid (``GraniteMoeHybridForCausalLM``, model_type "granitemoehybrid"): Bamba's
Mamba-2 mixers and attention blocks (:mod:`.bamba`, :mod:`.hybrid`), each decoder layer followed
by a shared MLP plus, where the config has experts, a mixture of experts (the model's own
modules), with Granite's multipliers:

* ``embedding_multiplier``: the first block scales its input (the analysed x_t is the embedding
  row, ``inputs_embeds``; the model multiplies it before the first block);
* ``residual_multiplier``: h = x + m * mixer(RMSNorm(x)), hidden = h + m * FF(RMSNorm(h));
* ``attention_multiplier``: the attention's softmax scale (read from the module's ``scaling``);
* ``logits_scaling``: the head divides the logits by it.

Mamba-2 blocks (:class:`GraniteMoeHybridMambaLayer`): readouts ``hidden``, ``ssm`` (heads x
head_dim x d_state; unit sets ``head:H``, split ``heads``), ``conv``. Attention blocks
(:class:`GraniteMoeHybridAttentionLayer`, rotary where ``position_embedding_type`` is "rope",
none otherwise): readout ``hidden`` only; the key/value cache is their state. Tangents: the
generic path. Analysed in ``window:N`` or ``sentence`` only."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from memlens.models.hf.bamba import BambaMambaLayer
from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms
from memlens.models.hf.hybrid import AttentionLayer, _eager_experts
from memlens.models.hf.registry import HFFamily


def granite_feed_forward(block: nn.Module, h: Tensor) -> Tensor:
    """h + m * (MoE(xn) + shared_mlp(xn)), xn = RMSNorm(h) (``post_attention_layernorm``), m the
    block's ``residual_multiplier``; the shared MLP alone where the block has no experts; the
    block's own modules on B x 1 x H (experts by their eager forward)."""
    norm = block.post_attention_layernorm
    hn = _rms(h, norm.weight, float(norm.variance_epsilon)).unsqueeze(1)
    with _eager_experts(block):
        ff = block.shared_mlp(hn)
        if block.has_experts:
            ff = block.block_sparse_moe(hn) + ff
    return h + ff.squeeze(1) * block.residual_multiplier


class GraniteMoeHybridMambaLayer(BambaMambaLayer):
    """A ``GraniteMoeHybridDecoderLayer`` with a ``mamba`` mixer: x' = s x (s the embedding
    multiplier on the first block, else 1), h = x' + m * mamba(RMSNorm(x')) by
    :meth:`Mamba2Layer.mix`, hidden = :func:`granite_feed_forward` (h)."""

    input_scale: float = 1.0

    def step(self, x: Tensor, state: HFState) -> HFState:
        if self.input_scale != 1.0:
            x = x * self.input_scale
        out, ssm, conv = self.mix(_rms(x, self.norm.weight, self.eps), state)
        h = x + out * self.block.residual_multiplier
        return {"hidden": granite_feed_forward(self.block, h), "ssm": ssm, "conv": conv}


class GraniteMoeHybridAttentionLayer(AttentionLayer):
    """A ``GraniteMoeHybridDecoderLayer`` with ``self_attn``: x' as in
    :class:`GraniteMoeHybridMambaLayer`, h = x' + m * attn(RMSNorm(x')) by
    :meth:`AttentionLayer.attend` (softmax scale ``attention_multiplier``; rotary or none),
    hidden = :func:`granite_feed_forward` (h)."""

    input_scale: float = 1.0

    def step(self, x: Tensor, state: HFState) -> HFState:
        if self.input_scale != 1.0:
            x = x * self.input_scale
        xn = _rms(x, self.block.input_layernorm.weight, self.eps)
        out, keys, values = self.attend(xn, state)
        h = x + out * self.block.residual_multiplier
        return {"hidden": granite_feed_forward(self.block, h), "key": keys, "value": values}


class ScaledLinear(nn.Module):
    """``module(h) * scale`` (a head whose logits the model scales)."""

    def __init__(self, module: nn.Module, scale: float):
        super().__init__()
        self.module, self.scale = module, float(scale)

    def forward(self, h: Tensor) -> Tensor:
        out = self.module(h)
        return out if self.scale == 1.0 else out * self.scale


class _DividedLinear(ScaledLinear):
    """``module(h) / divisor`` (Granite divides its logits by ``logits_scaling``)."""

    def forward(self, h: Tensor) -> Tensor:
        out = self.module(h)
        return out if self.scale == 1.0 else out / self.scale


class GraniteMoeHybridFamily(HFFamily):
    """``GraniteMoeHybridForCausalLM`` / ``GraniteMoeHybridModel``: blocks ``model.layers`` (a
    ``mamba`` or a ``self_attn`` mixer each, by ``config.layers_block_type``), rotary
    ``model.rotary_emb`` (None without rope), head ``norm`` + ``lm_head`` / ``logits_scaling``.
    """

    causal_lm = "GraniteMoeHybridForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, b in enumerate(backbone.layers):
            lay: HFBlockLayer
            if b.mamba is not None:
                lay = GraniteMoeHybridMambaLayer(b, config, i)
            else:
                lay = GraniteMoeHybridAttentionLayer(b, config, i, backbone.rotary_emb)
            if i == 0:
                lay.input_scale = float(backbone.embedding_multiplier)
            out.append(lay)
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.norm, _DividedLinear(model.lm_head, model.config.logits_scaling))
