"""RecurrentGemma (``RecurrentGemmaForCausalLM``, model_type "recurrent_gemma", Griffin): residual
blocks whose temporal mixer is an RG-LRU recurrent block (with a causal temporal convolution) or
a local (sliding-window) attention block, each followed by a gated MLP.

Recurrent blocks (:class:`RGLRULayer`, kind ``rg_lru``): readouts ``hidden`` (the block output),
``lru`` (lru_width: the RG-LRU state h) and ``conv`` (lru_width x (conv1d_width - 1): the last
inputs of the temporal convolution). Attention blocks (:class:`RecurrentGemmaAttentionLayer`):
readout ``hidden`` only; their state is the last attention_window_size - 1 keys/values (the
model's sliding cache) and the position. Gemma's RMSNorms scale by (1 + w); the embeddings are
multiplied by the model's ``normalizer`` (sqrt(hidden) as its bfloat16 buffer holds it) in the
first block's step (so x_t is the embedding row, as ``inputs_embeds``); the head soft-caps the
logits (``logits_soft_cap``). Tangents: the generic path. Analysed in ``window:N`` or
``sentence`` only.

The model's backward clips the derivative of sqrt(1 - a^2) at 1000 (a training aid): the step
uses the exact derivative, equal to it while 1 - a^2 > 2.5e-7.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _activation, _rms
from memlens.models.hf.hybrid import AttentionLayer
from memlens.models.hf.registry import HFFamily


def _rms1(x: Tensor, norm: nn.Module) -> Tensor:
    """Gemma's RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + w), in the input's dtype."""
    return _rms(x, 1.0 + norm.weight, float(norm.eps))


class _GemmaBlock:
    """What both kinds of RecurrentGemma block share: the input scale (first block only) and
    hidden = r + MLP((1 + w) RMSNorm(r)) with the block's ``channel_pre_norm`` / ``mlp_block``."""

    block: nn.Module
    scale: Tensor | None

    def _scaled(self, x: Tensor) -> Tensor:
        return x if self.scale is None else x * self.scale.to(x.dtype)

    def _mlp(self, r: Tensor) -> Tensor:
        return r + self.block.mlp_block(_rms1(r, self.block.channel_pre_norm))


