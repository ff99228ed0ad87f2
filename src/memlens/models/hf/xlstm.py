"""xLSTM (``xLSTMForCausalLM``, model_type "xlstm", xLSTM-7B style mLSTM blocks): one
:class:`XLSTMLayer` per ``xLSTMBlock``; readouts ``hidden``, ``C`` (heads x d_qk x d_v matrix
memory), ``n`` (heads x d_qk normaliser), ``m`` (heads: the stabiliser). The head applies the
model's logit soft cap."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _rms, _soft_cap
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


class XLSTMFamily(HFFamily):
    """``xLSTMForCausalLM`` / ``xLSTMModel``: blocks ``backbone.blocks``, head ``out_norm``
    + ``lm_head`` with ``output_logit_soft_cap``."""

    causal_lm = "xLSTMForCausalLM"
    backbone_attr = "backbone"

    def layers(self, backbone: nn.Module, config: Any) -> list[XLSTMLayer]:
        return [XLSTMLayer(b, config, i) for i, b in enumerate(backbone.blocks)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.out_norm, model.lm_head, model.config.output_logit_soft_cap)
