"""Kimi Linear (``KimiLinearForCausalLM`` / ``KimiLinearModel``, model_type "kimi_linear"): a
hybrid of Kimi Delta Attention blocks (a gated DeltaNet whose decay is per key channel, not per
head) and multi-head latent attention (MLA) blocks without positional encoding, each decoder
layer followed by a dense MLP or a mixture of experts with a shared expert.

Kimi Delta Attention blocks (:class:`KimiDeltaLayer`): readouts ``hidden`` (the decoder layer's
output), ``memory`` (heads x d_k x d_v: the delta-rule matrix state; unit sets ``head:H``, split
``heads``, as Qwen3-Next's) and ``conv`` (3 heads d x (conv_kernel - 1): the last inputs of the
causal convolution over [q, k, v]). MLA blocks (:class:`KimiMLALayer`): readout ``hidden``
only; their state is the expanded key/value cache of the positions since the last reset.
Tangents: the generic path. Analysed in ``window:N`` or ``sentence`` only.

Every value comes from the model's own parameters and modules: the w RMSNorms (weight, eps),
q/k/v_proj, the convolution taps, the forget gate's f_a/f_b projections, dt_bias and A_log,
b_proj, the output gate g_a/g_b, the gated norm o_norm, o_proj; MLA's q_proj (or q_a_proj,
q_a_layernorm, q_b_proj), kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, scaling, o_proj; the
MLP or experts module itself. The model's own forward runs the delta rule, the forget gate,
the gated norm and the RMSNorms in float32 whatever its dtype; the steps compute in the dtype
of their input.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFHead, HFState, _activation, _rms
from memlens.models.hf.hybrid import AttentionLayer, feed_forward
from memlens.models.hf.qwen3_next import GatedDeltaNetLayer
from memlens.models.hf.registry import HFFamily


def _norm(x: Tensor, norm: nn.Module) -> Tensor:
    """Kimi's RMSNorm: x / sqrt(mean(x^2) + eps) * w (in the dtype of x)."""
    return _rms(x, norm.weight, float(norm.variance_epsilon))


def _l2(x: Tensor) -> Tensor:
    """x / sqrt(sum(x^2) + 1e-6) over the last dimension (the model's ``l2norm``)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)


class KimiDeltaLayer(GatedDeltaNetLayer):
    """A ``KimiLinearDecoderLayer`` with ``KimiLinearDeltaAttention``; with xn = RMSNorm(x), per
    head h (q, k, v heads alike, d_k = d_v = d):

    [q, k, v] = act(causal conv of [q_proj, k_proj, v_proj](xn), K taps);
    q = l2norm(q) / sqrt(d), k = l2norm(k);  beta = sigmoid(b_proj xn);
    g = -exp(A_log_h) softplus(f_b(f_a(xn)) + dt_bias)  (one decay per key channel)
    S = diag(e^g) S;  S' = S + k (beta (v - S^T k))^T;  o = S'^T q
    h = x + o_proj(w RMS(o) sigmoid(g_b(g_a(xn))));  hidden = h + FF(RMSNorm(h))

    Readouts ``hidden``, ``memory`` (heads x d x d; ``head:H``), ``conv``.
    """

    kind = "kimi_delta"
    unit_owner = "a Kimi Delta Attention block"

    def __init__(self, block: nn.Module, config: Any, index: int):
        # not GatedDeltaNetLayer.__init__: the module names its sizes otherwise
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        lin = block.self_attn
        self.act = _activation(lin.activation)
        self.nk = self.nv = int(lin.num_heads)
        self.dk = self.dv = int(lin.head_dim)
        self.key_dim = self.value_dim = int(lin.qkv_dim)
        self.conv_dim, k = int(lin.conv_dim), int(lin.conv_kernel_size)
        self.components = {"hidden": (self.hidden_size,),
                           "memory": (self.nv, self.dk, self.dv),
                           "conv": (self.conv_dim, k - 1)}

    def _decay(self, xn: Tensor) -> Tensor:
        """g (B x heads x d_k, <= 0): the forget gate's log decay per key channel."""
        fg, bsz = self.block.self_attn.forget_gate, xn.shape[0]
        raw = fg.f_b_proj(fg.f_a_proj(xn)) + fg.dt_bias
        rate = torch.exp(fg.A_log.reshape(self.nv, 1))
        return -rate * F.softplus(raw.view(bsz, self.nv, self.dk))

    def step(self, x: Tensor, state: HFState) -> HFState:
        blk, lin, bsz = self.block, self.block.self_attn, x.shape[0]
        xn = _norm(x, blk.input_layernorm)
        mixed = torch.cat([lin.q_proj(xn), lin.k_proj(xn), lin.v_proj(xn)], -1)
        window = torch.cat([state["conv"], mixed.unsqueeze(-1)], -1)
        c = (window * lin.conv1d.weight[:, 0, :]).sum(-1)
        if lin.conv1d.bias is not None:
            c = c + lin.conv1d.bias
        q, k, v = self.act(c).view(bsz, 3, self.nv, self.dk).unbind(1)
        q, k = _l2(q) * self.dk ** -0.5, _l2(k)
        beta = torch.sigmoid(lin.b_proj(xn))                                # B x heads
        mem = state["memory"] * torch.exp(self._decay(xn)).unsqueeze(-1)     # B x h x dk x dv
        delta = (v - (mem * k.unsqueeze(-1)).sum(-2)) * beta.unsqueeze(-1)
        mem = mem + k.unsqueeze(-1) * delta.unsqueeze(-2)
        o = (mem * q.unsqueeze(-1)).sum(-2)                                 # B x h x dv
        gate = lin.g_b_proj(lin.g_a_proj(xn)).view(bsz, self.nv, self.dv)
        o = _norm(o, lin.o_norm) * torch.sigmoid(gate)
        h = x + lin.o_proj(o.reshape(bsz, -1))
        hidden = feed_forward(blk, h, "post_attention_layernorm", "mlp")
        return {"hidden": hidden, "memory": mem, "conv": window[..., 1:]}


