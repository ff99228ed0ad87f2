"""RWKV-4 (``RwkvForCausalLM``, model_type "rwkv"): one :class:`RwkvLayer` per
``RwkvBlock``; readouts ``hidden``, ``numerator``, ``denominator``, ``max`` (the stabilised WKV
sums, attention size each), ``att_shift``, ``ffn_shift`` (the previous token's normalised input
of the time-mix and channel-mix, hidden size each). In eval mode RWKV divides some weights by
2 every ``rescale_every`` blocks (and the hidden state accordingly); the adapter puts the model
in that inference form, as its own forward in eval mode does. Tangents: the written-out
:meth:`RwkvLayer.jvp_step` (``TangentRule.WRITTEN``; ``method="generic"`` for
``torch.func.jvp``)."""

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

    def own_output(self, output: Tensor) -> Tensor:
        """The block's output as the next block sees it: halved after every
        ``rescale_every``-th block in the inference form (RwkvModel.forward)."""
        if self.every > 0 and (self.index + 1) % self.every == 0 and self._rescaled():
            return output / 2
        return output


    # -- the written-out derivative (TangentRule.WRITTEN) ------------------------------------
    @staticmethod
    def _ln_jvp(x: Tensor, dx: Tensor, ln: nn.LayerNorm) -> tuple[Tensor, Tensor]:
        """LayerNorm and its derivative: with xh = (x - mu) / sigma,
        d LN = w (dx - mean(dx) - xh mean(xh dx)) / sigma."""
        mu = x.mean(-1, keepdim=True)
        rs = torch.rsqrt((x - mu).pow(2).mean(-1, keepdim=True) + ln.eps)
        xh = (x - mu) * rs
        d = dx - dx.mean(-1, keepdim=True) - xh * (xh * dx).mean(-1, keepdim=True)
        return xh * ln.weight + ln.bias, d * rs * ln.weight

    def jvp_step(self, x: Tensor, state: HFState, dx: Tensor, dstate: HFState
                 ) -> tuple[HFState, HFState]:
        """``step`` at one point (x: 1 x H, state batch 1) and its forward-mode derivative for
        N tangents at once (dx: N x H, dstate: N x ...), the primal computed once:

            dwkv = (dN - wkv dD) / D,  D = e1 den + e2,  with e1 = e^(p-q), e2 = e^(k+u-q),
            dN = e1 (dp num + dnum) + e2 (dk v + dv),  dD = e1 (dp den + dden) + e2 dk
            (q cancels in wkv);  dp' = dp or dk by which side of max(p + w, k) wins (half
            each on a tie, as torch.maximum), dnum' = e1' ((dp - dp') num + dnum)
            + e2' ((dk - dp') v + dv), dden' likewise with den and 1;
            mixes are linear; d sigmoid(z) = s (1 - s) dz; d relu(z)^2 = 2 relu(z) dz.

        Equal to ``torch.func.jvp`` of ``step`` (tests/test_hf_families.py)."""
        blk, att, ff = self.block, self.block.attention, self.block.feed_forward
        if self.index == 0:
            x, dx = self._ln_jvp(x, dx, blk.pre_ln)
        a, da = self._ln_jvp(x, dx, blk.ln1)
        sh, dsh = state["att_shift"], dstate["att_shift"]

        def mix(p: Tensor, h: Tensor, s: Tensor) -> Tensor:
            p = p.reshape(-1)
            return h * p + s * (1 - p)

        def lin(p: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
            return F.linear(mix(p, a, sh), w), F.linear(mix(p, da, dsh), w)

        k, dk = lin(att.time_mix_key, att.key.weight)
        v, dv = lin(att.time_mix_value, att.value.weight)
        zr, dzr = lin(att.time_mix_receptance, att.receptance.weight)
        r = torch.sigmoid(zr)
        dr = r * (1 - r) * dzr
        w, u = -torch.exp(att.time_decay), att.time_first
        num, den, p = state["numerator"], state["denominator"], state["max"]
        dnum, dden, dp = dstate["numerator"], dstate["denominator"], dstate["max"]
        q = torch.maximum(p, k + u)
        e1, e2 = torch.exp(p - q), torch.exp(k + u - q)
        big_d = e1 * den + e2
        wkv = (e1 * num + e2 * v) / big_d
        dn = e1 * (dp * num + dnum) + e2 * (dk * v + dv)
        dd = e1 * (dp * den + dden) + e2 * dk
        dwkv = (dn - wkv * dd) / big_d
        pw = p + w
        p2 = torch.maximum(pw, k)
        side = torch.where(pw == k, torch.full_like(k, 0.5), (pw > k).to(k.dtype))
        dp2 = dk + side * (dp - dk)
        e1, e2 = torch.exp(pw - p2), torch.exp(k - p2)
        num2, den2 = e1 * num + e2 * v, e1 * den + e2
        dnum2 = e1 * ((dp - dp2) * num + dnum) + e2 * ((dk - dp2) * v + dv)
        dden2 = e1 * ((dp - dp2) * den + dden) + e2 * (dk - dp2)
        x = x + F.linear(r * wkv, att.output.weight)
        dx = dx + F.linear(dr * wkv + r * dwkv, att.output.weight)
        b, db = self._ln_jvp(x, dx, blk.ln2)
        sh2, dsh2 = state["ffn_shift"], dstate["ffn_shift"]
        zk = F.linear(mix(ff.time_mix_key, b, sh2), ff.key.weight)
        dzk = F.linear(mix(ff.time_mix_key, db, dsh2), ff.key.weight)
        rk = torch.relu(zk)
        key, dkey = rk * rk, 2 * rk * dzk
        zz = F.linear(mix(ff.time_mix_receptance, b, sh2), ff.receptance.weight)
        dzz = F.linear(mix(ff.time_mix_receptance, db, dsh2), ff.receptance.weight)
        rr = torch.sigmoid(zz)
        val = F.linear(key, ff.value.weight)
        x = x + rr * val
        dx = dx + rr * (1 - rr) * dzz * val + rr * F.linear(dkey, ff.value.weight)
        if self.every > 0 and (self.index + 1) % self.every == 0 and self._rescaled():
            x, dx = x / 2, dx / 2
        new = {"hidden": x, "numerator": num2, "denominator": den2, "max": p2,
               "att_shift": a, "ffn_shift": b}
        tangent = {"hidden": dx, "numerator": dnum2, "denominator": dden2, "max": dp2,
                   "att_shift": da, "ffn_shift": db}
        return new, tangent


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
