"""Qwen3-Next (``Qwen3NextForCausalLM``, model_type "qwen3_next"): a hybrid of gated DeltaNet
blocks (linear attention with a matrix state) and gated attention blocks (:mod:`.hybrid`), each
decoder layer followed by an MLP or a mixture of experts.

Gated DeltaNet blocks (:class:`GatedDeltaNetLayer`): readouts ``hidden`` (the decoder layer's
output), ``memory`` (value heads x d_k x d_v: the delta-rule matrix state S; unit sets
``head:H``, split ``heads``) and ``conv`` (conv_dim x (conv_kernel - 1): the last inputs of the
causal convolution over [q, k, v]). Attention blocks (:class:`Qwen3NextAttentionLayer`):
readout ``hidden`` only; the key/value cache is their state. Tangents: the generic path.
Analysed in ``window:N`` or ``sentence`` only (the attention blocks' context grows).

Qwen3-Next's RMSNorms scale by (1 + w) (zero-centred weights); the gated norm of the DeltaNet
output by w. Every value comes from the model's own parameters and modules (projections, the
head ordering of ``fix_query_key_value_ordering``, the convolution taps, A_log, dt_bias, the
rotary module, the MLP or experts).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.core.errors import MemlensError
from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _activation, _rms
from memlens.models.hf.hybrid import AttentionLayer, _eager_experts
from memlens.models.hf.registry import HFFamily
from memlens.protocol.units import UnitSet


def _rms1(x: Tensor, norm: nn.Module) -> Tensor:
    """Qwen3-Next's RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + w)."""
    return _rms(x, 1.0 + norm.weight, float(norm.eps))


def _mlp(block: nn.Module, h: Tensor) -> Tensor:
    """h + MLP(RMSNorm(h)) with the decoder layer's ``post_attention_layernorm`` and ``mlp``
    (dense or mixture of experts, called on B x 1 x H as in the model's forward)."""
    with _eager_experts(block.mlp):
        out = block.mlp(_rms1(h, block.post_attention_layernorm).unsqueeze(1))
    if isinstance(out, tuple):
        out = out[0]
    return h + out.squeeze(1)


