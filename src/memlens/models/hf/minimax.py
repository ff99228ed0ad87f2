"""MiniMax (``MiniMaxForCausalLM`` / ``MiniMaxModel``, model_type "minimax"): a hybrid of
lightning attention blocks (linear attention with a per-head exponential decay and a matrix
state) and softmax attention blocks (rotary; optional sliding window), each decoder layer
followed by a mixture of experts. Both residuals are scaled and taken from the *normed* input:
h = alpha xn + beta mixer(xn), xn = RMSNorm(x); hidden = alpha' hn + beta' MoE(hn),
hn = RMSNorm(h) (the config's ``*_alpha_factor`` / ``*_beta_factor``).

Lightning attention blocks (:class:`LightningAttentionLayer`): readouts ``hidden`` (the
decoder layer's output) and ``memory`` (heads x d x d: the state S = sum_j e^{-s_h (t-j)}
k_j^T v_j, the model's ``past_key_values.linear_cache[i]``; unit sets ``head:H``, split
``heads``, as Qwen3-Next's). Attention blocks (:class:`MiniMaxAttentionLayer`): readout
``hidden`` only; the key/value cache is their state. Tangents: the generic path. Analysed in
``window:N`` or ``sentence`` only (the attention blocks' context grows).

Every value comes from the model's own parameters, buffers and modules: the RMSNorm weights
and eps, qkv_proj, the slope rates (``slope_rate``), the gate ``output_gate``, the norm over all
heads ``norm``, out_proj; q/k/v/o_proj, scaling, the rotary module; the experts module itself.
The model's RMSNorms and its router's softmax round through float32 whatever its dtype; the
steps compute in the dtype of their input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _activation, _rms
from memlens.models.hf.hybrid import AttentionLayer, _eager_experts
from memlens.models.hf.qwen3_next import GatedDeltaNetLayer
from memlens.models.hf.registry import HFFamily


def _norm(x: Tensor, norm: nn.Module) -> Tensor:
    """MiniMax's RMSNorm: x / sqrt(mean(x^2) + eps) * w (in the dtype of x)."""
    return _rms(x, norm.weight, float(norm.variance_epsilon))


def _moe(block: nn.Module, h: Tensor) -> Tensor:
    """alpha' hn + beta' MoE(hn), hn = RMSNorm(h) (h: B x H): the decoder layer's second half,
    the experts module called on B x 1 x H as in the model's forward (eager experts)."""
    hn = _norm(h, block.post_attention_layernorm)
    with _eager_experts(block.mlp):
        out = block.mlp(hn.unsqueeze(1)).squeeze(1)
    return block.mlp_alpha_factor * hn + block.mlp_beta_factor * out


class LightningAttentionLayer(GatedDeltaNetLayer):
    """A ``MiniMaxDecoderLayer`` with ``MiniMaxLightningAttention``; with xn = RMSNorm(x), per
    head h (slope s_h, the module's ``slope_rate``):

    [q, k, v] = act(qkv_proj xn) (per head, d each);  S = e^{-s_h} S + k^T v;  o = q S
    a = out_proj(RMSNorm(o over all heads) sigmoid(output_gate xn))
    h = alpha xn + beta a;  hidden = alpha' RMSNorm(h) + beta' MoE(RMSNorm(h))

    Readouts ``hidden``, ``memory`` (heads x d x d; ``head:H``).
    """

    kind = "lightning_attention"
    unit_owner = "a lightning attention block"

    def __init__(self, block: nn.Module, config: Any, index: int):
        # not GatedDeltaNetLayer.__init__: one head count, no convolution
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        lin = block.self_attn
        self.act = _activation(config.hidden_act)
        self.nk = self.nv = int(lin.num_attention_heads)
        self.dk = self.dv = int(lin.head_dim)
        self.components = {"hidden": (self.hidden_size,),
                           "memory": (self.nv, self.dk, self.dv)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        blk, lin, bsz = self.block, self.block.self_attn, x.shape[0]
        xn = _norm(x, blk.input_layernorm)
        q, k, v = self.act(lin.qkv_proj(xn)).view(bsz, self.nv, 3, self.dk).unbind(2)
        decay = torch.exp(-lin.slope_rate.to(x.dtype))                      # heads x 1 x 1
        mem = decay * state["memory"] + k.unsqueeze(-1) * v.unsqueeze(-2)   # B x h x d x d
        o = (q.unsqueeze(-1) * mem).sum(-2).reshape(bsz, -1)               # B x h d
        o = _norm(o, lin.norm) * torch.sigmoid(lin.output_gate(xn))
        h = blk.attn_alpha_factor * xn + blk.attn_beta_factor * lin.out_proj(o)
        return {"hidden": _moe(blk, h), "memory": mem}


class MiniMaxAttentionLayer(AttentionLayer):
    """A ``MiniMaxDecoderLayer`` with ``MiniMaxAttention``: :class:`AttentionLayer` (rotary,
    key/value groups) with the normed residual and the factors, h = alpha xn + beta a,
    hidden = alpha' hn + beta' MoE(hn); with ``config.sliding_window`` W a query sees its
    last W positions (itself included), as the model's sliding causal mask."""

    def __init__(self, block: nn.Module, config: Any, index: int, rotary: nn.Module | None):
        super().__init__(block, config, index, rotary)
        w = getattr(config, "sliding_window", None)
        self.window = int(w) if w else None

    def step(self, x: Tensor, state: HFState) -> HFState:
        blk, attn, b = self.block, self.attention, x.shape[0]
        xn = _norm(x, blk.input_layernorm)
        q = attn.q_proj(xn).view(b, self.heads, self.head_dim)
        k = attn.k_proj(xn).view(b, self.kv_heads, self.head_dim)
        v = attn.v_proj(xn).view(b, self.kv_heads, self.head_dim)
        q, k = self._rotate(q, k, state["key"].shape[1])
        keys = torch.cat([state["key"], k.unsqueeze(1)], 1)                # B x t+1 x kv x d
        values = torch.cat([state["value"], v.unsqueeze(1)], 1)
        seen_k, seen_v = keys, values
        if self.window is not None:
            seen_k, seen_v = keys[:, -self.window:], values[:, -self.window:]
        qg = q.view(b, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        w = torch.softmax(torch.einsum("bkgd,btkd->bkgt", qg, seen_k) * self.scaling, -1)
        a = attn.o_proj(torch.einsum("bkgt,btkd->bkgd", w, seen_v).reshape(b, -1))
        h = blk.attn_alpha_factor * xn + blk.attn_beta_factor * a
        return {"hidden": _moe(blk, h), "key": keys, "value": values}


class MiniMaxFamily(HFFamily):
    """``MiniMaxForCausalLM`` / ``MiniMaxModel``: blocks ``model.layers`` by
    ``config.layer_types`` ("linear_attention" -> :class:`LightningAttentionLayer`, else
    :class:`MiniMaxAttentionLayer`), head the final w RMSNorm ``norm`` + ``lm_head``."""

    causal_lm = "MiniMaxForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, blk in enumerate(backbone.layers):
            if config.layer_types[i] == "linear_attention":
                out.append(LightningAttentionLayer(blk, config, i))
            else:
                out.append(MiniMaxAttentionLayer(blk, config, i, backbone.rotary_emb))
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(_FinalNorm(backbone.norm), model.lm_head)


class _FinalNorm(nn.Module):
    """The final w RMSNorm in the input's dtype (the module itself rounds through float32)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return _norm(x, self.norm)
