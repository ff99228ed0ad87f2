"""OLMo-Hybrid (gated DeltaNet with separate q/k/v/a/b/g projections + post-norm OLMo-3
attention, dense MLPs) from Hugging Face transformers (issue 23): tiny random configs (hidden 32,
4 layers: DeltaNet, DeltaNet, attention, DeltaNet; 2 key / 4 value heads; parameters moved off
their init), in two variants: rotary attention with negative eigenvalues allowed (beta in
[0, 2], the config's default) and NoPE attention (no rotary: the released checkpoints) with
beta in [0, 1].

Oracles, as tests/test_hf_qwen3_next.py: the model's own forward (block outputs by forward hooks
after every prefix; the DeltaNet matrix states and convolution inputs from its own cache) and
autograd Jacobians through that forward w.r.t. ``inputs_embeds`` for the state gradients in
``window:N``. The model's own code runs its delta rule, gated norm and rotary cos / sin in
float32 whatever its dtype, so it is a float32-precise oracle; float64 is checked against
autograd through the adapter's steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "OlmoHybridConfig"):
    pytest.skip("the installed transformers has no olmo_hybrid", allow_module_level=True)

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")
V = 64
# as tests/test_hf_qwen3_next.py: the model's forward rounds to float32 inside (RMS norms, the
# chunked delta rule summed in another order than the step's recurrence, the gated norm) whatever
# its dtype: a float32-precise oracle, here up to a few 1e-5 apart on unit-scale random weights;
# the steps' exactness is checked in float64 (1e-10)
TOL = 5e-5
TYPES = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
VARIANTS = ["rope", "nope"]


def tiny(variant: str = "rope", dtype=torch.float32):
    """The tiny random model (eval mode): ``"rope"`` rotary attention, beta = 2 sigmoid(b);
    ``"nope"`` no rotary, beta = sigmoid(b)."""
    extra = {} if variant == "rope" else dict(
        rope_parameters={"rope_type": "default", "rope_theta": None},
        linear_allow_neg_eigval=False)
    torch.manual_seed(0)
    cfg = transformers.OlmoHybridConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=4, layer_types=TYPES,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=4,
        linear_value_head_dim=4, linear_conv_kernel_dim=4, max_position_embeddings=64,
        pad_token_id=None, eos_token_id=None, **extra)
    model = transformers.OlmoHybridForCausalLM(cfg)
    assert (model.model.rotary_emb is None) == (variant == "nope")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1, 0.2)  # w norms: around 1
            elif name.endswith(("A_log", "dt_bias")):
                p.normal_(0, 1)
            elif p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
    return model.to(dtype).eval()


def model_states(model, X):
    """Every block's output (hooks) and the DeltaNet states (the model's cache) after the last
    position of X (T x E), flattened."""
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
            got[(i, "memory")] = cache.get_recurrent_state(i, state_idx=0)[0].flatten()
            conv = cache.get_conv_state(i, state_idx=0)[0]
            got[(i, "conv")] = conv[:, 1:].flatten()  # K columns kept, the first unused
    return got


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("variant", VARIANTS)
def test_blocks_and_states_equal_the_model(variant):
    """In float64 (the model's own RMSNorms, delta rule and gated norm still round to float32);
    then the head's logits against the model's."""
    model = tiny(variant, torch.float64)
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == "olmo_hybrid"
    assert [lay.kind for lay in enc.layers] == ["gated_deltanet"] * 2 + ["attention",
                                                                          "gated_deltanet"]
    assert enc.layers[0].readouts == ("hidden", "memory", "conv")
    assert enc.layers[2].readouts == ("hidden",)
    assert enc.layers[0].beta_scale == (2.0 if variant == "rope" else 1.0)
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
    print(f"olmo_hybrid {variant}: states worst {worst:.1e}")


def test_per_head_units():
    enc = from_hf(tiny(), log=lambda m: None)
    lay = enc.layers[0]
    u = lay.units("head:2", "memory")
    assert u.size == 16 and u.index[0] == 32
    assert lay.unit_splits()["heads"] == [f"head:{h}" for h in range(4)]
    for bad, msg in (("head:4", "out of range"), ("head:x", "bad unit spec")):
        with pytest.raises(MemlensError, match=msg):
            lay.units(bad, "memory")
    with pytest.raises(MemlensError, match="memory readout"):
        lay.units("head:0", "conv")


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
    """Float32, the rotary variant with negative eigenvalues; one window of 5, then the start
    of the next."""
    model = tiny()
    enc = from_hf(model, log=lambda m: None)
    N, K = 5, 3
    ids = torch.randint(0, V, (N + 2,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]
    pairs = [(3, "hidden"), (1, "memory"), (0, "conv")]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    want = autograd_average(model, X, N, K, pairs, sizes)
    opts = RunOptions(dtype=torch.float32, bootstrap=Bootstrap(0))
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                    context=f"window:{N}")
        assert rel_err(r.means(), want[(layer, readout)]) <= TOL, (layer, readout)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_against_autograd_through_the_steps(variant):
    model = tiny(variant, torch.float64)
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
    assert rel_err(r.means(), want / cnt[:, None, None]) <= 1e-10


def test_stream_refused_in_one_line():
    enc = from_hf(tiny("nope"), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(4))
    with pytest.raises(MemlensError) as err:
        memlens.state_gradients(enc, ids, 2)
    assert "\n" not in str(err.value) and "window:N" in str(err.value)