class GatedDeltaNetLayer(HFBlockLayer):
    """A ``Qwen3NextDecoderLayer`` with ``linear_attn`` (gated delta rule), per value head h:

    q, k, v, z, b, a = in_proj(RMSNorm(x)) (the module's own head ordering);
    [q, k, v] = act(causal conv, K taps);  q, k = l2norm(q), l2norm(k) (repeated to the value
    heads);  q /= sqrt(d_k);  beta = sigmoid(b);  g = -exp(A_log) softplus(a + dt_bias)
    S = e^g S;  S' = S + k (beta (v - S^T k))^T;  o = S'^T q
    hidden = h + MLP(RMSNorm(h)),  h = x + out_proj(w RMS(o) silu(z))
    """

    kind = "gated_deltanet"
    unit_families: ClassVar[tuple[str, ...]] = ("head", "heads")
    unit_owner: ClassVar[str] = "a gated DeltaNet block"

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        lin = block.linear_attn
        self.act = _activation(lin.activation)
        self.nk, self.nv = int(lin.num_k_heads), int(lin.num_v_heads)
        self.dk, self.dv = int(lin.head_k_dim), int(lin.head_v_dim)
        self.key_dim, self.value_dim = int(lin.key_dim), int(lin.value_dim)
        self.conv_dim, k = int(lin.conv_dim), int(lin.conv_kernel_size)
        self.components = {"hidden": (self.hidden_size,),
                           "memory": (self.nv, self.dk, self.dv),
                           "conv": (self.conv_dim, k - 1)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        blk, lin, bsz = self.block, self.block.linear_attn, x.shape[0]
        xn = _rms1(x, blk.input_layernorm).unsqueeze(1)                     # B x 1 x H
        q, k, v, z, b, a = lin.fix_query_key_value_ordering(lin.in_proj_qkvz(xn),
                                                             lin.in_proj_ba(xn))
        mixed = torch.cat([t.reshape(bsz, -1) for t in (q, k, v)], -1)      # B x conv_dim
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
        beta = torch.sigmoid(b.reshape(bsz, self.nv))
        g = -torch.exp(lin.A_log) * F.softplus(a.reshape(bsz, self.nv) + lin.dt_bias)
        mem = state["memory"] * torch.exp(g)[..., None, None]                # B x nv x dk x dv
        delta = (v - (mem * k.unsqueeze(-1)).sum(-2)) * beta.unsqueeze(-1)
        mem = mem + k.unsqueeze(-1) * delta.unsqueeze(-2)
        o = (mem * q.unsqueeze(-1)).sum(-2)                                 # B x nv x dv
        norm = lin.norm
        o = _rms(o, norm.weight, float(norm.variance_epsilon))
        o = o * F.silu(z.reshape(bsz, self.nv, self.dv))
        h = x + lin.out_proj(o.reshape(bsz, -1))
        return {"hidden": _mlp(blk, h), "memory": mem, "conv": window[..., 1:]}

    # -- per-head unit sets of the memory readout ----------------------------------------
    def unit_sets(self, readout: str | None = None) -> Mapping[str, str]:
        sets = dict(super().unit_sets(readout))
        if readout == "memory":
            sets["head:H"] = (f"the {self.dk * self.dv} values of value head H's matrix state "
                              f"(H in 0..{self.nv - 1})")
        return sets

    def units(self, spec: str, readout: str | None = None) -> UnitSet:
        """``"head:H"`` on the ``memory`` readout: value head H's d_k x d_v state. Other specs:
        :meth:`RecurrentLayer.units`."""
        if not spec.startswith("head:"):
            return super().units(spec, readout)
        if readout != "memory":
            raise MemlensError(f"units {spec!r}: per-head unit sets are offered for the memory "
                               f"readout of a gated DeltaNet block, not {readout or 'hidden'!r}")
        try:
            h = int(spec.split(":", 1)[1])
        except ValueError:
            raise MemlensError(f"bad unit spec {spec!r}: expected head:H with an integer H"
                               ) from None
        if not 0 <= h < self.nv:
            raise MemlensError(f"head {h} out of range: the block has {self.nv} value heads "
                               f"(valid 0..{self.nv - 1})")
        size = self.dk * self.dv
        return UnitSet(spec, "memory", size, index=tuple(range(h * size, (h + 1) * size)))

    def unit_splits(self) -> Mapping[str, list[str]]:
        """``"heads"``: one unit set per value head (of the ``memory`` readout)."""
        return {"heads": [f"head:{h}" for h in range(self.nv)]}


class Qwen3NextAttentionLayer(AttentionLayer):
    """A ``Qwen3NextDecoderLayer`` with ``self_attn`` (gated attention): :class:`AttentionLayer`
    with q_proj giving a query and an output gate per head, (1 + w) RMSNorms on q and k per
    head before rotary, and a = a * sigmoid(gate) before o_proj; then the MLP / experts."""

    ff_norm_attr: ClassVar[str] = "post_attention_layernorm"
    ff_attr: ClassVar[str] = "mlp"

    def __init__(self, block: nn.Module, config: Any, index: int, rotary: nn.Module | None):
        # not AttentionLayer.__init__: the head count and norms are read differently here
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        attn = self.attention
        self.head_dim = int(attn.head_dim)
        self.heads = int(attn.q_proj.out_features) // (2 * self.head_dim)
        self.kv_heads = int(attn.k_proj.out_features) // self.head_dim
        self.scaling = float(attn.scaling)
        self.rotary = rotary
        self._apply_rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        self.components = {"hidden": (self.hidden_size,)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        attn, bsz = self.attention, x.shape[0]
        xn = _rms1(x, self.block.input_layernorm)
        qg = attn.q_proj(xn).view(bsz, self.heads, 2 * self.head_dim)
        q, gate = qg.chunk(2, dim=-1)
        q = _rms1(q, attn.q_norm)
        k = _rms1(attn.k_proj(xn).view(bsz, self.kv_heads, self.head_dim), attn.k_norm)
        v = attn.v_proj(xn).view(bsz, self.kv_heads, self.head_dim)
        q, k = self._rotate(q, k, state["key"].shape[1])
        keys = torch.cat([state["key"], k.unsqueeze(1)], 1)
        values = torch.cat([state["value"], v.unsqueeze(1)], 1)
        qh = q.view(bsz, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        w = torch.softmax(torch.einsum("bkgd,btkd->bkgt", qh, keys) * self.scaling, -1)
        o = torch.einsum("bkgt,btkd->bkgd", w, values).reshape(bsz, -1)
        h = x + attn.o_proj(o * torch.sigmoid(gate.reshape(bsz, -1)))
        return {"hidden": _mlp(self.block, h), "key": keys, "value": values}


class Qwen3NextFamily(HFFamily):
    """``Qwen3NextForCausalLM`` / ``Qwen3NextModel``: blocks ``model.layers`` (by
    ``config.layer_types``: "linear_attention" -> :class:`GatedDeltaNetLayer`,
    "full_attention" -> :class:`Qwen3NextAttentionLayer`), head the final (1 + w) RMSNorm
    ``norm`` + ``lm_head``."""

    causal_lm = "Qwen3NextForCausalLM"
    backbone_attr = "model"

    def accepts(self, model: nn.Module) -> bool:
        return type(model).__name__.startswith("Qwen3Next")

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, blk in enumerate(backbone.layers):
            if config.layer_types[i] == "linear_attention":
                out.append(GatedDeltaNetLayer(blk, config, i))
            else:
                out.append(Qwen3NextAttentionLayer(blk, config, i, backbone.rotary_emb))
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(_OnePlusNorm(backbone.norm), model.lm_head)


class _OnePlusNorm(nn.Module):
    """The final (1 + w) RMSNorm, computed in the input's dtype (the module itself rounds
    through float32)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return _rms1(x, self.norm)
