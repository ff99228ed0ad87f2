"""Qwen3.5, text model (``Qwen3_5ForCausalLM`` / ``Qwen3_5TextModel``, model_type
"qwen3_5_text"): Qwen3-Next's hybrid (:mod:`.qwen3_next`) of gated DeltaNet blocks and gated
attention blocks, each decoder layer followed by a dense MLP.

What differs from Qwen3-Next: the DeltaNet block projects with four separate linears
(``in_proj_qkv`` giving [q, k, v] already in the convolution's order, ``in_proj_z``,
``in_proj_b``, ``in_proj_a``) instead of the fused ``in_proj_qkvz`` / ``in_proj_ba`` with
``fix_query_key_value_ordering``; the rotary module is the multimodal (T, H, W) one, which for
text positions (the same id on the three axes) is the plain rotary embedding; it is called as
the model calls it. Norms, delta rule, gated norm, gated attention and the head are Qwen3-Next's.

:class:`SplitGatedDeltaNetLayer` is the gated DeltaNet step with the projection, the norms, the
beta scale and the feed-forward as overridable parts; OLMo-Hybrid (:mod:`.olmo_hybrid`) reuses
it. Readouts as Qwen3-Next: DeltaNet blocks ``hidden``, ``memory`` (value heads x d_k x d_v;
units ``head:H``), ``conv``; attention blocks ``hidden`` only (window:N or sentence).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFState, _rms
from memlens.models.hf.qwen3_next import (
    GatedDeltaNetLayer,
    Qwen3NextAttentionLayer,
    Qwen3NextFamily,
    _mlp,
    _rms1,
)


class SplitGatedDeltaNetLayer(GatedDeltaNetLayer):
    """A gated DeltaNet decoder layer whose projections are separate linears (Qwen3.5's
    ``in_proj_qkv``, ``in_proj_z``, ``in_proj_b``, ``in_proj_a``): the arithmetic of
    :class:`GatedDeltaNetLayer` (conv over [q, k, v], l2-normed q, k, e^g decay, delta rule,
    gated RMSNorm, output projection, then the feed-forward), each family-specific part a method:
    :meth:`_norm_in`, :meth:`_project`, :meth:`_beta`, :meth:`_gated_norm`, :meth:`_out`,
    :meth:`_feed_forward`."""

    def _norm_in(self, x: Tensor) -> Tensor:
        """The decoder layer's input norm ((1 + w) RMSNorm)."""
        return _rms1(x, self.block.input_layernorm)

    def _project(self, xn: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(mixed [q, k, v] B x conv_dim, z B x value_dim, b B x nv, a B x nv) of xn (B x H)."""
        lin = self.block.linear_attn
        return lin.in_proj_qkv(xn), lin.in_proj_z(xn), lin.in_proj_b(xn), lin.in_proj_a(xn)

    def _beta(self, b: Tensor) -> Tensor:
        """The delta rule's step size from b: sigmoid(b)."""
        return torch.sigmoid(b)

    def _gated_norm(self, o: Tensor, z: Tensor) -> Tensor:
        """w RMS(o) silu(z) per value head (the module's gated norm ``norm``)."""
        norm = self.block.linear_attn.norm
        return _rms(o, norm.weight, float(norm.variance_epsilon)) * F.silu(z)

    def _out(self, o: Tensor) -> Tensor:
        """The output projection of the DeltaNet module (B x value_dim -> B x H)."""
        return self.block.linear_attn.out_proj(o)

    def _feed_forward(self, h: Tensor) -> Tensor:
        """h + MLP(RMSNorm(h)) ((1 + w) norm, the block's MLP or experts)."""
        return _mlp(self.block, h)

    def step(self, x: Tensor, state: HFState) -> HFState:
        lin, bsz = self.block.linear_attn, x.shape[0]
        mixed, z, b, a = self._project(self._norm_in(x))
        window = torch.cat([state["conv"], mixed.unsqueeze(-1)], -1)
        c = (window * lin.conv1d.weight[:, 0, :]).sum(-1)
        if lin.conv1d.bias is not None:
            c = c + lin.conv1d.bias
        c = self.act(c)
        q, k, v = c.split([self.key_dim, self.key_dim, self.value_dim], -1)
        q, k = q.view(bsz, self.nk, self.dk), k.view(bsz, self.nk, self.dk)
        v = v.view(bsz, self.nv, self.dv)
        if self.nk != self.nv:
            q = q.repeat_interleave(self.nv // self.nk, dim=1)
            k = k.repeat_interleave(self.nv // self.nk, dim=1)
        q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6) * self.dk ** -0.5
        k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
        beta = self._beta(b.reshape(bsz, self.nv))
        g = -torch.exp(lin.A_log) * F.softplus(a.reshape(bsz, self.nv) + lin.dt_bias)
        mem = state["memory"] * torch.exp(g)[..., None, None]                # B x nv x dk x dv
        delta = (v - (mem * k.unsqueeze(-1)).sum(-2)) * beta.unsqueeze(-1)
        mem = mem + k.unsqueeze(-1) * delta.unsqueeze(-2)
        o = (mem * q.unsqueeze(-1)).sum(-2)                                 # B x nv x dv
        o = self._gated_norm(o, z.reshape(bsz, self.nv, self.dv))
        h = x + self._out(o.reshape(bsz, -1))
        return {"hidden": self._feed_forward(h), "memory": mem, "conv": window[..., 1:]}


class Qwen3_5Family(Qwen3NextFamily):
    """``Qwen3_5ForCausalLM`` / ``Qwen3_5TextModel`` (model_type "qwen3_5_text"; the
    multimodal ``Qwen3_5ForConditionalGeneration`` is not read): blocks ``model.layers`` by
    ``config.layer_types`` ("linear_attention" -> :class:`SplitGatedDeltaNetLayer`,
    "full_attention" -> :class:`Qwen3NextAttentionLayer`), head the final (1 + w) RMSNorm and
    ``lm_head``."""

    causal_lm = "Qwen3_5ForCausalLM"
    prefix = "Qwen3_5"  # the class-name prefix (the model type "qwen3_5_text" is not one)

    def accepts(self, model: nn.Module) -> bool:
        """The text causal LM or text model (``<prefix>ForCausalLM``, ``<prefix>TextModel``)."""
        return type(model).__name__ in (f"{self.prefix}ForCausalLM", f"{self.prefix}TextModel")

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, blk in enumerate(backbone.layers):
            if config.layer_types[i] == "linear_attention":
                out.append(SplitGatedDeltaNetLayer(blk, config, i))
            else:
                out.append(Qwen3NextAttentionLayer(blk, config, i, backbone.rotary_emb))
        return out
