"""MiniMax (lightning attention + softmax attention, experts) from Hugging Face transformers
(issue 23): a tiny random config (hidden 32, 4 layers: lightning, attention, lightning,
lightning; 4 heads of 8; 4 experts, top 2; residual factors off 1; block_size 4, so the model's
chunked lightning attention crosses blocks; parameters moved off their init).

Oracles: the model's own forward (block outputs by forward hooks after every prefix; the
lightning attention's matrix states from its own cache ``past_key_values.linear_cache``) and
autograd Jacobians through that forward w.r.t. ``inputs_embeds`` for the state gradients in
``window:N``. The model's RMSNorms round to float32 whatever its dtype (and the router's
softmax is float32), so it is a float32-precise oracle; float64 is checked against autograd
through the adapter's steps with one expert (its routing weight exactly 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "MiniMaxConfig"):
    pytest.skip("the installed transformers has no minimax", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V = 64
TOL = 1e-5
TYPES = ["linear_attention", "full_attention", "linear_attention", "linear_attention"]


def tiny(dtype=torch.float32, experts=True, window=None):
    torch.manual_seed(0)
    cfg = transformers.MiniMaxConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=4, layer_types=TYPES,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=16,
        num_local_experts=4 if experts else 1, num_experts_per_tok=2 if experts else 1,
        block_size=4, sliding_window=window, full_attn_alpha_factor=0.8,
        full_attn_beta_factor=1.2, linear_attn_alpha_factor=0.9, linear_attn_beta_factor=1.1,
        mlp_alpha_factor=0.7, mlp_beta_factor=1.3)
    model = transformers.MiniMaxForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1, 0.2)  # w norms: around 1
            elif p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
    for mod in model.modules():  # the fused experts kernel takes no float64
        c = getattr(mod, "config", None)
        if c is not None and hasattr(c, "_experts_implementation"):
            c._experts_implementation = "eager"
    return model.to(dtype).eval()


def model_states(model, X):
    """Every block's output (hooks) and the lightning attention states (the model's cache)
    after the last position of X (T x E), flattened."""
    outs = {}
    hooks = [b.register_forward_hook(
        lambda _m, _i, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
        for i, b in enumerate(model.model.layers)]
    try:
        res = model(inputs_embeds=X[None], use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    got, cache = {}, res.past_key_values
    for i, kind in enumerate(TYPES):
        got[(i, "hidden")] = outs[i][0, -1]
        if kind == "linear_attention":
            got[(i, "memory")] = cache.linear_cache[i][0].flatten()
    return got


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("window", [None, 3])
def test_blocks_and_states_equal_the_model(window):
    """In float64 (the model's own norms and router still round to float32)."""
    model = tiny(torch.float64, window=window)
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == "minimax"
    assert [lay.kind for lay in enc.layers] == ["lightning_attention", "attention",
                                                "lightning_attention", "lightning_attention"]
    assert enc.layers[0].readouts == ("hidden", "memory")
    assert enc.layers[1].readouts == ("hidden",)
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
                assert err <= TOL, (t, i, name, err)
        logits = model(ids[None], use_cache=False).logits[0]
        assert (enc.head(seqs[(3, "hidden")][:, 0]) - logits).abs().max() < 1e-4
    print(f"minimax (window {window}): states worst {worst:.1e}")


def test_per_head_units():
    enc = from_hf(tiny(experts=False), log=lambda m: None)
    lay = enc.layers[0]
    u = lay.units("head:2", "memory")
    assert u.size == 64 and u.index[0] == 128
    assert lay.unit_splits()["heads"] == [f"head:{h}" for h in range(4)]
    for bad, msg in (("head:4", "out of range"), ("head:x", "bad unit spec")):
        with pytest.raises(MemlensError, match=msg):
            lay.units(bad, "memory")
    with pytest.raises(MemlensError, match="memory readout"):
        lay.units("head:0", "hidden")
    with pytest.raises(MemlensError, match="choose from hidden"):
        Site(1, "key").resolve(enc)


def autograd_average(model, X, N, K, pairs, sizes):
    """Mean over targets of d r_t / d x_{t-tau} in window:N by autograd through the model's
    own forward on each prefix of each window."""
    sums, count = {}, np.zeros(K + 1)
    for w0 in range(0, X.shape[0] - N + 1, N):
        W = X[w0:w0 + N]
        for t in range(N):
            def f(Xp):
                st = model_states(model, Xp)
                return torch.cat([st[p] for p in pairs])

            J = torch.autograd.functional.jacobian(f, W[:t + 1], vectorize=True)
            off = 0
            for p in pairs:
                blk = J[off:off + sizes[p]].detach().double().numpy()
                off += sizes[p]
                acc = sums.setdefault(p, np.zeros((K + 1, sizes[p], X.shape[1])))
                for tau in range(min(t, K) + 1):
                    acc[tau] += blk[:, t - tau]
            count[:min(t, K) + 1] += 1
    return {p: s / count[:, None, None] for p, s in sums.items()}


def test_state_gradients_in_windows_equal_autograd_through_the_model():
    """One expert (autograd through the eager expert loop is slow; the experts are checked
    by the state test above); one window of 5, then the start of the next."""
    model = tiny(experts=False)
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (N + 2,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]
    pairs = [(3, "hidden"), (2, "memory"), (1, "hidden")]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    want = autograd_average(model, X, N, K, pairs, sizes)
    opts = RunOptions(dtype=torch.float32, bootstrap=Bootstrap(0))
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                    context=f"window:{N}")
        err = rel_err(r.means(), want[(layer, readout)])
        print(f"minimax gradients {layer}/{readout}: {err:.1e}")
        assert err <= TOL, (layer, readout)


def test_float64_against_autograd_through_the_steps():
    """One expert (the router takes its scores in float32 whatever the dtype)."""
    model = tiny(torch.float64, experts=False)
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(3))
    X = model.get_input_embeddings().weight.detach()[ids]

    def f(Xa):
        st, out = enc.init_state(1, dtype=Xa.dtype), []
        for t in range(Xa.shape[0]):
            st = enc.step(Xa[t:t + 1], st)
            out.append(enc.readout(st, 3, "hidden")[0])
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(f, X).numpy()
    want = np.zeros((K + 1, J.shape[1], X.shape[1]))
    cnt = np.zeros(K + 1)
    for t in range(N):
        for tau in range(min(t, K) + 1):
            want[tau] += J[t, :, t - tau]
            cnt[tau] += 1
    r = memlens.state_gradients(enc, ids, K, context=f"window:{N}",
                                options=RunOptions(dtype=torch.float64, bootstrap=Bootstrap(0)))
    err = rel_err(r.means(), want / cnt[:, None, None])
    print(f"minimax float64 gradients vs autograd through the steps: {err:.1e}")
    assert err <= 1e-10


def test_stream_refused_in_one_line():
    enc = from_hf(tiny(experts=False), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError) as err:
        memlens.state_gradients(enc, ids, 2)
    assert "\n" not in str(err.value) and "window:N" in str(err.value)