class RGLRULayer(_GemmaBlock, HFBlockLayer):
    """A ``RecurrentGemmaDecoderLayer`` with a ``RecurrentGemmaRecurrentBlock``: with
    xn = (1 + w) RMSNorm(x),

    y = act(linear_y(xn));  c = conv_1d taps . [conv, linear_x(xn)] + bias
    i, r = sigmoid(block-diagonal gates of c, per head);  log a = -8 r softplus(param)
    h' = a h + sqrt(1 - a^2) (i c)   (at the first position: h' = i c)
    hidden = r + MLP(RMSNorm(r)),  r = x + linear_out(h' y)
    """

    kind = "rg_lru"

    def __init__(self, block: nn.Module, config: Any, index: int, scale: Tensor | None):
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        tb = block.temporal_block
        self.scale = scale
        self.act = _activation(config.hidden_activation)
        self.width, self.heads = int(tb.lru_width), int(tb.rg_lru.num_attention_heads)
        k = int(tb.conv1d_width)
        self.components = {"hidden": (self.hidden_size,), "lru": (self.width,),
                           "conv": (self.width, k - 1)}

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        state = self._zeros(batch, device, dtype)
        state["fresh"] = state["hidden"].new_ones(batch, 1)  # 1 before the first position
        return state

    def _gate(self, c: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """sigmoid(per head c_h W_h + b_h) (the model's block-diagonal gate)."""
        ch = c.view(c.shape[0], self.heads, -1)
        return torch.sigmoid(torch.einsum("bhi,hij->bhj", ch, weight) + bias).reshape(c.shape)

    def step(self, x: Tensor, state: HFState) -> HFState:
        tb = self.block.temporal_block
        lru, x = tb.rg_lru, self._scaled(x)
        xn = _rms1(x, self.block.temporal_pre_norm)
        y = self.act(tb.linear_y(xn))
        window = torch.cat([state["conv"], tb.linear_x(xn).unsqueeze(-1)], -1)
        c = (window * tb.conv_1d.weight[:, 0, :]).sum(-1) + tb.conv_1d.bias
        gate_in = self._gate(c, lru.input_gate_weight, lru.input_gate_bias)
        gate_a = self._gate(c, lru.recurrent_gate_weight, lru.recurrent_gate_bias)
        log_a = -8.0 * gate_a * F.softplus(lru.recurrent_param)
        fresh = state["fresh"]
        mult = fresh + (1 - fresh) * torch.sqrt(1 - torch.exp(2 * log_a))
        h = (1 - fresh) * torch.exp(log_a) * state["lru"] + c * gate_in * mult
        r = x + tb.linear_out(h * y)
        return {"hidden": self._mlp(r), "lru": h, "conv": window[..., 1:],
                "fresh": torch.zeros_like(fresh)}


class RecurrentGemmaAttentionLayer(_GemmaBlock, AttentionLayer):
    """A ``RecurrentGemmaDecoderLayer`` with local attention: :class:`AttentionLayer` whose
    queries see the last ``attention_window_size`` positions (the state keeps W - 1 keys and
    values, as the model's sliding cache) with rotary by the attention's own ``rotary_emb`` at
    the position (a state counter), (1 + w) norms, then the MLP."""

    attn_attr: ClassVar[str] = "temporal_block"

    def __init__(self, block: nn.Module, config: Any, index: int, scale: Tensor | None):
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        attn = self.attention
        self.scale = scale
        self.head_dim = int(attn.head_dim)
        self.heads = int(attn.q_proj.out_features) // self.head_dim
        self.kv_heads = int(attn.k_proj.out_features) // self.head_dim
        self.scaling = float(attn.scaling)
        self.window = int(attn.sliding_window)
        self.rotary = attn.rotary_emb
        self._apply_rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        self.components = {"hidden": (self.hidden_size,)}

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        state = super().init_state(batch, device, dtype)
        state["position"] = state["hidden"].new_zeros(batch, 1)
        return state

    def step(self, x: Tensor, state: HFState) -> HFState:
        attn, b, x = self.attention, x.shape[0], self._scaled(x)
        xn = _rms1(x, self.block.temporal_pre_norm)
        q = attn.q_proj(xn).view(b, self.heads, self.head_dim)
        k = attn.k_proj(xn).view(b, self.kv_heads, self.head_dim)
        v = attn.v_proj(xn).view(b, self.kv_heads, self.head_dim)
        pos = state["position"][:1].long()                               # 1 x 1
        cos, sin = self.rotary(q, position_ids=pos)
        q, k = self._apply_rotary(q.unsqueeze(2), k.unsqueeze(2), cos, sin)
        q, k = q.squeeze(2), k.squeeze(2)
        keys = torch.cat([state["key"], k.unsqueeze(1)], 1)[:, -self.window:]
        values = torch.cat([state["value"], v.unsqueeze(1)], 1)[:, -self.window:]
        qg = q.view(b, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        w = torch.softmax(torch.einsum("bkgd,btkd->bkgt", qg, keys) * self.scaling, -1)
        a = torch.einsum("bkgt,btkd->bkgd", w, values).reshape(b, -1)
        r = x + attn.o_proj(a)
        return {"hidden": self._mlp(r), "key": keys[:, 1 - self.window:] if self.window > 1
                else keys[:, :0], "value": values[:, 1 - self.window:] if self.window > 1
                else values[:, :0], "position": state["position"] + 1}


class RecurrentGemmaFamily(HFFamily):
    """``RecurrentGemmaForCausalLM`` / ``RecurrentGemmaModel``: blocks ``model.layers`` (by
    ``config.layers_block_type``), the embedding scale ``model.normalizer`` (in the first
    block), head the final (1 + w) norm ``final_norm`` + ``lm_head`` + the logit soft cap."""

    causal_lm = "RecurrentGemmaForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, blk in enumerate(backbone.layers):
            scale = backbone.normalizer if i == 0 else None
            if hasattr(blk.temporal_block, "rg_lru"):
                out.append(RGLRULayer(blk, config, i, scale))
            else:
                out.append(RecurrentGemmaAttentionLayer(blk, config, i, scale))
        return out

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(_OnePlusNorm(backbone.final_norm), model.lm_head,
                      soft_cap=float(model.config.logits_soft_cap))


class _OnePlusNorm(nn.Module):
    """The final (1 + w) RMSNorm in the input's dtype (the module rounds through float32)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return _rms1(x, self.norm)
