"""Today's recurrent language models from Hugging Face transformers: Mamba, RWKV and xLSTM.

:func:`from_hf` turns a ``MambaForCausalLM``, ``RwkvForCausalLM`` or ``xLSTMForCausalLM`` (or a
directory / name that ``from_pretrained`` resolves) into a :class:`RecurrentEncoder`:

* **inputs**: token ids through the model's input embeddings (``get_input_embeddings()``); the
  analysed x_t is the embedding row (``inputs_embeds``).
* **layers**: one :class:`HFBlockLayer` per block, whose ``step`` is the block's own forward for
  one token, written out in plain PyTorch (no CUDA kernels; every dtype; differentiable by
  ``torch.func.jvp``, so state gradients take the generic tangent path). The state is a dict of
  tensors (batch first); ``step`` reproduces the model's forward (tests: <= 1e-5 in float32).
* **readouts** per block, each flattened to B x D: ``"hidden"`` = the block's output (the
  residual stream: what ``output_hidden_states`` returns for that block; the default readout)
  and every recurrent state component under its own name:

  ======  ==========================================================================
  Mamba   ``ssm`` (d_inner x d_state), ``conv`` (d_inner x (conv_kernel - 1): the last
          inputs of the causal convolution; HF's cache keeps one more, unused, column)
  RWKV    ``numerator``, ``denominator``, ``max`` (the stabilised WKV sums, attention size
          each), ``att_shift``, ``ffn_shift`` (the previous token's normalised input of the
          time-mix and channel-mix, hidden size each)
  xLSTM   ``C`` (heads x d_qk x d_v matrix memory), ``n`` (heads x d_qk normaliser),
          ``m`` (heads: the stabiliser)
  ======  ==========================================================================

* **head** (context ablation only): the final norm and the LM head (and xLSTM's logit soft cap).
* **vocabulary**: the tokenizer's tokens, shown decoded (``tokenizer.decode([id])``; the raw
  token where two ids decode alike; ``<id:N>`` for embedding rows beyond the tokenizer).
  :func:`tokenize_corpus` tokenises a word corpus with the model's own tokenizer.

Numerics: the step computes in the dtype of its input; the models' forwards cast some
reductions to float32 (Mamba's RMSNorm and residual, RWKV's WKV keys, xLSTM's states), which
equals the step in float32. RWKV in eval mode divides some weights by 2 every
``rescale_every`` blocks (and the hidden state accordingly); :func:`from_hf` puts the model in
that inference form, as its own forward in eval mode does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memlens.data.corpus import Corpus
from memlens.data.vocab import EOS, Vocab
from memlens.errors import MemlensError
from memlens.models.encoder import RecurrentEncoder
from memlens.models.layers import RecurrentLayer

#: transformers model_type -> the causal-LM class memlens adapts
SUPPORTED = {"mamba": "MambaForCausalLM", "rwkv": "RwkvForCausalLM",
             "xlstm": "xLSTMForCausalLM"}
SUPPORTED_TEXT = ("Hugging Face recurrent causal LMs: " + ", ".join(
    f"{cls} ({t})" for t, cls in SUPPORTED.items()))

HFState = dict[str, Tensor]


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise MemlensError("Hugging Face models need the transformers package: pip install "
                           "'memlens[hf]'") from None
    return transformers


def _rms(x: Tensor, weight: Tensor | None, eps: float, bias: Tensor | None = None) -> Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight (+ bias)."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """cap * tanh(x / cap) (identity for cap None)."""
    return x if cap is None else cap * torch.tanh(x / cap)


class HFBlockLayer(RecurrentLayer):
    """One block of a Hugging Face recurrent LM behind the layer contract.

    ``block`` is the model's own block module (registered here, so parameters are shared, not
    copied); ``step(x, state)`` (x: B x H) is the block's forward for one token; the state is a
    dict {component: B x ...}; ``readout(state, name)`` flattens a component to B x D.
    Subclasses define ``components`` (name -> shape without batch), ``init_state`` and
    ``step``.
    """

    kind = "custom"
    output_readout = "hidden"

    def __init__(self, block: nn.Module, hidden_size: int, index: int):
        super().__init__()
        self.block = block
        self.input_size = self.hidden_size = int(hidden_size)
        self.index = index

    components: dict[str, tuple[int, ...]]

    @property
    def readouts(self) -> tuple[str, ...]:
        return tuple(self.components)

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.readouts

    def readout_size(self, name: str) -> int:
        return math.prod(self.components[name])

    #: ``readout`` is linear in the state (a flatten), so a readout's tangent is the readout
    #: of the state's tangents (the generic propagator then skips a jvp)
    readout_is_linear = True

    def readout(self, state: HFState, name: str) -> Tensor:
        return state[name].flatten(1)

    def _zeros(self, batch: int, device, dtype) -> HFState:
        ref = next(self.parameters())
        device = device or ref.device
        dtype = dtype or ref.dtype
        return {n: torch.zeros(batch, *shape, device=device, dtype=dtype)
                for n, shape in self.components.items()}

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        return self._zeros(batch, device, dtype)

    def forward(self, x: Tensor, state: HFState | None = None) -> tuple[Tensor, HFState]:
        seqs, state = self.sequence_states(x, state, (self.output_readout,))
        return seqs[self.output_readout], state

    def sequence_states(self, x: Tensor, state: HFState | None = None,
                        names: Sequence[str] | None = None
                        ) -> tuple[dict[str, Tensor], HFState]:
        """Readouts ``names`` (default all) at every step of x (T x B x H): T x B x D each."""
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        names = tuple(dict.fromkeys(names or self.readouts))
        out: dict[str, list[Tensor]] = {n: [] for n in names}
        for t in range(x.shape[0]):
            state = self.step(x[t], state)
            for n in names:
                out[n].append(self.readout(state, n))
        return {n: torch.stack(v) for n, v in out.items()}, state


class MambaLayer(HFBlockLayer):
    """A ``MambaBlock``: h = x + out_proj(y), with (per channel d, state index n)

    u, z = in_proj(RMSNorm(x));  c = act(sum_k w_k u_{t-K+1+k} + b)  (causal conv, K taps)
    dt, B, C = split(x_proj(c));  dt = softplus(dt_proj(dt));  A = -exp(A_log)
    ssm'[d, n] = exp(A[d, n] dt[d]) ssm[d, n] + dt[d] B[n] c[d];  y = (ssm' C + D c) silu(z)
    """

    kind = "mamba"

    def __init__(self, block: nn.Module, config: Any, index: int):
        super().__init__(block, config.hidden_size, index)
        mix = block.mixer
        self.eps = float(block.norm.variance_epsilon)
        self.act = _activation(config.hidden_act)
        self.rank, self.n = int(mix.time_step_rank), int(mix.ssm_state_size)
        di, k = int(mix.intermediate_size), int(mix.conv_kernel_size)
        self.components = {"hidden": (self.hidden_size,), "ssm": (di, self.n),
                           "conv": (di, k - 1)}

    def step(self, x: Tensor, state: HFState) -> HFState:
        mix = self.block.mixer
        xz = F.linear(_rms(x, None, self.eps) * self.block.norm.weight, mix.in_proj.weight,
                      mix.in_proj.bias)
        u, z = xz.chunk(2, dim=-1)
        window = torch.cat([state["conv"], u.unsqueeze(-1)], -1)  # B x Di x K
        c = (window * mix.conv1d.weight[:, 0, :]).sum(-1)
        if mix.conv1d.bias is not None:
            c = c + mix.conv1d.bias
        c = self.act(c)
        dt, b, cc = torch.split(F.linear(c, mix.x_proj.weight), [self.rank, self.n, self.n],
                                dim=-1)
        dt = F.softplus(F.linear(dt, mix.dt_proj.weight, mix.dt_proj.bias))
        a = -torch.exp(mix.A_log)
        ssm = (torch.exp(a * dt.unsqueeze(-1)) * state["ssm"]
               + (dt.unsqueeze(-1) * b.unsqueeze(1)) * c.unsqueeze(-1))
        y = (ssm * cc.unsqueeze(1)).sum(-1) + c * mix.D
        y = y * F.silu(z)
        out = F.linear(y, mix.out_proj.weight, mix.out_proj.bias)
        return {"hidden": x + out, "ssm": ssm, "conv": window[..., 1:]}

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
        mix = self.block.mixer
        w_norm = self.block.norm.weight
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


def _value_and_slope(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """fn(x) and its elementwise derivative fn'(x), for an elementwise ``fn`` (autograd of
    sum fn(x))."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        value = fn(leaf)
        (slope,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), slope


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    from transformers.activations import ACT2FN

    return ACT2FN[name]


