"""RecurrentGemma (Griffin: RG-LRU blocks with a temporal convolution, local attention) from
Hugging Face transformers (issue 23): a tiny random config (hidden 32 = lru_width, 3 blocks:
recurrent, attention, recurrent; 4 heads, GQA 4/2; attention window 4, so the sliding cache
truncates inside the 11- and 6-token windows below; logit soft cap 5; parameters moved off their
init; vocabulary 64; nothing downloaded). (lru_width equals hidden: transformers 5.23's one-token
decode path sizes the convolution cache by hidden_size.)

Oracles: the model's own forward (block outputs by forward hooks after every prefix; the RG-LRU
and convolution states as the model's blocks keep them; the logits) and autograd Jacobians
through that forward w.r.t. ``inputs_embeds`` for the state gradients at delays 0..3 in
``window:N`` (float32 within 1e-5). In float64 the model still keeps the RG-LRU state and its
RMSNorms in float32, so float64 is checked against autograd through the adapter's steps (1e-10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "RecurrentGemmaConfig"):
    pytest.skip("the installed transformers has no recurrent_gemma", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import FAMILIES, from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V, H = 64, 32
KINDS = ["rg_lru", "attention", "rg_lru"]


def tiny(dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.RecurrentGemmaConfig(
        vocab_size=V, hidden_size=H, num_hidden_layers=3, intermediate_size=96,
        num_attention_heads=4, num_key_value_heads=2, lru_width=H, attention_window_size=4,
        conv1d_width=3, block_types=["recurrent", "attention"], logits_soft_cap=5.0)
    model = transformers.RecurrentGemmaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.2)  # (1 + w) norms: around 1
            elif name.endswith("recurrent_param"):
                p.normal_(0, 1)
            elif p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
            elif "bias" in name:
                p.normal_(0, 0.5)
    return model.to(dtype).eval()


def model_states(model, X):
    """Every block's output (hooks), the RG-LRU and convolution states (kept by the model's
    recurrent blocks) after the last position of X (T x E), flattened."""
    outs = {}
    hooks = [b.register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o))
             for i, b in enumerate(model.model.layers)]
    try:
        model(inputs_embeds=X[None], use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    got = {}
    for i, b in enumerate(model.model.layers):
        got[(i, "hidden")] = outs[i][0, -1]
        tb = b.temporal_block
        if hasattr(tb, "rg_lru"):
            got[(i, "lru")] = tb.rg_lru.recurrent_states[0].to(X.dtype)
            got[(i, "conv")] = tb.conv1d_state[0].flatten()
    return got


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def test_registered_and_steps_equal_the_model():
    """After every prefix of 11 tokens (the attention window of 4 slides): block outputs,
    RG-LRU and convolution states (float32, 1e-5 scaled by max(1, |v|)); the soft-capped
    logits equal the model's."""
    assert "recurrent_gemma" in FAMILIES
    model = tiny()
    enc = from_hf(model, log=lambda m: None)  # the normalizer buffer is bfloat16: a notice
    assert enc.model_type == "recurrent_gemma"
    assert [lay.kind for lay in enc.layers] == KINDS
    assert enc.layers[0].readouts == ("hidden", "lru", "conv")
    assert enc.layers[1].readouts == ("hidden",)
    with pytest.raises(MemlensError, match=r"layer 1 \(attention\): choose from hidden"):
        Site(1, "key").resolve(enc)
    ids = torch.randint(0, V, (11,), generator=torch.Generator().manual_seed(1))
    seqs, _ = enc.states(ids[:, None])
    X = model.get_input_embeddings().weight.detach()[ids]
    worst = 0.0
    with torch.no_grad():
        for t in range(len(ids)):
            for (i, name), w in model_states(model, X[:t + 1]).items():
                got = seqs[(i, name)][t, 0]
                assert got.shape == w.shape, (i, name)
                err = (got - w).abs().max().item() / max(1.0, w.abs().max().item())
                worst = max(worst, err)
                assert err <= 1e-5, (t, i, name, err)
        logits = model(ids[None], use_cache=False).logits[0]
        assert (enc.head(seqs[(2, "hidden")][:, 0]) - logits).abs().max() < 1e-4
    print(f"recurrent_gemma: states worst {worst:.1e}")


def windows_average(fn, X, N, K, pairs, sizes):
    """Mean over targets t of d r_t / d x_{t-tau} (tau = 0..K within t's window) in window:N;
    ``fn(W)``: the T x D readouts (``pairs`` concatenated) of window W from the initial state."""
    sums = {p: np.zeros((K + 1, sizes[p], X.shape[1])) for p in pairs}
    count = np.zeros(K + 1)
    for w0 in range(0, X.shape[0] - N + 1, N):
        J = torch.autograd.functional.jacobian(fn, X[w0:w0 + N]).detach().double().numpy()
        off = 0
        for p in pairs:
            for t in range(N):
                for tau in range(min(t, K) + 1):
                    sums[p][tau] += J[t, off:off + sizes[p], t - tau]
            off += sizes[p]
        for t in range(N):
            count[:min(t, K) + 1] += 1
    return {p: s / count[:, None, None] for p, s in sums.items()}


def through_model(model, pairs):
    def f(W):
        return torch.stack([torch.cat([st[p] for p in pairs]) for st in
                            (model_states(model, W[:t + 1]) for t in range(W.shape[0]))])
    return f


def through_steps(enc, pairs):
    def f(W):
        st, rows = enc.init_state(1, dtype=W.dtype), []
        for t in range(W.shape[0]):
            st = enc.step(W[t:t + 1], st)
            rows.append(torch.cat([enc.readout(st, i, n)[0] for i, n in pairs]))
        return torch.stack(rows)
    return f


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
def test_state_gradients_in_windows_equal_autograd(dtype, tol):
    """Delays 0..3 in window:6 over 12 tokens (two windows; the attention window of 4 slides
    inside each) of the top block's output and the RG-LRU state of block 0."""
    tdt = getattr(torch, dtype)
    model = tiny(tdt)
    enc = from_hf(model, log=lambda m: None)
    N, K = 6, 3
    ids = torch.randint(0, V, (12,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]
    pairs = [(2, "hidden"), (0, "lru")]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    if dtype == "float64":
        want = windows_average(through_steps(enc, pairs), X, N, K, pairs, sizes)
        with torch.no_grad():  # the model's float64 forward (LRU state, norms in float32)
            ref = model_states(model, X[:N])
            st = enc.init_state(1, dtype=tdt)
            for t in range(N):
                st = enc.step(X[t:t + 1], st)
        assert max(rel_err(enc.readout(st, i, n)[0], ref[(i, n)]) for i, n in pairs) < 1e-5
    else:
        want = windows_average(through_model(model, pairs), X, N, K, pairs, sizes)
    opts = RunOptions(dtype=dtype, bootstrap=Bootstrap(0))
    worst = 0.0
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                    context=f"window:{N}")
        err = rel_err(r.means(), want[(layer, readout)])
        worst = max(worst, err)
        assert err <= tol, (layer, readout, err)
    print(f"recurrent_gemma {dtype}: gradients worst {worst:.1e}")


def test_stream_refused_in_one_line():
    enc = from_hf(tiny(), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError, match=r"recurrent_gemma has attention blocks \(layers 1\)"
                       ) as err:
        memlens.state_gradients(enc, ids, 2, options=RunOptions(bootstrap=Bootstrap(0)))
    assert "\n" not in str(err.value) and "window:N" in str(err.value)
