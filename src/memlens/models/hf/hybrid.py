"""What the hybrid families (Mamba mixers and attention blocks) share: the attention block as a
layer, the feed-forward sub-block, and the regime rule.

An attention block has no fixed-size state. memlens gives it one meaning: its layer carries the
key/value cache of the positions since the last reset (``key``, ``value``: B x t x kv_heads x
head_dim, rotary already applied, as the model's own cache holds them), so within a window or a
sentence the attention is the model's own, and the gradients through it are exact by the same
``torch.func.jvp`` path as every other layer. Its only readout is ``hidden`` (the block output);
the cache is state, not a readout. Because the cache grows with every position, a model with
attention blocks is analysed only in a regime that resets (``window:N``, ``sentence``): the
layer declares ``context_grows = True`` and :func:`memlens.runtime.context.check_model_regime`
refuses ``stream`` and ``segment:S`` for it.

:class:`AttentionLayer` computes the block with the model's own modules and parameters: the
input RMSNorm's weight and eps, ``q_proj``/``k_proj``/``v_proj``/``o_proj``, the attention's
``scaling`` and key/value groups, the model's rotary embedding module (cos, sin for position t,
computed by the module itself) and its modeling file's ``apply_rotary_pos_emb``, and the
feed-forward (MLP or mixture of experts) module as it is (:func:`feed_forward`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer, HFState, _rms


@contextmanager
def _eager_experts(module: nn.Module) -> Iterator[None]:
    """Run the mixture-of-experts modules inside ``module`` with their plain PyTorch forward
    ("eager": a loop over the routed experts) instead of the fused kernel the model's config
    picks (``grouped_mm`` has no forward-mode derivative); the same arithmetic. The config is
    restored afterwards."""
    configs = {id(c): c for m in module.modules()
               if hasattr(c := getattr(m, "config", None), "_experts_implementation")
               and hasattr(m, "has_gate")}  # modules under transformers' experts dispatch
    saved = {k: c._experts_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._experts_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._experts_implementation = saved[k]


def feed_forward(block: nn.Module, h: Tensor, norm_attr: str = "pre_ff_layernorm",
                 ff_attr: str = "feed_forward") -> Tensor:
    """h + FF(RMSNorm(h)) of a decoder layer (h: B x H): the norm from the block's weight and
    eps, the feed-forward (MLP, mixture of experts) the block's own module, called on B x 1 x H
    as in the model's forward (experts by their eager forward, :func:`_eager_experts`)."""
    norm, ff = getattr(block, norm_attr), getattr(block, ff_attr)
    hn = _rms(h, norm.weight, float(norm.variance_epsilon))
    with _eager_experts(ff):
        return h + ff(hn.unsqueeze(1)).squeeze(1)


class AttentionLayer(HFBlockLayer):
    """One attention decoder layer of a hybrid (module docstring): with xn = RMSNorm(x),

    q, k, v = q_proj(xn), k_proj(xn), v_proj(xn)  (per head);  q, k = rotary(q, k; t)
    cache' = [cache; (k, v)];  a = softmax(scaling q K^T) V  (each query head with its group's
    keys);  h = x + o_proj(a);  hidden = h + FF(RMSNorm(h))

    (per-head q/k norms before rotary where the family has them: :meth:`_qk`)

    t = the number of positions in the cache (positions since the last reset). State
    {hidden, key, value}; readout ``hidden`` only.
    """

    kind = "attention"
    context_grows: ClassVar[bool] = True
    # the decoder layer's attribute names: attention, its output projection, the norm before
    # it, the norm before the feed-forward and the feed-forward (a family names them otherwise)
    attn_attr: ClassVar[str] = "self_attn"
    out_attr: ClassVar[str] = "o_proj"
    norm_attr: ClassVar[str] = "input_layernorm"
    ff_norm_attr: ClassVar[str] = "pre_ff_layernorm"
    ff_attr: ClassVar[str] = "feed_forward"

    def __init__(self, block: nn.Module, config: Any, index: int,
                 rotary: nn.Module | None = None):
        super().__init__(block, config.hidden_size, index)
        attn = self.attention
        self.eps = float(getattr(block, self.norm_attr).variance_epsilon)
        self.head_dim = int(attn.head_dim)
        self.heads = int(attn.q_proj.out_features) // self.head_dim
        self.kv_heads = int(attn.k_proj.out_features) // self.head_dim
        self.scaling = float(attn.scaling)
        self.rotary = rotary  # the model's rotary embedding module (shared), or None
        self._apply_rotary = getattr(sys.modules[type(attn).__module__],
                                     "apply_rotary_pos_emb", None)
        self.components = {"hidden": (self.hidden_size,)}

    @property
    def attention(self) -> nn.Module:
        """The block's attention module (``block.<attn_attr>``)."""
        return getattr(self.block, self.attn_attr)

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        state = self._zeros(batch, device, dtype)
        ref = state["hidden"]
        for name in ("key", "value"):
            state[name] = ref.new_zeros(batch, 0, self.kv_heads, self.head_dim)
        return state

    def _qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys (B x heads x d) as the attention uses them before rotary: as
        projected (a family with per-head q/k norms applies them here)."""
        return q, k

    def _rotate(self, q: Tensor, k: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """q (B x heads x d), k (B x kv_heads x d) rotated for position t by the model's rotary
        module and its ``apply_rotary_pos_emb`` (identity without rotary)."""
        if self.rotary is None:
            return q, k
        pos = torch.full((1, 1), t, dtype=torch.long, device=q.device)
        cos, sin = self.rotary(q, position_ids=pos)                     # 1 x 1 x r
        q, k = self._apply_rotary(q.unsqueeze(2), k.unsqueeze(2), cos, sin)
        return q.squeeze(2), k.squeeze(2)

    def step(self, x: Tensor, state: HFState) -> HFState:
        xn = _rms(x, getattr(self.block, self.norm_attr).weight, self.eps)
        out, keys, values = self.attend(xn, state)
        return {"hidden": feed_forward(self.block, x + out, self.ff_norm_attr, self.ff_attr),
                "key": keys, "value": values}

    def attend(self, xn: Tensor, state: HFState) -> tuple[Tensor, Tensor, Tensor]:
        """The attention alone on the normalised input xn (B x H): (output projection of the
        attention, keys', values') (class docstring; the block adds the residual and FF)."""
        attn, b = self.attention, xn.shape[0]
        q = attn.q_proj(xn).view(b, self.heads, self.head_dim)
        k = attn.k_proj(xn).view(b, self.kv_heads, self.head_dim)
        v = attn.v_proj(xn).view(b, self.kv_heads, self.head_dim)
        q, k = self._rotate(*self._qk(q, k), state["key"].shape[1])
        keys = torch.cat([state["key"], k.unsqueeze(1)], 1)            # B x t+1 x kv x d
        values = torch.cat([state["value"], v.unsqueeze(1)], 1)
        qg = q.view(b, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        w = torch.softmax(torch.einsum("bkgd,btkd->bkgt", qg, keys) * self.scaling, -1)
        a = torch.einsum("bkgt,btkd->bkgd", w, values).reshape(b, -1)
        return getattr(attn, self.out_attr)(a), keys, values


def attention_layers(layers) -> list[int]:
    """Indices of the layers whose state grows with the context (attention blocks)."""
    return [i for i, lay in enumerate(layers) if getattr(lay, "context_grows", False)]
