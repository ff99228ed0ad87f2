"""Hybrid families from Hugging Face transformers (issue 23, item 2): Mamba mixers and attention
blocks, analysed in a regime that resets (``window:N``, ``sentence``).

Oracles, as in tests/test_hf_families.py: the models' own forward over a window (block outputs
by forward hooks after every prefix, Mamba states from the model's own cache) on tiny random
configs (hidden 32, 3-4 layers with attention and Mamba blocks, vocabulary 128; parameters
moved off their init; nothing downloaded), and autograd Jacobians through that forward w.r.t.
``inputs_embeds`` for the state gradients in ``window:N``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import FAMILIES as REGISTERED  # noqa: E402
from memlens.models.hf import from_hf  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

# the tiny random models' gradients grow with delay: the analyses say so, rightly
pytestmark = pytest.mark.filterwarnings("ignore::memlens.core.errors.TrustWarning")

V, H = 128, 32
FAMILIES = ["bamba", "jamba", "lfm2"]
# the kind of each block of the tiny configs below, and the recurrent state checked
KINDS = {"bamba": ["mamba2", "attention", "mamba2"],
         "jamba": ["mamba", "attention", "mamba", "attention"],
         "lfm2": ["short_conv", "attention", "short_conv"]}
STATE = {"bamba": "ssm", "jamba": "ssm", "lfm2": "conv"}
READOUTS = {"mamba2": ("hidden", "ssm", "conv"), "mamba": ("hidden", "ssm", "conv"),
            "short_conv": ("hidden", "conv"), "attention": ("hidden",)}
CONFIGS = {"bamba": "BambaConfig", "jamba": "JambaConfig", "lfm2": "Lfm2Config"}


def _config(family: str):
    if family == "bamba":  # 8 heads of 8 channels in 2 groups, chunks of 4; GQA, partial rotary
        return transformers.BambaConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, mamba_n_heads=8, mamba_d_head=8,
            mamba_n_groups=2, mamba_d_state=4, mamba_d_conv=3, mamba_expand=2,
            mamba_chunk_size=4, attn_layer_indices=[1], max_position_embeddings=64)
    if family == "lfm2":  # gated short convolutions around one attention block (q/k norms)
        return transformers.Lfm2Config(
            vocab_size=V, hidden_size=H, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, conv_L_cache=3, conv_bias=True,
            layer_types=["conv", "full_attention", "conv"], max_position_embeddings=64)
    # attention at 1 and 3, experts (4, top 2) on the Mamba blocks 0 and 2
    return transformers.JambaConfig(
        vocab_size=V, hidden_size=H, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, num_experts=4, num_experts_per_tok=2,
        expert_layer_period=2, expert_layer_offset=0, attn_layer_period=2, attn_layer_offset=1,
        mamba_d_state=4, mamba_d_conv=3, mamba_expand=2, mamba_dt_rank=4)


def tiny(family: str, dtype=torch.float32, seed: int = 0):
    """A tiny random hybrid (eval mode), its parameters moved off their init so that every term
    matters: unit-scale projections (attention far from uniform, experts routed differently per
    token), norm weights around 1, spread decays and skips."""
    if not hasattr(transformers, CONFIGS[family]):
        pytest.skip(f"the installed transformers has no {family}")
    torch.manual_seed(seed)
    model = getattr(transformers, CONFIGS[family].replace("Config", "ForCausalLM"))(
        _config(family))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.normal_(1, 0.2)
            elif name.endswith("A_log"):
                p.normal_(-1, 0.5)
            elif name.endswith(("D", "dt_bias", "dt_proj.bias")):
                p.normal_(0, 1)
            elif p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
    if dtype == torch.float64:  # the fused experts kernel (grouped_mm) takes no float64
        model.config._experts_implementation = "eager"
    return model.to(dtype).eval()


def model_states(model, X: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """Every block's output (forward hooks) and the Mamba blocks' states (the model's own
    cache) after the last position of X (T x E), from the model's own forward, flattened."""
    blocks = model.model.layers
    outs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(
        lambda _m, _i, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
        for i, b in enumerate(blocks)]
    try:
        res = model(inputs_embeds=X[None], use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    got, cache = {}, res.past_key_values
    for i, b in enumerate(blocks):
        got[(i, "hidden")] = outs[i][0, -1]
        if hasattr(b, "mamba"):
            got[(i, "ssm")] = cache.get_recurrent_state(i)[0].flatten()
        if hasattr(b, "mamba") or hasattr(b, "conv"):
            # HF's conv cache keeps K columns (zeros before the first token), the first unused
            got[(i, "conv")] = cache.get_conv_state(i)[0][:, 1:].flatten()
    return got


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("family", FAMILIES)
def test_registered_and_step_equals_model_forward(family):
    """Block outputs against hooks and Mamba states against the cache, after every prefix of a
    window; the attention blocks offer ``hidden`` only; the logits equal the model's."""
    assert family in REGISTERED
    model = tiny(family)
    enc = from_hf(model, log=lambda m: pytest.fail(m))
    assert enc.model_type == family
    assert [lay.kind for lay in enc.layers] == KINDS[family]
    assert [d["kind"] for d in enc.describe()["layers"]] == KINDS[family]  # the listing
    for lay in enc.layers:
        assert lay.readouts == READOUTS[lay.kind] and lay.tangent_rule == "generic"
    with pytest.raises(MemlensError, match=r"layer 1 \(attention\): choose from hidden"):
        Site(1, "key").resolve(enc)
    ids = torch.randint(0, V, (11,), generator=torch.Generator().manual_seed(1))
    seqs, _ = enc.states(ids[:, None])
    X = model.get_input_embeddings().weight.detach()[ids]
    worst = 0.0
    with torch.no_grad():
        for t in range(len(ids)):  # after every prefix
            for (i, name), w in model_states(model, X[:t + 1]).items():
                got = seqs[(i, name)][t, 0]
                assert got.shape == w.shape, (i, name, t)
                err = (got - w).abs().max().item() / max(1.0, w.abs().max().item())
                worst = max(worst, err)
                assert err <= 1e-5, (family, t, i, name, err)
        logits = model(ids[None], use_cache=False).logits[0]
        assert (enc.head(seqs[(enc.num_layers - 1, "hidden")][:, 0]) - logits).abs().max() < 1e-4
    print(f"{family}: states worst {worst:.1e}")


def windows_autograd_average(model, X: torch.Tensor, N: int, K: int, pairs, sizes) -> dict:
    """Mean over targets t of d r_t / d x_{t-tau} (tau = 0..K, t - tau in t's window) in
    ``window:N`` (windows side by side, each from the initial state), by autograd through the
    model's own forward on each prefix of each window: {(layer, readout): (K+1) x D x E}."""
    sums: dict = {}
    count = np.zeros(K + 1)
    for w0 in range(0, X.shape[0] - N + 1, N):
        W = X[w0:w0 + N]
        for t in range(N):
            def f(Xp):
                st = model_states(model, Xp)
                return torch.cat([st[p] for p in pairs])

            J = torch.autograd.functional.jacobian(f, W[:t + 1], vectorize=True)
            off = 0
            for p in pairs:
                block = J[off:off + sizes[p]].detach().double().numpy()
                off += sizes[p]
                acc = sums.setdefault(p, np.zeros((K + 1, sizes[p], X.shape[1])))
                for tau in range(min(t, K) + 1):
                    acc[tau] += block[:, t - tau]
            count[:min(t, K) + 1] += 1
    return {p: s / count[:, None, None] for p, s in sums.items()}


def windows_adapter_average(enc, X, N, K, pairs, sizes) -> dict:
    """The same average by autograd through the adapter's steps (the float64 oracle: the
    models' own code rounds parts to float32 whatever their dtype)."""
    sums = {p: np.zeros((K + 1, sizes[p], X.shape[1])) for p in pairs}
    count = np.zeros(K + 1)
    for w0 in range(0, X.shape[0] - N + 1, N):
        def f(Xa):
            st, out = enc.init_state(1, dtype=Xa.dtype), []
            for t in range(Xa.shape[0]):
                st = enc.step(Xa[t:t + 1], st)
                out.append(torch.cat([enc.readout(st, i, n)[0] for i, n in pairs]))
            return torch.stack(out)

        J = torch.autograd.functional.jacobian(f, X[w0:w0 + N], vectorize=True).numpy()
        off = 0
        for p in pairs:
            for t in range(N):
                for tau in range(min(t, K) + 1):
                    sums[p][tau] += J[t, off:off + sizes[p], t - tau]
            off += sizes[p]
        for t in range(N):
            count[:min(t, K) + 1] += 1
    return {p: s / count[:, None, None] for p, s in sums.items()}


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("family", FAMILIES)
def test_state_gradients_in_windows_equal_autograd(family, dtype, tol):
    """Delays 0..3 in window:5 over 10 tokens (two windows: the key/value caches restart) of
    the top block's output and the recurrent state (ssm; lfm2: conv) of blocks 0 and 2,
    against autograd through the model's forward on each window (float32) or the adapter's
    steps (float64, the model's own float64 forward agreeing with the steps to float32
    precision)."""
    tdt = getattr(torch, dtype)
    if family == "jamba" and dtype == "float64":
        # the experts' router takes its softmax in float32 whatever the dtype (the model's own
        # module): derivatives through it agree to float32 precision only
        tol = 1e-7
    model = tiny(family, tdt)
    enc = from_hf(model)
    ids = torch.randint(0, V, (10,), generator=torch.Generator().manual_seed(2))
    N, K = 5, 3
    X = model.get_input_embeddings().weight.detach()[ids].to(tdt)
    top = enc.num_layers - 1
    pairs = [(top, "hidden"), (0, STATE[family]), (2, STATE[family])]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    if dtype == "float64":
        want = windows_adapter_average(enc, X, N, K, pairs, sizes)
        with torch.no_grad():
            ref = model_states(model, X[:N])
            st = enc.init_state(1, dtype=tdt)
            for t in range(N):
                st = enc.step(X[t:t + 1], st)
        assert max(rel_err(enc.readout(st, i, n)[0], ref[(i, n)]) for i, n in pairs) < 1e-5
    else:
        want = windows_autograd_average(model, X, N, K, pairs, sizes)
    opts = RunOptions(dtype=dtype, bootstrap=Bootstrap(0))
    worst = 0.0
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                    context=f"window:{N}")
        assert r.settings["method"] == "generic"
        err = rel_err(r.means(), want[(layer, readout)])
        worst = max(worst, err)
        assert err <= tol, (layer, readout, err)
    print(f"{family} {dtype}: gradients worst {worst:.1e}")


