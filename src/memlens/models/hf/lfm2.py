"""LFM2 (``Lfm2ForCausalLM``, model_type "lfm2"): a hybrid of gated short convolutions and
attention blocks (:mod:`.hybrid`), each decoder layer followed by an MLP. Convolution blocks
(:class:`Lfm2ConvLayer`): readouts ``hidden`` (the decoder layer's output) and ``conv``
(hidden x (conv_L_cache - 1): the last gated inputs B * x of the causal convolution; HF's cache
keeps one more, unused, column). Attention blocks (:class:`Lfm2AttentionLayer`: per-head RMS
norms on q and k, rotary from the model's ``rotary_emb``): readout ``hidden`` only; the
key/value cache is their state. Tangents: the generic path. Analysed in ``window:N`` or
``sentence`` only."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms
from memlens.models.hf.hybrid import AttentionLayer, feed_forward
from memlens.models.hf.registry import HFFamily


class Lfm2ConvLayer(HFBlockLayer):
    """An ``Lfm2DecoderLayer`` with a ``conv`` (``Lfm2ShortConv``) operator: with
    xn = RMSNorm(x) (``operator_norm``),

    B, C, u = split(in_proj(xn));  y = C * (sum_k w_k (B u)_{t-K+1+k} + b)  (depthwise, K taps)
    h = x + out_proj(y);  hidden = h + MLP(RMSNorm(h))  (``ffn_norm``, ``feed_forward``)
    """

    kind = "short_conv"

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        self.eps = float(block.operator_norm.variance_epsilon)
        k = int(block.conv.conv_kernel_size)
        self.components = {"hidden": (self.hidden_size,), "conv": (self.hidden_size, k - 1)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        op = self.block.conv
        xn = _rms(x, self.block.operator_norm.weight, self.eps)
        b, c, u = F.linear(xn, op.in_proj.weight, op.in_proj.bias).chunk(3, dim=-1)
        window = torch.cat([state["conv"], (b * u).unsqueeze(-1)], -1)    # B x H x K
        y = (window * op.conv.weight[:, 0, :]).sum(-1)
        if op.conv.bias is not None:
            y = y + op.conv.bias
        h = x + F.linear(c * y, op.out_proj.weight, op.out_proj.bias)
        return {"hidden": feed_forward(self.block, h, "ffn_norm"), "conv": window[..., 1:]}


class Lfm2AttentionLayer(AttentionLayer):
    """An ``Lfm2DecoderLayer`` with ``self_attn``: :class:`AttentionLayer` with the
    attention's ``q_layernorm`` / ``k_layernorm`` (per head) before rotary, ``out_proj``, and
    the norms ``operator_norm`` / ``ffn_norm``."""

    out_attr = "out_proj"
    norm_attr = "operator_norm"
    ff_norm_attr = "ffn_norm"

    def _qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        attn = self.attention
        qn, kn = attn.q_layernorm, attn.k_layernorm
        return (_rms(q, qn.weight, float(qn.variance_epsilon)),
                _rms(k, kn.weight, float(kn.variance_epsilon)))


class Lfm2Family(HFFamily):
    """``Lfm2ForCausalLM`` / ``Lfm2Model``: blocks ``model.layers`` (a ``conv`` or a
    ``self_attn`` operator each), rotary ``model.rotary_emb``, head ``embedding_norm`` (the
    final norm, despite its name) + ``lm_head``."""

    causal_lm = "Lfm2ForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        return [Lfm2AttentionLayer(b, config, i, backbone.rotary_emb)
                if getattr(b, "is_attention_layer", False) else Lfm2ConvLayer(b, config, i)
                for i, b in enumerate(backbone.layers)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.embedding_norm, model.lm_head)
