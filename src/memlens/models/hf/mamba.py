"""Mamba (``MambaForCausalLM``, model_type "mamba"): one :class:`MambaLayer` per
``MambaBlock``; readouts ``hidden`` (the block output), ``ssm`` (d_inner x d_state) and
``conv`` (d_inner x (conv_kernel - 1): the last inputs of the causal convolution; HF's cache
keeps one more, unused, column). Its tangents are written out (``jvp_step``,
``TangentRule.WRITTEN``). FalconMamba (``FalconMambaForCausalLM``, model_type "falcon_mamba")
is the same block with RMS norms on dt, B and C: :class:`FalconMambaLayer`, same readouts."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import (
    HFBlockLayer,
    HFHead,
    HFState,
    _activation,
    _rms,
    _value_and_slope,
)
from memlens.models.hf.registry import HFFamily
from memlens.protocol import TangentRule


class MambaLayer(HFBlockLayer):
    """A ``MambaBlock``: h = x + out_proj(y), with (per channel d, state index n)

    u, z = in_proj(RMSNorm(x));  c = act(sum_k w_k u_{t-K+1+k} + b)  (causal conv, K taps)
    dt, B, C = split(x_proj(c));  dt = softplus(dt_proj(dt));  A = -exp(A_log)
    ssm'[d, n] = exp(A[d, n] dt[d]) ssm[d, n] + dt[d] B[n] c[d];  y = (ssm' C + D c) silu(z)
    """

    kind = "mamba"
    tangent_rule = TangentRule.WRITTEN  # jvp_step below
    # the block's mixer and pre-norm attributes (a hybrid's decoder layer names them otherwise)
    mixer_attr: ClassVar[str] = "mixer"
    norm_attr: ClassVar[str] = "norm"

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        mix = self.mixer
        self.eps = float(self.norm.variance_epsilon)
        self.act = _activation(config.hidden_act)
        self.rank, self.n = int(mix.time_step_rank), int(mix.ssm_state_size)
        di, k = int(mix.intermediate_size), int(mix.conv_kernel_size)
        self.components = {"hidden": (self.hidden_size,), "ssm": (di, self.n),
                           "conv": (di, k - 1)}

    @property
    def mixer(self) -> nn.Module:
        """The block's Mamba mixer (``block.<mixer_attr>``)."""
        return getattr(self.block, self.mixer_attr)

    @property
    def norm(self) -> nn.Module:
        """The block's RMSNorm before the mixer (``block.<norm_attr>``)."""
        return getattr(self.block, self.norm_attr)

    def step(self, x: Tensor, state: HFState) -> HFState:
        mix = self.mixer
        xz = F.linear(_rms(x, None, self.eps) * self.norm.weight, mix.in_proj.weight,
                      mix.in_proj.bias)
        u, z = xz.chunk(2, dim=-1)
        window = torch.cat([state["conv"], u.unsqueeze(-1)], -1)  # B x Di x K
        c = (window * mix.conv1d.weight[:, 0, :]).sum(-1)
        if mix.conv1d.bias is not None:
            c = c + mix.conv1d.bias
        c = self.act(c)
        dt, b, cc = self._select(*torch.split(F.linear(c, mix.x_proj.weight),
                                              [self.rank, self.n, self.n], dim=-1))
        dt = F.softplus(F.linear(dt, mix.dt_proj.weight, mix.dt_proj.bias))
        a = -torch.exp(mix.A_log)
        ssm = (torch.exp(a * dt.unsqueeze(-1)) * state["ssm"]
               + (dt.unsqueeze(-1) * b.unsqueeze(1)) * c.unsqueeze(-1))
        y = (ssm * cc.unsqueeze(1)).sum(-1) + c * mix.D
        y = y * F.silu(z)
        out = F.linear(y, mix.out_proj.weight, mix.out_proj.bias)
        return {"hidden": x + out, "ssm": ssm, "conv": window[..., 1:]}

    def _select(self, dt: Tensor, b: Tensor, cc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The selective parameters (low-rank dt, B, C) as the SSM uses them: Mamba uses
        ``x_proj``'s split as it is (FalconMamba normalises each, :class:`FalconMambaLayer`)."""
        return dt, b, cc

    def _select_jvp(self, primal: tuple[Tensor, ...], tangent: tuple[Tensor, ...]
                    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """``_select`` and its derivative (primal, tangent) for ``jvp_step``."""
        return primal, tangent

    @torch.no_grad()
    def jvp_step(self, x: Tensor, state: HFState, dx: Tensor, dstate: HFState
                 ) -> tuple[HFState, HFState]:
        """``step`` at one point (x: 1 x H, state batch 1) and its forward-mode derivative
        for N tangents at once (dx: N x H, dstate: N x ...), written out so that the primal
        is computed once and the (N x d_inner x d_state) SSM tangent is updated in place:

            dssm' = E dssm + ddt (a E ssm + B c) + (dt c) dB + (dt B) dc,   E = exp(a dt)
            dy = dssm' C + ssm' dC + D dc;   d(y silu(z)) = dy silu(z) + y silu'(z) dz

        with dc = act'(pre) (conv taps . [dconv, du]), ddt = sigmoid(.) dt_proj(d dt_r), and the
        RMSNorm derivative d(x r) = r dx - r^3 x mean(x dx). Equal to ``torch.func.jvp`` of
        ``step`` (tests/test_hf.py)."""
        mix = self.mixer
        w_norm = self.norm.weight
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        xn = x * r * w_norm
        dxn = (dx * r - x * r.pow(3) * (dx * x).mean(-1, keepdim=True)) * w_norm
        u, z = F.linear(xn, mix.in_proj.weight, mix.in_proj.bias).chunk(2, dim=-1)
        du, dz = F.linear(dxn, mix.in_proj.weight).chunk(2, dim=-1)
        taps = mix.conv1d.weight[:, 0, :]
        window = torch.cat([state["conv"], u.unsqueeze(-1)], -1)
        dwindow = torch.cat([dstate["conv"], du.unsqueeze(-1)], -1)
        pre = (window * taps).sum(-1)
        if mix.conv1d.bias is not None:
            pre = pre + mix.conv1d.bias
        c, act_slope = _value_and_slope(self.act, pre)
        dc = (dwindow * taps).sum(-1) * act_slope
        dt_r, b, cc = torch.split(F.linear(c, mix.x_proj.weight), [self.rank, self.n, self.n],
                                  dim=-1)
        ddt_r, db, dcc = torch.split(F.linear(dc, mix.x_proj.weight),
                                     [self.rank, self.n, self.n], dim=-1)
        (dt_r, b, cc), (ddt_r, db, dcc) = self._select_jvp((dt_r, b, cc), (ddt_r, db, dcc))
        dt_raw = F.linear(dt_r, mix.dt_proj.weight, mix.dt_proj.bias)
        dt = F.softplus(dt_raw)
        ddt = F.linear(ddt_r, mix.dt_proj.weight) * torch.sigmoid(dt_raw)
        a = -torch.exp(mix.A_log)
        decay = torch.exp(a * dt.unsqueeze(-1))                       # 1 x Di x n
        drive = dt.unsqueeze(-1) * b.unsqueeze(1)                     # dt B: 1 x Di x n
        ssm = decay * state["ssm"] + drive * c.unsqueeze(-1)
        dssm = dstate["ssm"] * decay
        dssm.addcmul_(ddt.unsqueeze(-1),
                      a * decay * state["ssm"] + b.unsqueeze(1) * c.unsqueeze(-1))
        dssm.addcmul_(db.unsqueeze(1), (dt * c).unsqueeze(-1))
        dssm.addcmul_(dc.unsqueeze(-1), drive)
        y = (ssm * cc.unsqueeze(1)).sum(-1) + c * mix.D
        dy = (dssm @ cc[0]) + dcc @ ssm[0].T + dc * mix.D
        gate, gate_slope = _value_and_slope(F.silu, z)
        dy2 = dy * gate + (y * gate_slope) * dz
        out = F.linear(y * gate, mix.out_proj.weight, mix.out_proj.bias)
        new = {"hidden": x + out, "ssm": ssm, "conv": window[..., 1:]}
        tangent = {"hidden": dx + F.linear(dy2, mix.out_proj.weight), "ssm": dssm,
                   "conv": dwindow[..., 1:]}
        return new, tangent


class MambaFamily(HFFamily):
    """``MambaForCausalLM`` / ``MambaModel``: blocks ``backbone.layers``, head final RMSNorm
    ``norm_f`` + ``lm_head``."""

    causal_lm = "MambaForCausalLM"
    backbone_attr = "backbone"

    def layers(self, backbone: nn.Module, config: Any) -> list[MambaLayer]:
        return [MambaLayer(b, config, i) for i, b in enumerate(backbone.layers)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.norm_f, model.lm_head)


class FalconMambaLayer(MambaLayer):
    """A ``FalconMambaBlock``: a :class:`MambaLayer` whose dt (low rank), B and C are each
    RMS-normalised (no weight; eps ``mixer_rms_eps``, read from the mixer's ``b_layernorm``)
    before the SSM uses them. Tangents written out as for Mamba, with the norm's derivative
    d(v r) = r dv - r^3 v mean(v dv)."""

    kind = "falcon_mamba"

    def _eps(self) -> float:
        return float(self.mixer.b_layernorm.eps)

    def _select(self, dt: Tensor, b: Tensor, cc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # the mixer's weightless norms, in the input's dtype (its own forward rounds them to
        # float32, which equals this in float32)
        eps = self._eps()
        return _rms(dt, None, eps), _rms(b, None, eps), _rms(cc, None, eps)

    def _select_jvp(self, primal: tuple[Tensor, ...], tangent: tuple[Tensor, ...]
                    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        eps, vals, tans = self._eps(), [], []
        for v, dv in zip(primal, tangent):
            r = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
            vals.append(v * r)
            tans.append(dv * r - v * r.pow(3) * (dv * v).mean(-1, keepdim=True))
        return tuple(vals), tuple(tans)


class FalconMambaFamily(MambaFamily):
    """``FalconMambaForCausalLM`` / ``FalconMambaModel``: as Mamba (blocks ``backbone.layers``,
    head ``norm_f`` + ``lm_head``), with :class:`FalconMambaLayer` blocks."""

    causal_lm = "FalconMambaForCausalLM"

    def layers(self, backbone: nn.Module, config: Any) -> list[MambaLayer]:
        return [FalconMambaLayer(b, config, i) for i, b in enumerate(backbone.layers)]