def test_sentence_regime_restarts_the_caches():
    """Under ``sentence`` every sentence runs from the initial state (empty caches): the
    gradients equal those of the same sentences analysed one by one."""
    model = tiny("bamba")
    enc = from_hf(model)
    g = torch.Generator().manual_seed(4)
    a, b = torch.randint(1, V, (6,), generator=g), torch.randint(1, V, (7,), generator=g)
    opts = RunOptions(bootstrap=Bootstrap(0))
    from memlens.models.inputs import Stream

    both = Stream(torch.cat([a, b]), sentences=[0, 6])
    r = memlens.state_gradients(enc, both, 2, site=Site(-1), options=opts, context="sentence")
    ra = memlens.state_gradients(enc, a, 2, site=Site(-1), options=opts, context="window:6")
    rb = memlens.state_gradients(enc, b, 2, site=Site(-1), options=opts, context="window:7")
    # per-delay means are pair-count weighted: sentence a has 6 - k pairs at delay k, b 7 - k
    na, nb = np.array([6, 5, 4]), np.array([7, 6, 5])
    want = ((ra.means() * na[:, None, None] + rb.means() * nb[:, None, None])
            / (na + nb)[:, None, None])
    assert rel_err(r.means(), want) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_and_segment_refused_in_one_line(family):
    """A hybrid is refused in the regimes that carry the state over the whole stream, in
    gradients and signatures, naming the attention blocks; ablation (windows) runs."""
    model = tiny(family)
    enc = from_hf(model)
    layers = ", ".join(str(i) for i, k in enumerate(KINDS[family]) if k == "attention")
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(6))
    opts = RunOptions(bootstrap=Bootstrap(0))
    for context in (None, "stream", "segment:8"):
        with pytest.raises(MemlensError, match=rf"{family} has attention blocks \(layers "
                           rf"{layers}\): its context grows without bound .*window:N") as info:
            memlens.state_gradients(enc, ids, 2, site=Site(0, STATE[family]), options=opts,
                                    context=context)
        assert "\n" not in str(info.value)
        with pytest.raises(MemlensError, match="attention blocks"):
            memlens.memory_signature(enc, ids, ids, 2, site=Site(0), context=context,
                                     options=opts)
    sig = memlens.memory_signature(enc, ids, ids, 2, site=Site(0), context="window:10",
                                   options=opts)
    assert np.isfinite(np.asarray(sig.accuracy)).all()
    # ablation: every target after the 8 tokens before it; the unperturbed loss is the
    # model's own (its forward on each window)
    short = ids[:20]
    res = memlens.context_ablation(enc, short, distances=[1, 4], perturbation="shuffle",
                                   context="window:8", targets=None, options=opts)
    with torch.no_grad():
        own = np.mean([torch.nn.functional.cross_entropy(
            model(short[None, t - 8:t], use_cache=False).logits[0, -1], short[t]).item()
            for t in range(8, 20)])
    frame = res.to_frame()
    assert np.allclose(frame["base_nats"].to_numpy(dtype=float), own, rtol=1e-5)
    assert np.isfinite(frame["increase_nats"].to_numpy(dtype=float)).all()


