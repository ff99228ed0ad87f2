"""Mamba-2 (``Mamba2ForCausalLM``, model_type "mamba2"): one :class:`Mamba2Layer` per
``Mamba2Block``; readouts ``hidden`` (the block output), ``ssm`` (heads x head_dim x d_state:
the multi-head SSM state) and ``conv`` (conv_dim x (conv_kernel - 1): the last inputs of the
causal convolution over [x, B, C]; HF's cache keeps one more, unused, column). Per head: the
unit sets ``head:H`` of the ``ssm`` readout (head H's head_dim x d_state values) and the
split ``heads`` (one set per head). Tangents: the written-out :meth:`Mamba2Layer.jvp_step`
(``method="generic"`` for ``torch.func.jvp``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.core.errors import MemlensError
from memlens.models.hf.block import (
    HFBlockLayer,
    HFHead,
    HFState,
    _activation,
    _rms,
    _value_and_slope,
)
from memlens.models.hf.registry import HFFamily
from memlens.protocol.units import UnitSet


class Mamba2Layer(HFBlockLayer):
    """A ``Mamba2Block``: h = x + out_proj(GatedRMSNorm(y, z)), with heads h, head channels p,
    state index n and groups g (B, C shared by the heads of a group):

    z, u, dt = split(in_proj(RMSNorm(x)));  c = act(causal conv of u, K taps) = [xs, B, C]
    dt = clamp(softplus(dt + dt_bias), time_step_limit);  A = -exp(A_log)  (one per head)
    ssm'[h, p, n] = exp(A[h] dt[h]) ssm[h, p, n] + dt[h] B[g(h), n] xs[h, p]
    y[h, p] = sum_n ssm'[h, p, n] C[g(h), n] + D[h] xs[h, p]
    GatedRMSNorm(y, z) = w * RMS_group(y silu(z))  (RMS over each of n_groups slices)
    """

    kind = "mamba2"
    unit_families: ClassVar[tuple[str, ...]] = ("head", "heads")
    unit_owner: ClassVar[str] = "a Mamba-2 block"
    # the block's mixer and pre-norm attributes (a hybrid's decoder layer names them otherwise)
    mixer_attr: ClassVar[str] = "mixer"
    norm_attr: ClassVar[str] = "norm"

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        mix = self.mixer
        self.eps = float(self.norm.variance_epsilon)
        self.act = _activation(config.hidden_act)
        self.heads, self.head_dim = int(mix.num_heads), int(mix.head_dim)
        self.groups, self.n = int(mix.n_groups), int(mix.ssm_state_size)
        self.inner, self.conv_dim = int(mix.intermediate_size), int(mix.conv_dim)
        k = int(mix.conv_kernel_size)
        self.components = {"hidden": (self.hidden_size,),
                           "ssm": (self.heads, self.head_dim, self.n),
                           "conv": (self.conv_dim, k - 1)}

    @property
    def mixer(self) -> nn.Module:
        """The block's Mamba-2 mixer (``block.<mixer_attr>``)."""
        return getattr(self.block, self.mixer_attr)

    @property
    def norm(self) -> nn.Module:
        """The block's RMSNorm before the mixer (``block.<norm_attr>``)."""
        return getattr(self.block, self.norm_attr)

    def _per_head(self, v: Tensor) -> Tensor:
        """B x (groups * n) -> B x heads x n (each group's values for its heads)."""
        v = v.view(v.shape[0], self.groups, self.n)
        return v.repeat_interleave(self.heads // self.groups, dim=1)

    def _gated_norm(self, y: Tensor, z: Tensor) -> Tensor:
        """The mixer's ``MambaRMSNormGated`` (weight, eps, group size read from it) in the
        input's dtype (its own forward rounds to float32, which equals this in float32)."""
        norm = self.mixer.norm
        g = y * F.silu(z)
        size = int(norm.group_size)
        g = _rms(g.view(*g.shape[:-1], g.shape[-1] // size, size), None,
                 float(norm.variance_epsilon))
        return norm.weight * g.view(*y.shape)

    def step(self, x: Tensor, state: HFState) -> HFState:
        out, ssm, conv = self.mix(_rms(x, self.norm.weight, self.eps), state)
        return {"hidden": x + out, "ssm": ssm, "conv": conv}

    def _project(self, xn: Tensor) -> Tensor:
        """The mixer's ``in_proj`` of the normalised input (a family with multipliers on the
        projection scales here)."""
        return F.linear(xn, self.mixer.in_proj.weight, self.mixer.in_proj.bias)

    def mix(self, xn: Tensor, state: HFState) -> tuple[Tensor, Tensor, Tensor]:
        """The mixer alone on the normalised input xn (B x H): (out_proj output, ssm', conv')
        (class docstring; a hybrid block adds the residual and its other sub-blocks)."""
        mix = self.mixer
        z, u, dt = self._project(xn).split([self.inner, self.conv_dim, self.heads], dim=-1)
        window = torch.cat([state["conv"], u.unsqueeze(-1)], -1)  # B x conv_dim x K
        c = (window * mix.conv1d.weight[:, 0, :]).sum(-1)
        if mix.conv1d.bias is not None:
            c = c + mix.conv1d.bias
        c = self.act(c)
        xs, b, cc = c.split([self.inner, self.groups * self.n, self.groups * self.n], dim=-1)
        xs = xs.view(-1, self.heads, self.head_dim)
        lo, hi = mix.time_step_limit
        dt = torch.clamp(F.softplus(dt + mix.dt_bias), min=lo, max=hi)      # B x heads
        decay = torch.exp(-torch.exp(mix.A_log) * dt)[..., None, None]
        drive = (dt[..., None] * self._per_head(b))[:, :, None, :]          # B x h x 1 x n
        ssm = decay * state["ssm"] + drive * xs.unsqueeze(-1)
        y = (ssm * self._per_head(cc)[:, :, None, :]).sum(-1) + xs * mix.D[:, None]
        y = self._gated_norm(y.reshape(-1, self.inner), z)
        out = F.linear(y, mix.out_proj.weight, mix.out_proj.bias)
        return out, ssm, window[..., 1:]

    # -- the written-out derivative (TangentRule.WRITTEN) ------------------------------------
    def _gated_norm_jvp(self, y: Tensor, dy: Tensor, z: Tensor, dz: Tensor
                        ) -> tuple[Tensor, Tensor]:
        """:meth:`_gated_norm` and its derivative: g = y silu(z), dg = dy silu(z) + y silu'(z)
        dz, then per group d(g r) = r dg - r^3 g mean(g dg), times the weight."""
        norm = self.mixer.norm
        gate, slope = _value_and_slope(F.silu, z)
        g, dg = y * gate, dy * gate + y * slope * dz
        size, eps = int(norm.group_size), float(norm.variance_epsilon)
        gv, dgv = (t.view(*t.shape[:-1], t.shape[-1] // size, size) for t in (g, dg))
        r = torch.rsqrt(gv.pow(2).mean(-1, keepdim=True) + eps)
        out = (gv * r).view(*y.shape)
        dout = (dgv * r - gv * r.pow(3) * (gv * dgv).mean(-1, keepdim=True)).view(*dy.shape)
        return norm.weight * out, norm.weight * dout

    def jvp_step(self, x: Tensor, state: HFState, dx: Tensor, dstate: HFState
                 ) -> tuple[HFState, HFState]:
        """``step`` at one point (x: 1 x H, state batch 1) and its forward-mode derivative for
        N tangents at once (dx: N x H, dstate: N x ...), the primal computed once:

            dssm' = E dssm + ddt (a E ssm + B xs) + dt (dB xs + B dxs),  E = exp(a dt)
            dy = sum_n (dssm' C + ssm' dC) + D dxs;  ddt = sigmoid(dt_raw) d dt_raw inside the
            clamp (0 where it clips);  dc = act'(pre) (conv taps . [dconv, du]);

        the RMSNorm and the gated group norm written out. Equal to ``torch.func.jvp`` of
        ``step`` (tests/test_written_tangents.py)."""
        mix = self.mixer
        w_norm = self.norm.weight
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        xn = x * r * w_norm
        dxn = (dx * r - x * r.pow(3) * (dx * x).mean(-1, keepdim=True)) * w_norm
        sizes = [self.inner, self.conv_dim, self.heads]
        z, u, dt_in = F.linear(xn, mix.in_proj.weight, mix.in_proj.bias).split(sizes, dim=-1)
        dz, du, ddt_in = F.linear(dxn, mix.in_proj.weight).split(sizes, dim=-1)
        taps = mix.conv1d.weight[:, 0, :]
        window = torch.cat([state["conv"], u.unsqueeze(-1)], -1)
        dwindow = torch.cat([dstate["conv"], du.unsqueeze(-1)], -1)
        pre = (window * taps).sum(-1)
        if mix.conv1d.bias is not None:
            pre = pre + mix.conv1d.bias
        c, act_slope = _value_and_slope(self.act, pre)
        dc = (dwindow * taps).sum(-1) * act_slope
        cuts = [self.inner, self.groups * self.n, self.groups * self.n]
        xs, b, cc = c.split(cuts, dim=-1)
        dxs, db, dcc = dc.split(cuts, dim=-1)
        xs, dxs = xs.view(-1, self.heads, self.head_dim), dxs.view(-1, self.heads, self.head_dim)
        b, db, cc, dcc = (self._per_head(t) for t in (b, db, cc, dcc))   # . x heads x n
        lo, hi = mix.time_step_limit
        raw = dt_in + mix.dt_bias
        sp = F.softplus(raw)
        dt = torch.clamp(sp, min=lo, max=hi)
        ddt = ddt_in * torch.sigmoid(raw) * ((sp >= lo) & (sp <= hi)).to(sp.dtype)
        a = -torch.exp(mix.A_log)
        decay = torch.exp(a * dt)                                           # 1 x heads
        drive = dt[..., None] * b                                          # 1 x heads x n
        ssm = decay[..., None, None] * state["ssm"] + drive[:, :, None, :] * xs.unsqueeze(-1)
        dssm = dstate["ssm"] * decay[..., None, None]
        dssm.add_((ddt * a * decay)[..., None, None] * state["ssm"])
        dssm.add_((ddt[..., None] * b)[:, :, None, :] * xs.unsqueeze(-1))
        dssm.add_((dt[..., None] * db)[:, :, None, :] * xs.unsqueeze(-1))
        dssm.add_(drive[:, :, None, :] * dxs.unsqueeze(-1))
        y = (ssm * cc[:, :, None, :]).sum(-1) + xs * mix.D[:, None]
        dy = ((dssm * cc[:, :, None, :]).sum(-1) + (ssm * dcc[:, :, None, :]).sum(-1)
              + dxs * mix.D[:, None])
        yn, dyn = self._gated_norm_jvp(y.reshape(-1, self.inner), dy.reshape(-1, self.inner),
                                       z, dz)
        out = F.linear(yn, mix.out_proj.weight, mix.out_proj.bias)
        new = {"hidden": x + out, "ssm": ssm, "conv": window[..., 1:]}
        tangent = {"hidden": dx + F.linear(dyn, mix.out_proj.weight), "ssm": dssm,
                   "conv": dwindow[..., 1:]}
        return new, tangent

    # -- per-head unit sets of the ssm readout -------------------------------------------
    def unit_sets(self, readout: str | None = None) -> Mapping[str, str]:
        sets = dict(super().unit_sets(readout))
        if readout == "ssm":
            sets["head:H"] = (f"the {self.head_dim * self.n} values of head H's SSM state "
                              f"(H in 0..{self.heads - 1})")
        return sets

    def units(self, spec: str, readout: str | None = None) -> UnitSet:
        """``"head:H"`` on the ``ssm`` readout: head H's head_dim x d_state values. Other
        specs: :meth:`RecurrentLayer.units`."""
        if not spec.startswith("head:"):
            return super().units(spec, readout)
        if readout != "ssm":
            raise MemlensError(f"units {spec!r}: per-head unit sets are offered for the ssm "
                               f"readout of a Mamba-2 block, not {readout or 'hidden'!r}")
        try:
            h = int(spec.split(":", 1)[1])
        except ValueError:
            raise MemlensError(f"bad unit spec {spec!r}: expected head:H with an integer H"
                               ) from None
        if not 0 <= h < self.heads:
            raise MemlensError(f"head {h} out of range: the block has {self.heads} heads "
                               f"(valid 0..{self.heads - 1})")
        size = self.head_dim * self.n
        return UnitSet(spec, "ssm", size, index=tuple(range(h * size, (h + 1) * size)))

    def unit_splits(self) -> Mapping[str, list[str]]:
        """``"heads"``: one unit set per head (of the ``ssm`` readout)."""
        return {"heads": [f"head:{h}" for h in range(self.heads)]}


class Mamba2Family(HFFamily):
    """``Mamba2ForCausalLM`` / ``Mamba2Model``: blocks ``backbone.layers``, head final RMSNorm
    ``norm_f`` + ``lm_head``."""

    causal_lm = "Mamba2ForCausalLM"
    backbone_attr = "backbone"

    def layers(self, backbone: nn.Module, config: Any) -> list[Mamba2Layer]:
        return [Mamba2Layer(b, config, i) for i, b in enumerate(backbone.layers)]

    def head(self, model: nn.Module, backbone: nn.Module) -> HFHead:
        return HFHead(backbone.norm_f, model.lm_head)
