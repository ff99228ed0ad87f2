"""OLMo-Hybrid (``OlmoHybridForCausalLM`` / ``OlmoHybridModel``, model_type "olmo_hybrid"):
gated DeltaNet blocks and OLMo-3 attention blocks, each followed by a dense MLP.

What differs from Qwen3-Next / Qwen3.5 (:mod:`.qwen3_next`, :mod:`.qwen3_5`):

* RMSNorms scale by w (not 1 + w), the final norm too;
* DeltaNet blocks (:class:`OlmoHybridDeltaNetLayer`, pre-norm): separate ``q_proj``,
  ``k_proj``, ``v_proj``, ``a_proj``, ``b_proj``, the output gate from ``g_proj``, gated norm
  ``o_norm``, output ``o_proj``; beta = 2 sigmoid(b) where ``config.linear_allow_neg_eigval``
  (eigenvalues of the transition in [-1, 1]);
* attention blocks (:class:`OlmoHybridAttentionLayer`) are post-norm, no input norm:
  h = x + RMSNorm(attn(x)), hidden = h + RMSNorm(MLP(h)); q_norm / k_norm over all heads
  together, before rotary; no output gate; rotary optional (none: NoPE), its cos / sin in
  float32 as the model's.

Readouts: DeltaNet ``hidden``, ``memory`` (value heads x d_k x d_v; units ``head:H``), ``conv``;
attention ``hidden`` only (window:N or sentence).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms
from memlens.models.hf.hybrid import AttentionLayer, feed_forward
from memlens.models.hf.qwen3_5 import SplitGatedDeltaNetLayer
from memlens.models.hf.registry import HFFamily


def _norm(x: Tensor, norm: nn.Module) -> Tensor:
    """OLMo's RMSNorm: x / sqrt(mean(x^2) + eps) * w."""
    return _rms(x, norm.weight, float(norm.variance_epsilon))


class OlmoHybridDeltaNetLayer(SplitGatedDeltaNetLayer):
    """An ``OlmoHybridLinearAttentionDecoderLayer``: :class:`SplitGatedDeltaNetLayer` with w
    norms, the projections q/k/v/g/a/b_proj, beta = 2 sigmoid(b) when negative eigenvalues are
    allowed, ``o_norm`` and ``o_proj``."""

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config, index)
        self.beta_scale = 2.0 if block.linear_attn.allow_neg_eigval else 1.0

    def _norm_in(self, x: Tensor) -> Tensor:
        return _norm(x, self.block.input_layernorm)

    def _project(self, xn: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lin = self.block.linear_attn
        mixed = torch.cat([lin.q_proj(xn), lin.k_proj(xn), lin.v_proj(xn)], -1)
        return mixed, lin.g_proj(xn), lin.b_proj(xn), lin.a_proj(xn)

    def _beta(self, b: Tensor) -> Tensor:
        beta = torch.sigmoid(b)
        return beta * self.beta_scale if self.beta_scale != 1.0 else beta

    def _gated_norm(self, o: Tensor, z: Tensor) -> Tensor:
        norm = self.block.linear_attn.o_norm
        return _rms(o, norm.weight, float(norm.variance_epsilon)) * torch.nn.functional.silu(z)

    def _out(self, o: Tensor) -> Tensor:
        return self.block.linear_attn.o_proj(o)

    def _feed_forward(self, h: Tensor) -> Tensor:
        return feed_forward(self.block, h, "post_attention_layernorm", "mlp")


class OlmoHybridAttentionLayer(AttentionLayer):
    """An ``OlmoHybridAttentionDecoderLayer`` (post-norm, module docstring): q = q_norm(q_proj x),
    k = k_norm(k_proj x) over all heads, rotary (if any), softmax attention over the cache,
    h = x + RMSNorm(o_proj a), hidden = h + RMSNorm(MLP(h))."""

    def __init__(self, block: nn.Module, config: Any, index: int, rotary: nn.Module | None):
        # not AttentionLayer.__init__: the block has no input norm
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        attn = self.attention
        self.head_dim = int(attn.head_dim)
        self.heads = int(attn.q_proj.out_features) // self.head_dim
        self.kv_heads = int(attn.k_proj.out_features) // self.head_dim
        self.scaling = float(attn.scaling)
        self.rotary = rotary
        self._apply_rotary = getattr(sys.modules[type(attn).__module__],
                                     "apply_rotary_pos_emb", None)
        self.components = {"hidden": (self.hidden_size,)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        attn, bsz, blk = self.attention, x.shape[0], self.block
        q = _norm(attn.q_proj(x), attn.q_norm).view(bsz, self.heads, self.head_dim)
        k = _norm(attn.k_proj(x), attn.k_norm).view(bsz, self.kv_heads, self.head_dim)
        v = attn.v_proj(x).view(bsz, self.kv_heads, self.head_dim)
        q, k = self._rotate(q, k, state["key"].shape[1])
        keys = torch.cat([state["key"], k.unsqueeze(1)], 1)
        values = torch.cat([state["value"], v.unsqueeze(1)], 1)
        qh = q.view(bsz, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        w = torch.softmax(torch.einsum("bkgd,btkd->bkgt", qh, keys) * self.scaling, -1)
        a = torch.einsum("bkgt,btkd->bkgd", w, values).reshape(bsz, -1)
        h = x + _norm(attn.o_proj(a), blk.post_attention_layernorm)
        hidden = h + _norm(blk.mlp(h.unsqueeze(1)).squeeze(1), blk.post_feedforward_layernorm)
        return {"hidden": hidden, "key": keys, "value": values}


class OlmoHybridFamily(HFFamily):
    """``OlmoHybridForCausalLM`` / ``OlmoHybridModel``: blocks ``model.layers`` by
    ``config.layer_types`` ("linear_attention" -> :class:`OlmoHybridDeltaNetLayer`, else
    :class:`OlmoHybridAttentionLayer`), head the final w RMSNorm ``norm`` + ``lm_head``."""

    causal_lm = "OlmoHybridForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, blk in enumerate(backbone.layers):
            if config.layer_types[i] == "linear_attention":
                out.append(OlmoHybridDeltaNetLayer(blk, config, i))
            else:
                out.append(OlmoHybridAttentionLayer(blk, config, i, backbone.rotary_emb))
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(_WNorm(backbone.norm), model.lm_head)


class _WNorm(nn.Module):
    """The final w RMSNorm in the input's dtype (the module itself rounds through float32)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return _norm(x, self.norm)
