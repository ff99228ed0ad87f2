"""Nemotron-H (nemotron_h) from Hugging Face transformers (issue 23): a tiny random config
(hidden 32, 4 single-mixer blocks M * - E: Mamba-2, attention without positions, MLP, experts
4 top 2 with a shared expert; parameters moved off their init).

Oracles: the model's own forward (block outputs by forward hooks after every prefix; SSM and
convolution states from its own cache; the logits) and autograd Jacobians through that forward
w.r.t. ``inputs_embeds`` for the state gradients in ``window:N`` (float32, 1e-5 relative);
float64 against autograd through the adapter's steps (1e-10; MLP in place of the experts there:
the router scores in float32 whatever the dtype).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "NemotronHConfig"):
    pytest.skip("the installed transformers has no nemotron_h", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import FAMILIES, from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V = 64
TYPES = ["mamba", "attention", "mlp", "moe"]


def tiny(dtype=torch.float32, experts=4):
    torch.manual_seed(0)
    types = TYPES if experts else TYPES[:3] + ["mlp"]
    cfg = transformers.NemotronHConfig(
        vocab_size=V, hidden_size=32, layers_block_type=types, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, mamba_num_heads=8,
        mamba_head_dim=8, n_groups=2, ssm_state_size=4, conv_kernel=3, chunk_size=4,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
        moe_shared_expert_intermediate_size=16, n_group=1, topk_group=1,
        max_position_embeddings=64)
    model = transformers.NemotronHForCausalLM(cfg)
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
    position of X (T x E, the embedding rows)."""
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


def test_blocks_states_and_logits_equal_the_model():
    assert "nemotron_h" in FAMILIES
    model = tiny()
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == "nemotron_h"
    assert [lay.kind for lay in enc.layers] == ["mamba2", "attention", "mlp", "moe"]
    assert enc.layers[0].readouts == ("hidden", "ssm", "conv")
    assert all(lay.readouts == ("hidden",) for lay in enc.layers[1:])
    assert enc.layers[0].tangent_rule == "written"  # the block is exactly Mamba-2's
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
        assert (enc.head(seqs[(3, "hidden")][:, 0]) - logits).abs().max() < 1e-5
    print(f"nemotron_h: states worst {worst:.1e}")


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
    pairs = [(3, "hidden"), (0, "ssm"), (1, "hidden")]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    want = autograd_average(model, X, N, K, pairs, sizes)
    opts = RunOptions(dtype=torch.float32, bootstrap=Bootstrap(0))
    worst = 0.0
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                    context=f"window:{N}")
        err = rel_err(r.means(), want[(layer, readout)])
        worst = max(worst, err)
        assert err <= 1e-5, (layer, readout, err)
    print(f"nemotron_h float32: gradients worst {worst:.1e}")


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
        assert rel_err(enc.readout(st, 3, "hidden")[0], ref[(3, "hidden")]) < 1e-5

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
    assert rel_err(r.means(), want / cnt[:, None, None]) <= 1e-10


def test_stream_refused_in_one_line():
    enc = from_hf(tiny(experts=0), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError) as err:
        memlens.state_gradients(enc, ids, 2)
    msg = str(err.value)
    assert "\n" not in msg and "nemotron_h has attention blocks (layers 1)" in msg
    assert "window:N" in msg