class KimiMLALayer(AttentionLayer):
    """A ``KimiLinearDecoderLayer`` with ``KimiLinearAttention`` (multi-head latent attention,
    no positional encoding); with xn = RMSNorm(x):

    q = q_proj(xn) (or q_b_proj(RMSNorm(q_a_proj xn)));  [c, k_r] = kv_a_proj_with_mqa(xn);
    [k_nope, v] = kv_b_proj(RMSNorm(c)) per head;  k = [k_nope, k_r] (k_r shared by the heads);
    a = softmax(scaling q K^T) V;  h = x + o_proj(a);  hidden = h + FF(RMSNorm(h))

    State {hidden, key (B x t x heads x (d_nope + d_rope)), value (B x t x heads x d_v)}: the
    keys and values the model expands from its latent cache; readout ``hidden`` only.
    """

    ff_norm_attr = "post_attention_layernorm"
    ff_attr = "mlp"

    def __init__(self, block: nn.Module, config: Any, index: int):
        # not AttentionLayer.__init__: MLA's heads and projections are named otherwise
        HFBlockLayer.__init__(self, block, config.hidden_size, index)
        attn = self.attention
        self.heads = int(attn.num_heads)
        self.nope, self.rope = int(attn.qk_nope_head_dim), int(attn.qk_rope_head_dim)
        self.head_dim, self.v_dim = self.nope + self.rope, int(attn.v_head_dim)
        self.rank = int(attn.kv_lora_rank)
        self.scaling = float(attn.scaling)
        self.rotary = None  # NoPE
        self.components = {"hidden": (self.hidden_size,)}

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        state = self._zeros(batch, device, dtype)
        ref = state["hidden"]
        state["key"] = ref.new_zeros(batch, 0, self.heads, self.head_dim)
        state["value"] = ref.new_zeros(batch, 0, self.heads, self.v_dim)
        return state

    def step(self, x: Tensor, state: HFState) -> HFState:
        attn, bsz = self.attention, x.shape[0]
        xn = _norm(x, self.block.input_layernorm)
        if attn.q_proj is not None:
            q = attn.q_proj(xn)
        else:
            q = attn.q_b_proj(_norm(attn.q_a_proj(xn), attn.q_a_layernorm))
        q = q.view(bsz, self.heads, self.head_dim)
        latent, k_rot = attn.kv_a_proj_with_mqa(xn).split([self.rank, self.rope], -1)
        kv = attn.kv_b_proj(_norm(latent, attn.kv_a_layernorm)).view(bsz, self.heads, -1)
        k_nope, v = kv.split([self.nope, self.v_dim], -1)
        k = torch.cat([k_nope, k_rot.unsqueeze(1).expand(bsz, self.heads, self.rope)], -1)
        keys = torch.cat([state["key"], k.unsqueeze(1)], 1)                 # B x t+1 x h x d
        values = torch.cat([state["value"], v.unsqueeze(1)], 1)
        w = torch.softmax(torch.einsum("bhd,bthd->bht", q, keys) * self.scaling, -1)
        a = torch.einsum("bht,bthd->bhd", w, values).reshape(bsz, -1)
        h = x + attn.o_proj(a)
        return {"hidden": feed_forward(self.block, h, self.ff_norm_attr, self.ff_attr),
                "key": keys, "value": values}


class KimiLinearFamily(HFFamily):
    """``KimiLinearForCausalLM`` / ``KimiLinearModel``: blocks ``model.layers`` by
    ``config.layer_types`` ("linear_attention" -> :class:`KimiDeltaLayer`, else
    :class:`KimiMLALayer`), head the final w RMSNorm ``norm`` + ``lm_head``."""

    causal_lm = "KimiLinearForCausalLM"
    backbone_attr = "model"

    def layers(self, backbone: nn.Module, config: Any) -> list[HFBlockLayer]:
        out: list[HFBlockLayer] = []
        for i, blk in enumerate(backbone.layers):
            if config.layer_types[i] == "linear_attention":
                out.append(KimiDeltaLayer(blk, config, i))
            else:
                out.append(KimiMLALayer(blk, config, i))
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
