"""xLSTM (``xLSTMForCausalLM``, model_type "xlstm", xLSTM-7B style mLSTM blocks): one
:class:`XLSTMLayer` per ``xLSTMBlock``; readouts ``hidden``, ``C`` (heads x d_qk x d_v matrix
memory), ``n`` (heads x d_qk normaliser), ``m`` (heads: the stabiliser). The head applies the
model's logit soft cap. Tangents: the written-out :meth:`XLSTMLayer.jvp_step`
(``TangentRule.WRITTEN``; ``method="generic"`` for ``torch.func.jvp``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import (
    HFBlockLayer,
    HFHead,
    HFState,
    _rms,
    _soft_cap,
    _value_and_slope,
)
from memlens.models.hf.registry import HFFamily


class XLSTMLayer(HFBlockLayer):
    """An ``xLSTMBlock`` (xLSTM-7B style mLSTM block): x += out_proj(sigmoid(o) MHLN(h)), then
    x += FFN(RMSNorm(x)), with per head (stabilised mLSTM recurrence, q scaled by d_qk^-1/2):

    i, f = softcap(preacts);  m' = max(logsigmoid(f) + m, i)
    C' = e^(logsigmoid(f)+m-m') C + e^(i-m') k v^T;  n' = e^(logsigmoid(f)+m-m') n + e^(i-m') k
    h = q C' / (max(|q . n'|, e^(-m')) + eps)
    """

    kind = "xlstm"

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        self.cfg = config
        self.heads = int(config.num_heads)
        lay = block.mlstm_layer  # its sizes (the config's qk_head_dim rounds up to 64)
        self.dqk, self.dv = lay.qk_dim // self.heads, lay.v_dim // self.heads
        self.components = {"hidden": (self.hidden_size,),
                           "C": (self.heads, self.dqk, self.dv), "n": (self.heads, self.dqk),
                           "m": (self.heads,)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        cfg, blk = self.cfg, self.block
        lay = blk.mlstm_layer
        nm = blk.norm_mlstm
        xm = _rms(x, nm.weight, nm.eps, nm.bias)
        cap = cfg.gate_soft_cap
        if cfg.weight_mode == "single":
            q, k, v = lay.q(xm), lay.k(xm), lay.v(xm)
            o = lay.ogate_preact(xm)
            i = _soft_cap(lay.igate_preact(xm), cap)
            f = _soft_cap(lay.fgate_preact(xm), cap)
        else:
            q, k, v, o = torch.tensor_split(
                lay.qkv_opreact(xm), (lay.qk_dim, 2 * lay.qk_dim, 2 * lay.qk_dim + lay.v_dim),
                dim=-1)
            i, f = torch.tensor_split(_soft_cap(lay.ifgate_preact(xm), cap), (self.heads,),
                                      dim=-1)
        bsz, nh = x.shape[0], self.heads
        q = q.reshape(bsz, nh, self.dqk)
        k = k.reshape(bsz, nh, self.dqk)
        v = v.reshape(bsz, nh, self.dv)
        m = state["m"]
        flog = -F.softplus(-f)  # log sigmoid (F.logsigmoid is slow on tiny CPU tensors)
        m2 = torch.maximum(flog + m, i)
        fa = torch.exp(flog + m - m2).unsqueeze(-1)
        ia = torch.exp(i - m2).unsqueeze(-1)
        C = fa.unsqueeze(-1) * state["C"] + ia.unsqueeze(-1) * (k.unsqueeze(-1)
                                                                 * v.unsqueeze(-2))
        n = fa * state["n"] + ia * k
        qs = q * self.dqk ** -0.5
        num = (qs.unsqueeze(-1) * C).sum(-2)  # B x nh x dv
        qn = (qs * n).sum(-1, keepdim=True)
        h = num / (torch.maximum(qn.abs(), torch.exp(-m2).unsqueeze(-1)) + cfg.eps)
        mh = lay.multihead_norm
        mu = h.mean(-1, keepdim=True)
        var = (h - mu).pow(2).mean(-1, keepdim=True)
        h = ((h - mu) * torch.rsqrt(var + mh.eps)).reshape(bsz, nh * self.dv)  # per-head LN
        if mh.weight is not None:
            h = h * mh.weight
        if mh.bias is not None:
            h = h + mh.bias
        x = x + lay.out_proj(torch.sigmoid(o) * h)
        nf = blk.norm_ffn
        x = x + blk.ffn(_rms(x, nf.weight, nf.eps, nf.bias))
        return {"hidden": x, "C": C, "n": n, "m": m2}


    # -- the written-out derivative (TangentRule.WRITTEN) ------------------------------------
    @staticmethod
    def _rms_jvp(x: Tensor, dx: Tensor, norm: nn.Module) -> tuple[Tensor, Tensor]:
        """RMSNorm (weight, bias) and its derivative d(x r) = r dx - r^3 x mean(x dx)."""
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
        y, dy = x * r, dx * r - x * r.pow(3) * (dx * x).mean(-1, keepdim=True)
        if norm.weight is not None:
            y, dy = y * norm.weight, dy * norm.weight
        if norm.bias is not None:
            y = y + norm.bias
        return y, dy

    def _projections(self, xm: Tensor, dxm: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(value, tangent) of q, k, v, o and the soft-capped i, f pre-activations."""
        cfg, lay = self.cfg, self.block.mlstm_layer

        def lin(mod: nn.Module) -> tuple[Tensor, Tensor]:
            return mod(xm), F.linear(dxm, mod.weight)

        def cap(z: Tensor, dz: Tensor) -> tuple[Tensor, Tensor]:
            if cfg.gate_soft_cap is None:
                return z, dz
            t = torch.tanh(z / cfg.gate_soft_cap)
            return cfg.gate_soft_cap * t, (1 - t * t) * dz

        if cfg.weight_mode == "single":
            return [lin(lay.q), lin(lay.k), lin(lay.v), lin(lay.ogate_preact),
                    cap(*lin(lay.igate_preact)), cap(*lin(lay.fgate_preact))]
        cuts = (lay.qk_dim, 2 * lay.qk_dim, 2 * lay.qk_dim + lay.v_dim)
        qkvo = zip(*(torch.tensor_split(t, cuts, dim=-1) for t in lin(lay.qkv_opreact)))
        gi, gf = zip(*(torch.tensor_split(t, (self.heads,), dim=-1)
                       for t in cap(*lin(lay.ifgate_preact))))
        return [*qkvo, gi, gf]

    def _ffn_jvp(self, y: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
        """The block's gated FFN, W_down (silu(W_g y) * W_u y), and its derivative."""
        ffn = self.block.ffn
        if self.cfg.weight_mode == "single":
            g, u = ffn.proj_up_gate(y), ffn.proj_up(y)
            dg, du = F.linear(dy, ffn.proj_up_gate.weight), F.linear(dy, ffn.proj_up.weight)
        else:
            cut = (ffn.up_proj_dim,)
            g, u = torch.tensor_split(ffn.proj_up_gate_z(y), cut, dim=-1)
            dg, du = torch.tensor_split(F.linear(dy, ffn.proj_up_gate_z.weight), cut, dim=-1)
        a, slope = _value_and_slope(F.silu, g)
        return ffn.proj_down(a * u), F.linear(slope * dg * u + a * du, ffn.proj_down.weight)

    def jvp_step(self, x: Tensor, state: HFState, dx: Tensor, dstate: HFState
                 ) -> tuple[HFState, HFState]:
        """``step`` at one point (x: 1 x H, state batch 1) and its forward-mode derivative for
        N tangents at once (dx: N x H, dstate: N x ...), the primal computed once; per head,
        with fa = e^(logsigmoid(f)+m-m'), ia = e^(i-m'):

            dm' = d(logsigmoid(f)) + dm or di by the side of the max (half each on a tie),
            dfa = fa (sigmoid(-f) df + dm - dm'),  dia = ia (di - dm'),
            dC' = dfa C + fa dC + dia k v^T + ia (dk v^T + k dv^T)   (dn' likewise),
            dh = (d(q C') - h dden) / den,  den = max(|q . n'|, e^(-m')) + eps,

        then the per-head LayerNorm, the output gate and the FFN written out. Equal to
        ``torch.func.jvp`` of ``step`` (tests/test_written_tangents.py)."""
        cfg, blk = self.cfg, self.block
        lay, nh, dqk, dv = blk.mlstm_layer, self.heads, self.dqk, self.dv
        xm, dxm = self._rms_jvp(x, dx, blk.norm_mlstm)
        (q, dq), (k, dk), (v, dvv), (o, do), (i, di), (f, df) = self._projections(xm, dxm)
        q, dq = q.reshape(-1, nh, dqk) * dqk ** -0.5, dq.reshape(-1, nh, dqk) * dqk ** -0.5
        k, dk = k.reshape(-1, nh, dqk), dk.reshape(-1, nh, dqk)
        v, dvv = v.reshape(-1, nh, dv), dvv.reshape(-1, nh, dv)
        m, dm = state["m"], dstate["m"]
        flog, dflog = -F.softplus(-f), torch.sigmoid(-f) * df
        m2 = torch.maximum(flog + m, i)
        side = torch.where(flog + m == i, torch.full_like(i, 0.5), (flog + m > i).to(i.dtype))
        dm2 = di + side * (dflog + dm - di)
        fa, ia = torch.exp(flog + m - m2), torch.exp(i - m2)
        dfa, dia = fa * (dflog + dm - dm2), ia * (di - dm2)
        kv = k.unsqueeze(-1) * v.unsqueeze(-2)
        C = fa[..., None, None] * state["C"] + ia[..., None, None] * kv
        dC = dstate["C"] * fa[..., None, None]
        dC.add_(dfa[..., None, None] * state["C"] + dia[..., None, None] * kv)
        dC.add_(ia[..., None, None] * (dk.unsqueeze(-1) * v.unsqueeze(-2)
                                        + k.unsqueeze(-1) * dvv.unsqueeze(-2)))
        n = fa[..., None] * state["n"] + ia[..., None] * k
        dn = (dfa[..., None] * state["n"] + fa[..., None] * dstate["n"] + dia[..., None] * k
              + ia[..., None] * dk)
        num = (q.unsqueeze(-1) * C).sum(-2)
        dnum = (dq.unsqueeze(-1) * C).sum(-2) + torch.einsum("bhk,nhkv->nhv", q, dC)
        qn = (q * n).sum(-1, keepdim=True)
        dqn = (dq * n).sum(-1, keepdim=True) + (q * dn).sum(-1, keepdim=True)
        floor, dfloor = torch.exp(-m2).unsqueeze(-1), -torch.exp(-m2).unsqueeze(-1) * \
            dm2.unsqueeze(-1)
        a = qn.abs()
        side = torch.where(a == floor, torch.full_like(a, 0.5), (a > floor).to(a.dtype))
        dden = dfloor + side * (torch.sign(qn) * dqn - dfloor)
        den = torch.maximum(a, floor) + cfg.eps
        h = num / den
        dh = (dnum - h * dden) / den
        mh = lay.multihead_norm
        mu = h.mean(-1, keepdim=True)
        rs = torch.rsqrt((h - mu).pow(2).mean(-1, keepdim=True) + mh.eps)
        hn = (h - mu) * rs
        dhn = (dh - dh.mean(-1, keepdim=True) - hn * (hn * dh).mean(-1, keepdim=True)) * rs
        hn, dhn = hn.reshape(-1, nh * dv), dhn.reshape(-1, nh * dv)
        if mh.weight is not None:
            hn, dhn = hn * mh.weight, dhn * mh.weight
        if mh.bias is not None:
            hn = hn + mh.bias
        so = torch.sigmoid(o)
        x = x + lay.out_proj(so * hn)
        dx = dx + F.linear(so * (1 - so) * do * hn + so * dhn, lay.out_proj.weight)
        y, dy = self._rms_jvp(x, dx, blk.norm_ffn)
        out, dout = self._ffn_jvp(y, dy)
        return ({"hidden": x + out, "C": C, "n": n, "m": m2},
                {"hidden": dx + dout, "C": dC, "n": dn, "m": dm2})


class XLSTMFamily(HFFamily):
    """``xLSTMForCausalLM`` / ``xLSTMModel``: blocks ``backbone.blocks``, head ``out_norm``
    + ``lm_head`` with ``output_logit_soft_cap``."""

    causal_lm = "xLSTMForCausalLM"
    backbone_attr = "backbone"

    def layers(self, backbone: nn.Module, config: Any) -> list[XLSTMLayer]:
        return [XLSTMLayer(b, config, i) for i, b in enumerate(backbone.blocks)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.out_norm, model.lm_head, model.config.output_logit_soft_cap)