class HFHead(nn.Module):
    """The next-token head of a Hugging Face LM: final norm, LM head, optional logit soft cap
    (B x H top-block outputs -> B x V logits)."""

    def __init__(self, norm: nn.Module, lm_head: nn.Module, soft_cap: float | None = None):
        super().__init__()
        self.norm, self.lm_head, self.soft_cap = norm, lm_head, soft_cap

    def forward(self, h: Tensor) -> Tensor:
        return _soft_cap(self.lm_head(self.norm(h)), self.soft_cap)


# -- building the encoder -------------------------------------------------------------------

def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def _unsupported(what: str) -> MemlensError:
    return MemlensError(f"{what} is not a recurrent model memlens can analyse; supported: "
                        f"{SUPPORTED_TEXT}")


def _parts(model: nn.Module):
    """(backbone, blocks, layer builder, head) of a supported model, or a clear error."""
    mt = _model_type(model)
    name = type(model).__name__
    if mt not in SUPPORTED or not name.lower().startswith(mt.lower()):
        raise _unsupported(f"{name} (model_type {mt!r})")
    causal = name.endswith("ForCausalLM")
    cfg = model.config
    if mt == "mamba":
        bb = model.backbone if causal else model
        layers = [MambaLayer(b, cfg, i) for i, b in enumerate(bb.layers)]
        head = HFHead(bb.norm_f, model.lm_head) if causal else None
    elif mt == "rwkv":
        bb = model.rwkv if causal else model
        if bb.training == bb.layers_are_rescaled:  # the inference form, as forward() in eval
            was = bb.training
            bb.eval()
            bb._rescale_layers()
            bb.train(was)
        layers = [RwkvLayer(b, cfg, i, lambda bb=bb: bool(bb.layers_are_rescaled))
                  for i, b in enumerate(bb.blocks)]
        head = HFHead(bb.ln_out, model.head) if causal else None
    else:
        bb = model.backbone if causal else model
        layers = [XLSTMLayer(b, cfg, i) for i, b in enumerate(bb.blocks)]
        head = (HFHead(bb.out_norm, model.lm_head, cfg.output_logit_soft_cap) if causal
                else None)
    return bb, layers, head


