"""FalconMamba and Mamba-2 from Hugging Face transformers (issue 23, part A), precision and
messages (issue 23, item 3).

Oracles, as in tests/test_hf.py: the models' own forward over a sequence (block outputs by
forward hooks, states from the model's own cache after every prefix) on tiny random configs
(hidden 32, 2 layers, vocabulary 128; nothing downloaded), and autograd Jacobians through
that forward w.r.t. ``inputs_embeds`` for the state gradients.
"""

from __future__ import annotations

import json

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
FAMILIES = ["falcon_mamba", "mamba2"]
COMPONENTS = {"falcon_mamba": ["hidden", "ssm", "conv"], "mamba2": ["hidden", "ssm", "conv"]}


def tiny(family: str, dtype=torch.float32, seed: int = 0):
    """A tiny random model of one family (eval mode), its parameters moved off their init so
    that every term of the recurrence matters."""
    if not hasattr(transformers, {"falcon_mamba": "FalconMambaConfig",
                                  "mamba2": "Mamba2Config"}[family]):
        pytest.skip(f"the installed transformers has no {family}")
    torch.manual_seed(seed)
    if family == "falcon_mamba":
        cfg = transformers.FalconMambaConfig(
            vocab_size=V, hidden_size=H, state_size=4, num_hidden_layers=2, expand=2,
            conv_kernel=3, time_step_rank=4, residual_in_fp32=False)
        model = transformers.FalconMambaForCausalLM(cfg)
    else:  # 8 heads of 8 channels in 2 groups; chunks of 4, so the chunked scan has several
        cfg = transformers.Mamba2Config(
            vocab_size=V, hidden_size=H, num_hidden_layers=2, num_heads=8, head_dim=8,
            expand=2, n_groups=2, state_size=4, conv_kernel=3, chunk_size=4,
            residual_in_fp32=False)
        model = transformers.Mamba2ForCausalLM(cfg)
    with torch.no_grad():
        for b in model.backbone.layers:
            mix = b.mixer
            mix.A_log.normal_(-1, 0.5)
            mix.D.normal_(0, 1)
            b.norm.weight.normal_(1, 0.2)
            if family == "mamba2":
                mix.dt_bias.normal_(0, 1)
                mix.norm.weight.normal_(1, 0.2)
            else:
                mix.dt_proj.bias.normal_(0, 1)
    return model.to(dtype).eval()


