"""Granite-4.0 hybrid (granitemoehybrid) from Hugging Face transformers (issue 23): a tiny random
config (hidden 32, 3 layers: Mamba-2, attention, Mamba-2; GQA 4/2, rotary; experts 4 top 2 plus
the shared MLP; every Granite multiplier away from 1; parameters moved off their init).

Oracles: the model's own forward (block outputs by forward hooks after every prefix; SSM and
convolution states from its own cache; the logits) and autograd Jacobians through that forward
w.r.t. ``inputs_embeds`` for the state gradients in ``window:N`` (float32, 1e-5 relative);
float64 against autograd through the adapter's steps (1e-10; dense MLP there: the router rounds
its logits to float32 whatever the dtype).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "GraniteMoeHybridConfig"):
    pytest.skip("the installed transformers has no granitemoehybrid", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import FAMILIES, from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V = 64
TYPES = ["mamba", "attention", "mamba"]


def tiny(dtype=torch.float32, experts=4, rope=True):
    torch.manual_seed(0)
    cfg = transformers.GraniteMoeHybridConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=3, layer_types=TYPES,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=16,
        shared_intermediate_size=24, num_local_experts=experts, num_experts_per_tok=2,
        mamba_n_heads=8, mamba_d_head=8, mamba_n_groups=2, mamba_d_state=4, mamba_d_conv=3,
        mamba_expand=2, mamba_chunk_size=4, position_embedding_type="rope" if rope else None,
        embedding_multiplier=3.0, logits_scaling=2.5, residual_multiplier=0.6,
        attention_multiplier=0.3, max_position_embeddings=64)
    model = transformers.GraniteMoeHybridForCausalLM(cfg)
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
    for mod in model.modules():  # the fused experts kernel takes no float64
        c = getattr(mod, "config", None)
        if c is not None and hasattr(c, "_experts_implementation"):
            c._experts_implementation = "eager"
    return model.to(dtype).eval()


def model_states(model, X):
    """Every block's output (hooks) and the Mamba states (the model's cache) after the last
    position of X (T x E, the embedding rows: the model applies its embedding multiplier)."""
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
        if kind == "mamba":
            got[(i, "ssm")] = cache.get_recurrent_state(i)[0].flatten()
            got[(i, "conv")] = cache.get_conv_state(i)[0][:, 1:].flatten()  # first unused
    return got


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("rope", [True, False])
def test_blocks_states_and_logits_equal_the_model(rope):
    assert "granitemoehybrid" in FAMILIES
    model = tiny(rope=rope)
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == "granitemoehybrid"
    assert [lay.kind for lay in enc.layers] == ["mamba2", "attention", "mamba2"]
    assert enc.layers[0].readouts == ("hidden", "ssm", "conv")
    assert enc.layers[1].readouts == ("hidden",)
    assert all(lay.tangent_rule == "generic" for lay in enc.layers)
    assert enc.layers[0].units("head:1", "ssm").size == 32
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
        assert (enc.head(seqs[(2, "hidden")][:, 0]) - logits).abs().max() < 1e-5
    print(f"granitemoehybrid rope={rope}: states worst {worst:.1e}")


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
    """Experts on; delays 0..3 in window:5 over 10 tokens (two windows)."""
    model = tiny()
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (2 * N,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]
    pairs = [(2, "hidden"), (0, "ssm"), (2, "ssm")]
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
    print(f"granitemoehybrid float32: gradients worst {worst:.1e}")


def test_float64_against_autograd_through_the_steps():
    model = tiny(torch.float64, experts=0)
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(3))
    X = model.get_input_embeddings().weight.detach()[ids]
    with torch.no_grad():  # the model's own float64 forward agrees with the steps
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
    enc = from_hf(tiny(experts=0), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError) as err:
        memlens.state_gradients(enc, ids, 2)
    msg = str(err.value)
    assert "\n" not in msg and "granitemoehybrid has attention blocks (layers 1)" in msg
    assert "window:N" in msg