def hf_symbols(tokenizer, size: int) -> list[str]:
    """One distinct display symbol per embedding row: the decoded token; the raw token where
    two ids decode alike; ``<id:N>`` for rows beyond the tokenizer."""
    symbols: list[str] = []
    seen: set[str] = set()
    n = len(tokenizer) if tokenizer is not None else 0
    for i in range(size):
        cands = []
        if i < n:
            try:
                cands.append(tokenizer.decode([i]))
            except Exception:  # noqa: BLE001 - a tokenizer without this id: fall through
                pass
            raw = tokenizer.convert_ids_to_tokens(i)
            if raw is not None:
                cands.append(str(raw))
        cands.append(f"<id:{i}>")
        sym = next(c for c in cands if c and c not in seen)
        seen.add(sym)
        symbols.append(sym)
    return symbols


def from_hf(model_or_dir: nn.Module | str | os.PathLike, tokenizer: Any = None) -> RecurrentEncoder:
    """A Hugging Face Mamba / RWKV / xLSTM causal LM as a :class:`RecurrentEncoder`.

    ``model_or_dir``: a loaded ``MambaForCausalLM`` / ``RwkvForCausalLM`` /
    ``xLSTMForCausalLM`` (or its base model, without a head), or a directory or name that
    ``from_pretrained`` resolves (weights via ``AutoModelForCausalLM``, tokenizer via
    ``AutoTokenizer`` from the same place when it has one). ``tokenizer``: a tokenizer to use
    instead (gives the vocabulary: symbols are the decoded tokens).

    Returns an encoder in eval mode whose layers are one :class:`HFBlockLayer` per block
    (readouts: ``"hidden"``, the default, plus the state components; see the module
    docstring), with ``head`` (final norm + LM head) for context ablation and ``tokenizer``
    attached. Parameters are the model's own (shared). Any other architecture (a transformer,
    a bidirectional encoder) is a one-line :class:`MemlensError` naming what is supported.
    """
    if isinstance(model_or_dir, (str, os.PathLike)):
        model, tok = load_hf(model_or_dir)
        tokenizer = tokenizer if tokenizer is not None else tok
    elif isinstance(model_or_dir, nn.Module):
        model = model_or_dir
    else:
        raise MemlensError(f"from_hf() needs a transformers model or a directory, got "
                           f"{type(model_or_dir).__name__}")
    model.eval()
    _, layers, head = _parts(model)
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise MemlensError(f"the model's input embeddings are a {type(emb).__name__}, not an "
                           "nn.Embedding")
    vocab = None
    if tokenizer is not None:
        vocab = Vocab.from_symbols(hf_symbols(tokenizer, emb.num_embeddings), unk=None)
    enc = RecurrentEncoder(emb, layers, vocab=vocab, head=head).eval()
    object.__setattr__(enc, "tokenizer", tokenizer)
    object.__setattr__(enc, "hf_model_type", _model_type(model))
    return enc