def cli(args, capsys):
    from memlens.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def test_cli_refuses_stream_and_runs_windows(tmp_path, capsys):
    """``memlens gradients --model hf:DIR`` of a saved hybrid: exit 2 with one line under the
    default stream regime, nothing written; a result under --context window:N, with the
    blocks' kinds in result.json."""
    model = tiny("bamba")
    model.save_pretrained(tmp_path / "hy")
    capsys.readouterr()  # transformers' own progress lines of the save
    (tmp_path / "c.txt").write_text("a b c d\n" * 30)
    (tmp_path / "v.txt").write_text("".join(f"{w}\n" for w in
                                            ["a", "b", "c", "d", "<eos>"] +
                                            [f"w{i}" for i in range(V - 5)]))
    common = ["gradients", "--model", f"hf:{tmp_path / 'hy'}", "--vocab", tmp_path / "v.txt",
              "--corpus", tmp_path / "c.txt", "--max-delay", "2", "--bootstrap", "0",
              "--no-progress", "--max-tokens", "40"]
    rc, io = cli([*common, "--out", tmp_path / "s"], capsys)
    assert rc == 2 and len(io.err.strip().splitlines()) == 1, io.err
    assert "bamba has attention blocks (layers 1)" in io.err and "window:N" in io.err
    assert not (tmp_path / "s").exists()
    rc, io = cli([*common, "--context", "window:8", "--out", tmp_path / "w"], capsys)
    assert rc == 0, io.err
    doc = json.loads((tmp_path / "w" / "result.json").read_text())
    assert doc["model"]["arch"] == "hf-bamba"
    assert doc["model"]["blocks"] == ["mamba2", "attention", "mamba2"]
    sig = ["signatures", "--model", f"hf:{tmp_path / 'hy'}", "--vocab", tmp_path / "v.txt",
           "--corpus", tmp_path / "c.txt", "--max-delay", "2", "--bootstrap", "0",
           "--no-progress", "--layer", "0"]
    rc, io = cli([*sig, "--out", tmp_path / "ss"], capsys)
    assert rc == 2 and len(io.err.strip().splitlines()) == 1, io.err
    assert "attention blocks (layers 1)" in io.err and not (tmp_path / "ss").exists()
    rc, io = cli([*sig, "--context", "window:10", "--out", tmp_path / "sw"], capsys)
    assert rc == 0, io.err


def test_interrupted_gradients_resume_mid_window(tmp_path):
    """A checkpoint taken inside a window holds caches of that window's length (grown from
    the empty ones of a fresh run): resuming continues to the uninterrupted result."""
    from memlens.runtime.options import Checkpointing
    from memlens.runtime.progress import Interrupted

    enc = from_hf(tiny("bamba"), log=lambda m: None)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(7))
    opts = dict(dtype=torch.float32, bootstrap=Bootstrap(0))
    full = memlens.state_gradients(enc, ids, 2, context="window:8", options=RunOptions(**opts))
    ck = tmp_path / "ck.pt"
    with pytest.raises(Interrupted):
        memlens.state_gradients(enc, ids, 2, context="window:8", options=RunOptions(
            **opts, checkpoint=Checkpointing(ck, stop_after=11)))
    again = memlens.state_gradients(enc, ids, 2, context="window:8", options=RunOptions(
        **opts, checkpoint=Checkpointing(ck, resume=True)))
    assert np.array_equal(again.raw.sums, full.raw.sums)
