"""RWKV-4 (``RwkvForCausalLM``, model_type "rwkv"): one :class:`RwkvLayer` per
``RwkvBlock``; readouts ``hidden``, ``numerator``, ``denominator``, ``max`` (the stabilised WKV
sums, attention size each), ``att_shift``, ``ffn_shift`` (the previous token's normalised input
of the time-mix and channel-mix, hidden size each). In eval mode RWKV divides some weights by
2 every ``rescale_every`` blocks (and the hidden state accordingly); the adapter puts the model
in that inference form, as its own forward in eval mode does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState
from memlens.models.hf.registry import HFFamily


class RwkvLayer(HFBlockLayer):
    """An ``RwkvBlock`` (RWKV-4): time mix with the stabilised WKV recurrence, then channel mix.

    a = LN1(x); k, v, r from a mixed with the previous a (``att_shift``) by time_mix_*;
    w = -exp(time_decay), u = time_first, (num, den, p) the state:
    q = max(p, k + u);  wkv = (e^(p-q) num + e^(k+u-q) v) / (e^(p-q) den + e^(k+u-q))
    p' = max(p + w, k);  num' = e^(p+w-p') num + e^(k-p') v;  den' = e^(p+w-p') den + e^(k-p')
    x += output(sigmoid(r) wkv);  b = LN2(x) with ``ffn_shift``;
    x += sigmoid(receptance(b~)) value(relu(key(b~))^2);  x /= 2 after every
    ``rescale_every``-th block (inference form).
    """

    kind = "rwkv"

    def __init__(self, block: nn.Module, config: Any, index: int, rescaled: Callable[[], bool]):
        super().__init__(block, config.hidden_size, index)
        att = block.attention.attention_hidden_size
        h = self.hidden_size
        self.every = int(config.rescale_every)
        self._rescaled = rescaled
        self.components = {"hidden": (h,), "numerator": (att,), "denominator": (att,),
                           "max": (att,), "att_shift": (h,), "ffn_shift": (h,)}

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        state = self._zeros(batch, device, dtype)
        state["max"] = state["max"] - 1e38  # as the model's own forward without a state
        return state

    @staticmethod
    def _ln(x: Tensor, ln: nn.LayerNorm) -> Tensor:
        """LayerNorm written out (F.layer_norm is slow on tiny CPU tensors)."""
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return (x - mu) * torch.rsqrt(var + ln.eps) * ln.weight + ln.bias

    def step(self, x: Tensor, state: HFState) -> HFState:
        blk = self.block
        if self.index == 0:
            x = self._ln(x, blk.pre_ln)
        att = blk.attention
        a, sh = self._ln(x, blk.ln1), state["att_shift"]

        def mix(p: Tensor, h: Tensor, s: Tensor) -> Tensor:
            p = p.reshape(-1)
            return h * p + s * (1 - p)

        k = F.linear(mix(att.time_mix_key, a, sh), att.key.weight)
        v = F.linear(mix(att.time_mix_value, a, sh), att.value.weight)
        r = torch.sigmoid(F.linear(mix(att.time_mix_receptance, a, sh), att.receptance.weight))
        w, u = -torch.exp(att.time_decay), att.time_first
        num, den, p = state["numerator"], state["denominator"], state["max"]
        q = torch.maximum(p, k + u)
        e1, e2 = torch.exp(p - q), torch.exp(k + u - q)
        wkv = (e1 * num + e2 * v) / (e1 * den + e2)
        p2 = torch.maximum(p + w, k)
        e1, e2 = torch.exp(p + w - p2), torch.exp(k - p2)
        num2, den2 = e1 * num + e2 * v, e1 * den + e2
        x = x + F.linear(r * wkv, att.output.weight)
        ff = blk.feed_forward
        b, sh2 = self._ln(x, blk.ln2), state["ffn_shift"]
        key = torch.square(torch.relu(F.linear(mix(ff.time_mix_key, b, sh2), ff.key.weight)))
        rr = torch.sigmoid(F.linear(mix(ff.time_mix_receptance, b, sh2), ff.receptance.weight))
        x = x + rr * F.linear(key, ff.value.weight)
        if self.every > 0 and (self.index + 1) % self.every == 0 and self._rescaled():
            x = x / 2
        return {"hidden": x, "numerator": num2, "denominator": den2, "max": p2,
                "att_shift": a, "ffn_shift": b}


class RwkvFamily(HFFamily):
    """``RwkvForCausalLM`` / ``RwkvModel``: blocks ``rwkv.blocks`` (in the rescaled inference
    form), head ``ln_out`` + ``head``."""

    causal_lm = "RwkvForCausalLM"
    backbone_attr = "rwkv"

    def layers(self, backbone: nn.Module, config: Any) -> list[RwkvLayer]:
        bb = backbone
        if bb.training == bb.layers_are_rescaled:  # the inference form, as forward() in eval
            was = bb.training
            bb.eval()
            bb._rescale_layers()
            bb.train(was)
        return [RwkvLayer(b, config, i, lambda bb=bb: bool(bb.layers_are_rescaled))
                for i, b in enumerate(bb.blocks)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.ln_out, model.head)