def load_hf(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """(model, tokenizer or None) from a directory or a name ``from_pretrained`` resolves;
    the config's architecture is checked before any weights are read."""
    transformers = _require_transformers()
    transformers.utils.logging.disable_progress_bar()  # no bars or warnings among memlens'
    transformers.utils.logging.set_verbosity_error()  # own lines (errors stay one line)
    spec = str(path)
    try:
        config = transformers.AutoConfig.from_pretrained(spec)
    except (OSError, ValueError, KeyError) as exc:
        raise MemlensError(f"hf:{spec}: cannot read a transformers config: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    mt = getattr(config, "model_type", "?")
    if mt not in SUPPORTED:
        archs = ",".join(getattr(config, "architectures", None) or []) or mt
        raise _unsupported(f"hf:{spec} ({archs}, model_type {mt!r})")
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise MemlensError(f"hf:{spec}: cannot load the model: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    tokenizer = None
    if not Path(spec).is_dir() or any((Path(spec) / f).exists() for f in (
            "tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError, KeyError, TypeError):
            tokenizer = None
    return model, tokenizer


# -- corpora in the model's own tokens ------------------------------------------------------

@dataclass
class SubwordCorpus(Corpus):
    """A word corpus tokenised with a model's own tokenizer.

    ``tokens``: the sub-token symbols (the model's vocabulary); ``tags``: each word's tags on
    its *first* sub-token (None on the others); ``words``: the word corpus; ``first``: for
    every word, the index of its first sub-token.
    """

    words: Corpus | None = None
    first: list[int] = field(default_factory=list)

    def word_labels(self, per_word: Sequence) -> list:
        """Word-level labels (one per word) -> one per sub-token: each word's label on its
        first sub-token, None on the rest."""
        out: list = [None] * len(self.tokens)
        for i, lab in zip(self.first, per_word):
            out[i] = lab
        return out

    def classes(self, spec: str, n: int | None = None, log=None
                ) -> tuple[list[str], list[list[str]]]:
        """Word-level classes (``upos``, ``words:``, ``freq:`` ... of
        :func:`memlens.gradients.classes.token_classes`, computed on the words; frequency bins
        from the words' counts in this corpus) on the first sub-token of each word, for the
        first ``n`` sub-tokens."""
        from memlens.gradients.classes import token_classes

        words = self.words
        names, per_word = token_classes(spec, words.tokens, words.tags,
                                        Vocab.build(words.tokens), log=log)
        per_sub = [x if x is not None else [] for x in self.word_labels(per_word)]
        return names, per_sub[:n] if n is not None else per_sub


def tokenize_corpus(corpus: Corpus, tokenizer, vocab: Vocab) -> SubwordCorpus:
    """Tokenise a word corpus with a model's tokenizer: each word on its own, with a leading
    space unless it starts a line (so sub-tokens never straddle words), ``<eos>`` as the
    tokenizer's end-of-sequence token (a newline if it has none). Symbols are ``vocab``'s
    (:func:`hf_symbols`). Returns a :class:`SubwordCorpus`."""
    if corpus.unit != "word":
        raise MemlensError("a Hugging Face model reads text through its own tokenizer: use "
                           "--unit word")
    eos_id = getattr(tokenizer, "eos_token_id", None)
    texts: list[str] = []
    start = True
    for w in corpus.tokens:
        texts.append(w if start or w == EOS else " " + w)
        start = w == EOS
    uniq = sorted(set(t for t in texts if t != EOS))
    ids_of: dict[str, list[int]] = {}
    if uniq:
        enc = tokenizer(uniq, add_special_tokens=False)["input_ids"]
        ids_of = dict(zip(uniq, enc))
    eos_ids = [eos_id] if eos_id is not None else tokenizer("\n", add_special_tokens=False
                                                            )["input_ids"]
    ids: list[int] = []
    first: list[int] = []
    for t in texts:
        piece = eos_ids if t == EOS else ids_of[t]
        if not piece:
            piece = [tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else []
        if not piece:
            raise MemlensError(f"the tokenizer gives no token for {t.strip()!r}")
        first.append(len(ids))
        ids.extend(piece)
    if ids and max(ids) >= len(vocab):
        raise MemlensError(f"the tokenizer gives token id {max(ids)} but the model has only "
                           f"{len(vocab)} embedding rows: tokenizer and model do not match")
    tokens = vocab.decode(ids)
    tags = {k: [None] * len(ids) for k in corpus.tags}
    for k, col in corpus.tags.items():
        for i, tag in zip(first, col):
            tags[k][i] = tag
    return SubwordCorpus(tokens, tags, corpus.path, "word", corpus.format, words=corpus,
                         first=first)
