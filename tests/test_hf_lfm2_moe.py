"""LFM2-MoE from Hugging Face transformers (issue 23): a tiny random config (hidden 32, 4 layers:
conv, attention, conv, attention; the first block's feed-forward a dense MLP, the others a
mixture of 4 experts, top 2, sigmoid router with a random expert bias; parameters moved off
their init; vocabulary 64; nothing downloaded).

Oracles: the model's own forward (block outputs by forward hooks after every prefix, the
convolution states from its own cache, the logits) and autograd Jacobians through that forward
w.r.t. ``inputs_embeds`` for the state gradients at delays 0..3 in ``window:N`` (float32, within
1e-5 relative: the model's forward rounds nothing below float32). In float64 the model's
RMSNorms still round to float32 (they cast their input), so float64 is checked against autograd
through the adapter's steps (1e-10), the model's float64 forward agreeing to float32 precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Lfm2MoeConfig"):
    pytest.skip("the installed transformers has no lfm2_moe", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import FAMILIES, from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V, H = 64, 32
TYPES = ["conv", "full_attention", "conv", "full_attention"]
KINDS = ["short_conv", "attention", "short_conv", "attention"]


def tiny(dtype=torch.float32, seed: int = 0):
    """The tiny LFM2-MoE (eval mode; experts by their eager forward, the fused kernel takes no
    float64), its parameters moved off their init so that every term matters."""
    torch.manual_seed(seed)
    cfg = transformers.Lfm2MoeConfig(
        vocab_size=V, hidden_size=H, num_hidden_layers=4, layer_types=TYPES,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, num_dense_layers=1,
        use_expert_bias=True, norm_topk_prob=True, routed_scaling_factor=1.5, conv_L_cache=3,
        conv_bias=True, max_position_embeddings=64)
    model = transformers.Lfm2MoeForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1, 0.2)
            elif p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
            elif "bias" in name:
                p.normal_(0, 0.5)
        for mod in model.modules():
            if hasattr(mod, "expert_bias"):
                mod.expert_bias.normal_(0, 0.3)
            c = getattr(mod, "config", None)
            if c is not None and hasattr(c, "_experts_implementation"):
                c._experts_implementation = "eager"
    return model.to(dtype).eval()


def model_states(model, X):
    """Every block's output (hooks) and the convolution states (the model's cache) after the
    last position of X (T x E), flattened."""
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
        if kind == "conv":  # K columns kept, the first unused
            got[(i, "conv")] = cache.get_conv_state(i)[0][:, 1:].flatten()
    return got


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def test_registered_and_steps_equal_the_model():
    """Block outputs against hooks and convolution states against the cache after every prefix
    of 11 tokens (float32, 1e-5 scaled by max(1, |v|)); attention blocks offer ``hidden``
    only; the head's logits equal the model's."""
    assert "lfm2_moe" in FAMILIES
    model = tiny()
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == "lfm2_moe"
    assert [lay.kind for lay in enc.layers] == KINDS
    assert enc.layers[0].readouts == ("hidden", "conv")
    assert enc.layers[1].readouts == ("hidden",)
    assert all(lay.tangent_rule == "generic" for lay in enc.layers)
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
        assert (enc.head(seqs[(3, "hidden")][:, 0]) - logits).abs().max() < 1e-4
    print(f"lfm2_moe: states worst {worst:.1e}")


def windows_average(fn, X, N, K, pairs, sizes):
    """Mean over targets t of d r_t / d x_{t-tau} (tau = 0..K within t's window) in window:N,
    ``fn(W)`` giving the T x D readouts (concatenated ``pairs``) of a window W from the initial
    state: {(layer, readout): (K+1) x D x E}."""
    sums = {p: np.zeros((K + 1, sizes[p], X.shape[1])) for p in pairs}
    count = np.zeros(K + 1)
    for w0 in range(0, X.shape[0] - N + 1, N):
        J = torch.autograd.functional.jacobian(fn, X[w0:w0 + N], vectorize=True)
        J = J.detach().double().numpy()
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
    """T x D readouts of a window by the model's own forward on each prefix."""
    def f(W):
        rows = []
        for t in range(W.shape[0]):
            st = model_states(model, W[:t + 1])
            rows.append(torch.cat([st[p] for p in pairs]))
        return torch.stack(rows)
    return f


def through_steps(enc, pairs):
    """T x D readouts of a window by the adapter's steps (the float64 oracle)."""
    def f(W):
        st, rows = enc.init_state(1, dtype=W.dtype), []
        for t in range(W.shape[0]):
            st = enc.step(W[t:t + 1], st)
            rows.append(torch.cat([enc.readout(st, i, n)[0] for i, n in pairs]))
        return torch.stack(rows)
    return f


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
def test_state_gradients_in_windows_equal_autograd(dtype, tol):
    """Delays 0..3 in window:5 over 10 tokens (two windows) of the top block's output (an
    attention block with experts) and the convolution state of block 2, against autograd
    through the model's forward (float32) or the adapter's steps (float64)."""
    tdt = getattr(torch, dtype)
    model = tiny(tdt)
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (10,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]
    pairs = [(3, "hidden"), (2, "conv")]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    if dtype == "float64":
        want = windows_average(through_steps(enc, pairs), X, N, K, pairs, sizes)
        with torch.no_grad():  # the model's float64 forward (norms rounded to float32)
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
        assert r.settings["method"] == "generic"
        err = rel_err(r.means(), want[(layer, readout)])
        worst = max(worst, err)
        assert err <= tol, (layer, readout, err)
    print(f"lfm2_moe {dtype}: gradients worst {worst:.1e}")


def test_stream_refused_in_one_line():
    enc = from_hf(tiny(), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError, match=r"lfm2_moe has attention blocks \(layers 1, 3\)"
                       ) as err:
        memlens.state_gradients(enc, ids, 2, options=RunOptions(bootstrap=Bootstrap(0)))
    assert "\n" not in str(err.value) and "window:N" in str(err.value)
