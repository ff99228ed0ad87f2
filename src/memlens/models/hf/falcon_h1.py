"""Falcon-H1 (``FalconH1ForCausalLM``, model_type "falcon_h1"): every decoder layer runs a Mamba-2
mixer and an attention side by side on the same normalised input, then an MLP, with Falcon-H1's
multipliers (muP):

* ``embedding_multiplier``: the first block scales its input (the analysed x_t is the embedding
  row; the model multiplies ``embed_tokens(input_ids)`` by it before the first block);
* ``ssm_in_multiplier`` on the mixer's input and the per-channel ``mup_vector`` (from
  ``ssm_multipliers``) on its ``in_proj`` output; ``ssm_out_multiplier`` on its output;
* ``attention_in_multiplier`` on the attention's input, ``key_multiplier`` on its keys (before
  rotary), ``attention_out_multiplier`` on its output;
* the MLP's ``mlp_multipliers`` (inside the model's own MLP module);
* ``lm_head_multiplier``: the head multiplies the logits by it.

One :class:`FalconH1Layer` per decoder layer: readouts ``hidden`` (the layer output), ``ssm``
(heads x head_dim x d_state; unit sets ``head:H``, split ``heads``) and ``conv`` (conv_dim x
(conv_kernel - 1)), as :class:`~memlens.models.hf.mamba2.Mamba2Layer`; the attention's
key/value cache is state too (not a readout), so every layer grows with the context and the
model is analysed in ``window:N`` or ``sentence`` only (:mod:`.hybrid`). Tangents: the generic
path."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms
from memlens.models.hf.granitemoehybrid import ScaledLinear
from memlens.models.hf.hybrid import AttentionLayer, feed_forward
from memlens.models.hf.mamba2 import Mamba2Layer
from memlens.models.hf.registry import HFFamily
from memlens.protocol import TangentRule


class FalconH1Attention(AttentionLayer):
    """The attention half of a ``FalconH1DecoderLayer`` (:meth:`AttentionLayer.attend`, the
    model's rotary), keys times ``key_multiplier`` before rotary. A part of
    :class:`FalconH1Layer`, not a layer of the encoder."""

    def __init__(self, block: nn.Module, config: Any, index: int,
                 rotary: nn.Module | None = None):
        super().__init__(block, config, index, rotary)
        self.key_multiplier = float(block.self_attn.key_multiplier)

    def _qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return q, (k if self.key_multiplier == 1.0 else k * self.key_multiplier)


class FalconH1Layer(Mamba2Layer):
    """A ``FalconH1DecoderLayer``: with x' = s x (s the embedding multiplier on the first
    block, else 1) and xn = RMSNorm(x') (``input_layernorm``),

    m = mamba(xn) by :meth:`Mamba2Layer.mix` (in_proj(ssm_in_mult xn) * mup_vector; the
    mixer's gated norm: :meth:`_gated_norm`);  a = attn(attn_in_mult xn) by
    :meth:`AttentionLayer.attend` (:class:`FalconH1Attention`);
    h = x' + ssm_out_mult m + attn_out_mult a;  hidden = h + MLP(RMSNorm(h))
    (``pre_ff_layernorm``, ``feed_forward``).

    State {hidden, ssm, conv, key, value}; readouts ``hidden``, ``ssm``, ``conv``.
    """

    kind = "mamba2+attention"
    tangent_rule = TangentRule.GENERIC  # Mamba2Layer.jvp_step covers neither attention nor MLP
    context_grows: ClassVar[bool] = True
    mixer_attr = "mamba"
    norm_attr = "input_layernorm"
    input_scale: float = 1.0

    def __init__(self, block: nn.Module, config: Any, index: int,
                 rotary: nn.Module | None = None):
        super().__init__(block, config, index)
        self.attn = FalconH1Attention(block, config, index, rotary)
        mix = self.mixer
        self.ssm_in = float(mix.ssm_in_multiplier)
        self.ssm_out = float(block.ssm_out_multiplier)
        self.attn_in = float(block.attention_in_multiplier)
        self.attn_out = float(block.attn_out_multiplier)

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        state = self._zeros(batch, device, dtype)
        kv = self.attn.init_state(batch, state["hidden"].device, state["hidden"].dtype)
        state["key"], state["value"] = kv["key"], kv["value"]
        return state

    def _project(self, xn: Tensor) -> Tensor:
        """in_proj(ssm_in_multiplier xn) * mup_vector."""
        mix = self.mixer
        out = F.linear(xn * self.ssm_in, mix.in_proj.weight, mix.in_proj.bias)
        return out * mix.mup_vector.reshape(-1).to(out.dtype)

    def _gated_norm(self, y: Tensor, z: Tensor) -> Tensor:
        """The mixer's ``FalconH1RMSNormGated`` (weight, eps, n_groups, norm_before_gate read
        from it), or y silu(z) where the config has ``mamba_rms_norm`` False."""
        mix = self.mixer
        if not mix.mamba_rms_norm:
            return y * F.silu(z)
        norm = mix.norm
        groups = int(norm.n_groups)
        if not norm.norm_before_gate:
            y = y * F.silu(z)
        g = _rms(y.view(*y.shape[:-1], groups, y.shape[-1] // groups), None,
                 float(norm.variance_epsilon))
        g = norm.weight * g.view(*y.shape)
        return g * F.silu(z) if norm.norm_before_gate else g

    def step(self, x: Tensor, state: HFState) -> HFState:
        if self.input_scale != 1.0:
            x = x * self.input_scale
        xn = _rms(x, self.norm.weight, self.eps)
        out, ssm, conv = self.mix(xn, state)
        att, keys, values = self.attn.attend(xn * self.attn_in if self.attn_in != 1.0 else xn,
                                             state)
        h = x + out * self.ssm_out + att * self.attn_out
        return {"hidden": feed_forward(self.block, h), "ssm": ssm, "conv": conv,
                "key": keys, "value": values}


class FalconH1Family(HFFamily):
    """``FalconH1ForCausalLM`` / ``FalconH1Model``: blocks ``model.layers`` (a Mamba-2 mixer and
    an attention each), rotary ``model.rotary_emb``, head ``final_layernorm`` + ``lm_head`` *
    ``lm_head_multiplier``."""

    causal_lm = "FalconH1ForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, b in enumerate(backbone.layers):
            lay = FalconH1Layer(b, config, i, backbone.rotary_emb)
            if i == 0:
                lay.input_scale = float(backbone.embedding_multiplier)
            out.append(lay)
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.final_layernorm,
                      ScaledLinear(model.lm_head, backbone.lm_head_multiplier))
