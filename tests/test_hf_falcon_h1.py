"""Falcon-H1 (falcon_h1) from Hugging Face transformers: a tiny random config (hidden 32, 3
layers, each a Mamba-2 mixer and a GQA 4/2 rotary attention side by side, then an MLP; every
Falcon-H1 multiplier away from 1, the muP vector's five parts distinct; parameters moved off
their init), with the mixer's gated RMSNorm (norm before or after the gate) or without it.

Oracles: the model's own forward (block outputs by forward hooks after every prefix; SSM and
convolution states and the key/value cache from its own cache; the logits) and autograd
Jacobians through that forward w.r.t. ``inputs_embeds`` (the embedding rows times the
embedding multiplier, which the model applies to ``input_ids`` only) for the state gradients in
``window:N`` (float32, 1e-5 relative); float64 against autograd through the adapter's steps
(1e-10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "FalconH1Config"):
    pytest.skip("the installed transformers has no falcon_h1", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import FAMILIES, from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V, L, EMB = 64, 3, 2.0


def tiny(dtype=torch.float32, rms_norm=True, before_gate=True):
    torch.manual_seed(0)
    cfg = transformers.FalconH1Config(
        vocab_size=V, hidden_size=32, num_hidden_layers=L, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, mamba_d_ssm=64, mamba_n_heads=8,
        mamba_d_head=8, mamba_n_groups=2, mamba_d_state=4, mamba_d_conv=3, mamba_chunk_size=4,
        mamba_rms_norm=rms_norm, mamba_norm_before_gate=before_gate, mamba_conv_bias=True,
        embedding_multiplier=EMB, lm_head_multiplier=0.7, key_multiplier=0.6,
        attention_in_multiplier=1.3, attention_out_multiplier=0.8, ssm_in_multiplier=1.2,
        ssm_out_multiplier=0.7, ssm_multipliers=[0.9, 1.1, 0.8, 1.25, 0.6],
        mlp_multipliers=[1.3, 0.7], max_position_embeddings=64)
    model = transformers.FalconH1ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1, 0.2)
            elif name.endswith("A_log"):
                p.normal_(-1, 0.5)
            elif name.endswith(("D", "dt_bias")):
                p.normal_(0, 1)
            elif p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
            elif p.dim() == 1:  # biases (conv)
                p.normal_(0, 0.3)
    return model.to(dtype).eval()


def model_states(model, X, kv=False):
    """Every block's output (hooks), the Mamba states and (kv) the key/value cache (the
    model's cache) after the last position of X (T x E, the embedding rows: passed as
    ``inputs_embeds`` times the embedding multiplier, as the model's forward on ids does)."""
    outs = {}
    hooks = [b.register_forward_hook(
        lambda _m, _i, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
        for i, b in enumerate(model.model.layers)]
    try:
        res = model(inputs_embeds=X[None] * model.model.embedding_multiplier, use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    got, cache = {}, res.past_key_values
    for i in range(L):
        got[(i, "hidden")] = outs[i][0, -1]
        got[(i, "ssm")] = cache.get_recurrent_state(i)[0].flatten()
        got[(i, "conv")] = cache.get_conv_state(i)[0][:, 1:].flatten()  # first unused
        if kv:  # B x kv_heads x T x d -> T x kv_heads x d (the adapter's layout)
            got[(i, "key")] = cache.layers[i].keys[0].transpose(0, 1)
            got[(i, "value")] = cache.layers[i].values[0].transpose(0, 1)
    return got


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("rms_norm,before_gate", [(True, True), (True, False), (False, True)])
def test_blocks_states_cache_and_logits_equal_the_model(rms_norm, before_gate):
    assert "falcon_h1" in FAMILIES
    model = tiny(rms_norm=rms_norm, before_gate=before_gate)
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == "falcon_h1"
    assert [lay.kind for lay in enc.layers] == ["mamba2+attention"] * L
    assert enc.layers[0].readouts == ("hidden", "ssm", "conv")
    assert all(lay.tangent_rule == "generic" for lay in enc.layers)
    assert enc.layers[1].units("head:1", "ssm").size == 32
    ids = torch.randint(0, V, (11,), generator=torch.Generator().manual_seed(1))
    seqs, _ = enc.states(ids[:, None])
    X = model.get_input_embeddings().weight.detach()[ids]
    worst = 0.0
    with torch.no_grad():
        st = enc.init_state(1)
        for t in range(len(ids)):
            st = enc.step(X[t:t + 1], st)
            want = model_states(model, X[:t + 1], kv=True)
            for (i, name), w in want.items():
                got = st[i][name][0] if name in ("key", "value") else seqs[(i, name)][t, 0]
                assert got.shape == w.shape, (i, name)
                err = (got - w).abs().max().item() / max(1.0, w.abs().max().item())
                worst = max(worst, err)
                assert err <= 1e-5, (t, i, name, err)
        logits = model(ids[None], use_cache=False).logits[0]
        assert (enc.head(seqs[(L - 1, "hidden")][:, 0]) - logits).abs().max() < 1e-5
    print(f"falcon_h1 rms_norm={rms_norm} before_gate={before_gate}: states worst {worst:.1e}")


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
    """Delays 0..3 in window:5 over 10 tokens (two windows)."""
    model = tiny()
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (2 * N,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]
    pairs = [(2, "hidden"), (0, "ssm"), (2, "ssm"), (1, "conv")]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    want = autograd_average(model, X, N, K, pairs, sizes)
    opts = RunOptions(dtype=torch.float32, bootstrap=Bootstrap(0))
    worst = 0.0
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                    context=f"window:{N}")
        assert r.settings["method"] == "generic"
        err = rel_err(r.means(), want[(layer, readout)])
        worst = max(worst, err)
        assert err <= 1e-5, (layer, readout, err)
    print(f"falcon_h1 float32: gradients worst {worst:.1e}")


def test_float64_against_autograd_through_the_steps():
    model = tiny(torch.float64)
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(3))
    X = model.get_input_embeddings().weight.detach()[ids]
    # the model's own float64 forward agrees with the steps to float32 rounding (its gated
    # RMSNorm and A = -exp(A_log.float()) compute in float32 whatever the dtype)
    with torch.no_grad():
        ref = model_states(model, X)
        st = enc.init_state(1, dtype=torch.float64)
        for t in range(N):
            st = enc.step(X[t:t + 1], st)
        assert rel_err(enc.readout(st, 2, "hidden")[0], ref[(2, "hidden")]) < 1e-5

    def f(Xa):
        st, out = enc.init_state(1, dtype=Xa.dtype), []
        for t in range(Xa.shape[0]):
            st = enc.step(Xa[t:t + 1], st)
            out.append(enc.readout(st, 2, "hidden")[0])
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
    assert rel_err(r.means(), want / cnt[:, None, None]) <= 1e-10


def test_stream_refused_in_one_line():
    enc = from_hf(tiny(), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError) as err:
        memlens.state_gradients(enc, ids, 2)
    msg = str(err.value)
    assert "\n" not in msg and "falcon_h1 has attention blocks (layers 0, 1, 2)" in msg
    assert "window:N" in msg