def model_states(model, X: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """Every block's output (forward hooks) and state components (the model's own cache)
    after the last position of X (T x E), from the model's own forward, each flattened."""
    blocks = model.backbone.layers
    outs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o))
             for i, b in enumerate(blocks)]
    try:
        res = model(inputs_embeds=X[None], use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    got, cache = {}, res.cache_params
    for i in range(len(blocks)):
        got[(i, "hidden")] = outs[i][0, -1]
        got[(i, "ssm")] = cache.get_recurrent_state(i)[0].flatten()
        # HF's conv cache keeps K columns (zeros before the first token), the first unused
        got[(i, "conv")] = cache.get_conv_state(i)[0][:, 1:].flatten()
    return got


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("family", FAMILIES)
def test_registered_and_step_equals_model_forward(family):
    assert family in REGISTERED
    model = tiny(family)
    enc = from_hf(model, log=lambda m: pytest.fail(m))  # float32: no precision notice
    assert enc.model_type == family and enc.weights_dtype == "float32"
    assert [lay.readouts for lay in enc.layers][0] == tuple(COMPONENTS[family])
    lay = enc.layers[0]
    assert lay.tangent_rule == "written"  # both families have a written-out rule
    assert all(r.linear for r in lay.readout_specs().values()) and lay.memory_readout == "hidden"
    ids = torch.randint(0, V, (13,), generator=torch.Generator().manual_seed(1))
    seqs, _ = enc.states(ids[:, None])
    X = model.get_input_embeddings().weight.detach()[ids]
    with torch.no_grad():
        for t in range(len(ids)):  # after every prefix
            for (i, name), w in model_states(model, X[:t + 1]).items():
                got = seqs[(i, name)][t, 0]
                assert got.shape == w.shape, (i, name, t)
                err = (got - w).abs().max().item()
                assert err <= 1e-5 * max(1.0, w.abs().max().item()), (family, t, i, name, err)
        logits = model(ids[None], use_cache=False).logits[0]
        assert (enc.head(seqs[(enc.num_layers - 1, "hidden")][:, 0]) - logits).abs().max() < 1e-5


def autograd_average(model, X: torch.Tensor, K: int, pairs, sizes) -> dict:
    """Mean over t of d r_t / d x_{t-tau} (tau = 0..K) by autograd through the model's own
    forward on each prefix X[:t+1]: {(layer, readout): (K+1) x D x E}."""
    sums: dict = {}
    count = np.zeros(K + 1)
    for t in range(X.shape[0]):
        def f(Xp):
            st = model_states(model, Xp)
            return torch.cat([st[p] for p in pairs])

        J = torch.autograd.functional.jacobian(f, X[:t + 1], vectorize=True)  # D x t+1 x E
        off = 0
        for p in pairs:
            block = J[off:off + sizes[p]].detach().numpy()
            off += sizes[p]
            acc = sums.setdefault(p, np.zeros((K + 1, sizes[p], X.shape[1])))
            for tau in range(min(t, K) + 1):
                acc[tau] += block[:, t - tau]
        count[:min(t, K) + 1] += 1
    return {p: s / count[:, None, None] for p, s in sums.items()}


def adapter_average(enc, X, K, pairs, sizes) -> dict:
    """The same average by autograd through the adapter's step sequence (float64: the models'
    own code rounds parts to float32 whatever their dtype)."""
    def f(Xa):
        st, out = enc.init_state(1, dtype=Xa.dtype), []
        for t in range(Xa.shape[0]):
            st = enc.step(Xa[t:t + 1], st)
            out.append(torch.cat([enc.readout(st, i, n)[0] for i, n in pairs]))
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(f, X, vectorize=True).numpy()  # T x D x T x E
    out, off = {}, 0
    for p in pairs:
        sums, cnt = np.zeros((K + 1, sizes[p], X.shape[1])), np.zeros(K + 1)
        for t in range(X.shape[0]):
            for tau in range(min(t, K) + 1):
                sums[tau] += J[t, off:off + sizes[p], t - tau]
                cnt[tau] += 1
        out[p] = sums / cnt[:, None, None]
        off += sizes[p]
    return out


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float64", 1e-9)])
@pytest.mark.parametrize("family", FAMILIES)
def test_state_gradients_equal_autograd_through_model(family, dtype, tol):
    """Delays 0..3, every readout of the top block and block 0's output, against autograd
    through the model's forward (float32) or the adapter's steps (float64, checked against
    the model's own float64 forward to float32 precision)."""
    tdt = getattr(torch, dtype)
    model = tiny(family, tdt)
    enc = from_hf(model)
    ids = torch.randint(0, V, (7,), generator=torch.Generator().manual_seed(2))
    K = 3
    X = model.get_input_embeddings().weight.detach()[ids].to(tdt)
    pairs = [(0, "hidden")] + [(1, n) for n in COMPONENTS[family]]
    sizes = {p: enc.layers[p[0]].readout_size(p[1]) for p in pairs}
    if dtype == "float64":
        want = adapter_average(enc, X, K, pairs, sizes)
        with torch.no_grad():
            ref = model_states(model, X)
            st = enc.init_state(1, dtype=tdt)
            for t in range(X.shape[0]):
                st = enc.step(X[t:t + 1], st)
        assert max(rel_err(enc.readout(st, i, n)[0], ref[(i, n)]) for i, n in pairs) < 1e-5
    else:
        want = autograd_average(model, X, K, pairs, sizes)
    opts = RunOptions(dtype=dtype, bootstrap=Bootstrap(0))
    for layer, readout in pairs:
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts)
        assert r.settings["method"] == "hand"  # the written-out rules (jvp_step)
        assert rel_err(r.means(), want[(layer, readout)]) <= tol, (layer, readout)
        # torch.func.jvp through the step: the same answer
        if layer == pairs[0][0]:
            g = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                        method="generic")
            assert rel_err(g.means(), want[(layer, readout)]) <= tol, (layer, readout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_falcon_written_out_jvp_equals_torch_func_jvp(dtype):
    """FalconMambaLayer.jvp_step (Mamba's rule plus the dt, B, C norms' derivative) against
    torch.func.jvp of its step, at a state reached after a few tokens."""
    layer = from_hf(tiny("falcon_mamba", dtype)).layers[1]
    g = torch.Generator().manual_seed(5)
    st = layer.init_state(1, dtype=dtype)
    for _ in range(4):
        st = layer.step(torch.randn(1, layer.input_size, generator=g, dtype=dtype), st)
    x = torch.randn(1, layer.input_size, generator=g, dtype=dtype)
    n = 5
    dx = torch.randn(n, layer.input_size, generator=g, dtype=dtype)
    dst = {k: torch.randn(n, *v.shape[1:], generator=g, dtype=dtype) for k, v in st.items()}
    new, tan = layer.jvp_step(x, st, dx, dst)
    names = list(st)

    def fn(xx, *leaves):
        out = layer.step(xx, dict(zip(names, leaves)))
        return tuple(out[k] for k in names)

    batch = [v.expand(n, *v.shape[1:]).contiguous() for v in st.values()]
    primal, want = torch.func.jvp(fn, (x.expand(n, -1).contiguous(), *batch), (dx, *dst.values()))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for k, p, w in zip(names, primal, want):
        assert torch.allclose(new[k].expand_as(p), p, atol=tol, rtol=tol), k
        assert rel_err(tan[k].detach(), w.detach()) < tol, k


def test_mamba2_per_head_units():
    """``head:H`` on the ssm readout is head H's state (as the cache holds it), in every
    analysis that takes a site; the ``heads`` split lists one set per head."""
    model = tiny("mamba2")
    enc = from_hf(model)
    lay = enc.layers[1]
    assert "head:H" in lay.unit_sets("ssm") and "head:H" not in lay.unit_sets("hidden")
    assert lay.split_units("heads") == [f"head:{h}" for h in range(8)]
    ids = torch.randint(0, V, (9,), generator=torch.Generator().manual_seed(3))
    seqs, _ = enc.states(ids[:, None])
    with torch.no_grad():
        cache = model(ids[None], use_cache=True).cache_params.get_recurrent_state(1)[0]
    unit = lay.units("head:3", "ssm")
    assert unit.size == 8 * 4
    assert torch.allclose(unit(seqs[(1, "ssm")][-1, 0]), cache[3].flatten(), atol=1e-6)
    opts = RunOptions(bootstrap=Bootstrap(0))
    full = memlens.state_gradients(enc, ids, 2, site=Site(1, "ssm"), options=opts).means()
    head = memlens.state_gradients(enc, ids, 2, site=Site(1, "ssm", "head:3"),
                                   options=opts).means()
    assert rel_err(head, full[:, 3 * 32:4 * 32]) < 1e-6
    for bad, match in (("head:8", "out of range"), ("head:x", "head:H")):
        with pytest.raises(MemlensError, match=match):
            lay.units(bad, "ssm")
    with pytest.raises(MemlensError, match="ssm readout"):
        lay.units("head:0", "hidden")


# -- precision and messages (issue 23, item 3) ------------------------------------------------

@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_model_upcast_with_one_line(low):
    model = tiny("mamba2").to(low)
    want = model.lm_head.weight.detach().float().clone()
    lines: list[str] = []
    enc = from_hf(model, log=lines.append)
    name = str(low).removeprefix("torch.")
    assert len(lines) == 1 and name in lines[0] and "float32" in lines[0]
    assert "upcast" in lines[0] and "\n" not in lines[0]
    assert enc.weights_dtype == name
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # in place, exact
    assert torch.equal(model.lm_head.weight, want)
    ids = torch.randint(0, V, (5,))
    seqs, _ = enc.states(ids[:, None])
    assert seqs[(0, "ssm")].dtype == torch.float32


def cli(args, capsys):
    from memlens.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def test_low_precision_directory_notice_and_metadata(tmp_path, capsys):
    model = tiny("falcon_mamba").to(torch.bfloat16)
    model.save_pretrained(tmp_path / "fm")
    ref = model.float()
    (tmp_path / "c.txt").write_text("a b c d\n" * 30)
    # the vocabulary: one symbol per embedding row (no tokenizer in the directory)
    (tmp_path / "v.txt").write_text("".join(f"{w}\n" for w in
                                            ["a", "b", "c", "d", "<eos>"] +
                                            [f"w{i}" for i in range(V - 5)]))
    rc, io = cli(["gradients", "--model", f"hf:{tmp_path / 'fm'}", "--vocab", tmp_path / "v.txt",
                  "--corpus", tmp_path / "c.txt", "--max-delay", "2", "--bootstrap", "0",
                  "--no-progress", "--out", tmp_path / "g"], capsys)
    assert rc == 0, io.err
    notes = [ln for ln in io.err.splitlines() if "bfloat16" in ln]
    assert len(notes) == 1 and notes[0].startswith("memlens: note:") and "float32" in notes[0]
    doc = json.loads((tmp_path / "g" / "result.json").read_text())
    assert doc["model"]["weights_dtype"] == "bfloat16"
    assert doc["model"]["arch"] == "hf-falcon_mamba"
    enc = from_hf(str(tmp_path / "fm"), log=lambda m: None)  # read as float32: the same values
    assert torch.equal(enc.head.lm_head.weight, ref.lm_head.weight)


def test_missing_directory_says_so(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("a b c\n" * 20)
    for spec in (tmp_path / "nothing", "./no-such-model"):
        rc, io = cli(["gradients", "--model", f"hf:{spec}", "--corpus", tmp_path / "c.txt",
                      "--out", tmp_path / "o"], capsys)
        assert rc == 2 and len(io.err.strip().splitlines()) == 1
        assert "no such directory" in io.err and "Repo id" not in io.err
    assert not (tmp_path / "o").exists()
    with pytest.raises(MemlensError, match="no such directory"):
        from_hf(str(tmp_path / "nothing"))


def test_unsupported_family_lists_the_registry(tmp_path, capsys):
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=30, n_embd=8, n_layer=1, n_head=2, n_positions=16))
    listing = "supported: mamba, falcon_mamba, mamba2, rwkv, xlstm"
    with pytest.raises(MemlensError, match="gpt2 .*is not supported yet; " + listing):
        from_hf(gpt2)
    gpt2.save_pretrained(tmp_path / "gpt2")
    (tmp_path / "c.txt").write_text("a b c\n" * 20)
    rc, io = cli(["gradients", "--model", f"hf:{tmp_path / 'gpt2'}", "--corpus",
                  tmp_path / "c.txt", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and len(io.err.strip().splitlines()) == 1
    assert "gpt2" in io.err and "is not supported yet" in io.err and listing in io.err
    assert "not a recurrent model" not in io.err
    assert not (tmp_path / "o").exists()


def test_full_precision_models_say_nothing():
    lines: list[str] = []
    for dtype in (torch.float32, torch.float64):
        enc = from_hf(tiny("falcon_mamba", dtype), log=lines.append)
        assert enc.weights_dtype == str(dtype).removeprefix("torch.")
        assert next(enc.parameters()).dtype == dtype
    assert lines == []
