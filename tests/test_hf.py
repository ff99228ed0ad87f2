"""Mamba, RWKV and xLSTM from Hugging Face transformers (issue 11).

Oracles: the models' own forward (hidden states, final cache states, logits) on tiny random
configs; autograd Jacobians through that forward w.r.t. ``inputs_embeds`` for the state
gradients. Nothing is downloaded: configs are built here and saved to tmp dirs with a tiny
tokenizer trained offline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import memlens  # noqa: E402
from memlens.analyses.gradients import resolve_site  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.models.hf import from_hf, tokenize_corpus  # noqa: E402
from memlens.protocol import Site  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402

V = 40


def tiny(family: str, dtype=torch.float32, seed: int = 0):
    """A tiny random model of one family (eval mode)."""
    torch.manual_seed(seed)
    if family == "mamba":
        cfg = transformers.MambaConfig(vocab_size=V, hidden_size=6, state_size=3,
                                       num_hidden_layers=2, expand=2, conv_kernel=3,
                                       time_step_rank=2, residual_in_fp32=False)
        model = transformers.MambaForCausalLM(cfg)
    elif family == "rwkv":
        cfg = transformers.RwkvConfig(vocab_size=V, hidden_size=6, num_hidden_layers=2,
                                      attention_hidden_size=6, intermediate_size=8,
                                      context_length=32, rescale_every=1)
        model = transformers.RwkvForCausalLM(cfg)
        with torch.no_grad():  # random decays and bonuses, so the WKV sums matter
            for b in model.rwkv.blocks:
                b.attention.time_decay.normal_(0, 1)
                b.attention.time_first.normal_(0, 1)
    else:
        cfg = transformers.xLSTMConfig(
            vocab_size=V, hidden_size=8, num_hidden_layers=2, num_heads=2, qk_dim_factor=0.5,
            v_dim_factor=1.0, ffn_proj_factor=1.0, ffn_round_up_to_multiple_of=8,
            chunk_size=64)
        model = transformers.xLSTMForCausalLM(cfg)
        with torch.no_grad():  # gates away from their init, so the stabiliser m moves
            for b in model.backbone.blocks:
                b.mlstm_layer.igate_preact.bias.normal_(0, 2)
                b.mlstm_layer.fgate_preact.bias.normal_(2, 1)
    return model.to(dtype).eval()


FAMILIES = ["mamba", "rwkv", "xlstm"]
COMPONENTS = {"mamba": ["hidden", "ssm", "conv"],
              "rwkv": ["hidden", "numerator", "denominator", "max", "att_shift", "ffn_shift"],
              "xlstm": ["hidden", "C", "n", "m"]}


def model_states(model, family: str, X: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """Every block's output and state components after the last position of X (T x E), from
    the model's own forward (hidden states, cache), each flattened."""
    blocks = {"mamba": lambda: model.backbone.layers, "rwkv": lambda: model.rwkv.blocks,
              "xlstm": lambda: model.backbone.blocks}[family]()
    outs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(
        lambda _m, _i, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
        for i, b in enumerate(blocks)]
    seen: dict = {}
    # RWKV's cached state is written in place (autograd cannot follow it) and xLSTM's cache
    # needs sizes in multiples of 64: run without a cache, capture the inputs of their
    # recurrences and call the models' own recurrence functions on them
    for i, b in enumerate(blocks):
        if family == "rwkv":
            mods = (("att_shift", b.ln1), ("ffn_shift", b.ln2), ("k", b.attention.key),
                    ("v", b.attention.value))
        elif family == "xlstm":
            lay = b.mlstm_layer
            mods = (("q", lay.q), ("k", lay.k), ("v", lay.v), ("i", lay.igate_preact),
                    ("f", lay.fgate_preact))
        else:
            mods = ()
        for name, mod in mods:
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, o, key=(i, name): seen.__setitem__(key, o)))
    try:
        res = model(inputs_embeds=X[None], use_cache=family == "mamba",
                    output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    L = len(blocks)
    got = {}
    for i in range(L):
        if family in ("mamba", "rwkv"):  # hidden_states: block outputs (RWKV: rescaled), norm
            got[(i, "hidden")] = res.hidden_states[i][0, -1]
        else:  # xLSTM's hidden_states start with the embeddings and end normalised: hooks
            got[(i, "hidden")] = outs[i][0, -1]
        if family == "mamba":
            c = res.cache_params
            got[(i, "ssm")] = c.get_recurrent_state(i)[0].flatten()
            got[(i, "conv")] = c.get_conv_state(i)[0][:, 1:].flatten()
        elif family == "rwkv":  # the model's own WKV function on the captured keys, values
            from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

            att = blocks[i].attention
            _, (num, den, mx) = rwkv_linear_attention_cpu(
                att.time_decay, att.time_first, seen[(i, "k")], seen[(i, "v")],
                return_state=True)
            got[(i, "numerator")], got[(i, "denominator")], got[(i, "max")] = \
                num[0], den[0], mx[0]
            got[(i, "att_shift")] = seen[(i, "att_shift")][0, -1]
            got[(i, "ffn_shift")] = seen[(i, "ffn_shift")][0, -1]
        else:
            from transformers.models.xlstm import modeling_xlstm as mx

            cfg = model.config
            q, k, v = (seen[(i, n)][0].reshape(X.shape[0], cfg.num_heads, -1).transpose(0, 1)[
                None] for n in "qkv")
            ig, fg = (mx.soft_cap(seen[(i, n)], cfg.gate_soft_cap).transpose(1, 2)
                      for n in "if")
            _, (C, n, m) = mx.mlstm_recurrent_sequence_native(
                q, k, v, ig, fg, return_last_states=True, eps=cfg.eps)
            got[(i, "C")], got[(i, "n")], got[(i, "m")] = C[0].flatten(), n[0].flatten(), \
                m[0].flatten()
    return got


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("family", FAMILIES)
def test_step_equals_model_forward(family):
    model = tiny(family)
    enc = from_hf(model)
    assert [lay.readouts for lay in enc.layers][0] == tuple(COMPONENTS[family])
    assert enc.model_type == family and enc.tokenizer is None
    lay = enc.layers[0]
    assert lay.tangent_rule == "written"  # every family here has a written-out rule
    assert all(r.linear for r in lay.readout_specs().values()) and lay.memory_readout == "hidden"
    ids = torch.randint(0, V, (17,), generator=torch.Generator().manual_seed(1))
    seqs, _ = enc.states(ids[:, None])
    X = model.get_input_embeddings().weight.detach()[ids]
    with torch.no_grad():
        for t in (0, 7, 16):
            want = model_states(model, family, X[:t + 1])
            for (i, name), w in want.items():
                got = seqs[(i, name)][t, 0]
                assert got.shape == w.shape, (i, name)
                err = (got - w).abs().max().item()
                assert err <= 1e-5 * max(1.0, w.abs().max().item()), (family, t, i, name, err)
        # the head gives the model's logits
        logits = model(ids[None], use_cache=False).logits[0]
        assert (enc.head(seqs[(enc.num_layers - 1, "hidden")][:, 0]) - logits).abs().max() < 1e-5
    assert resolve_site(enc).readout == "hidden"  # the gradients' default
    assert Site(0).resolve(enc, "output").readout == "hidden"  # the signatures' default


def autograd_average(model, family, X: torch.Tensor, K: int, pairs) -> dict:
    """Mean over t of d r_t / d x_{t-tau} (tau = 0..K) by autograd through the model's own
    forward on each prefix X[:t+1]: {(layer, readout): (K+1) x D x E}."""
    sums: dict = {}
    count = np.zeros(K + 1)
    T = X.shape[0]
    for t in range(T):
        def f(Xp, t=t):
            st = model_states(model, family, Xp)
            return torch.cat([st[p] for p in pairs])

        J = torch.autograd.functional.jacobian(f, X[:t + 1], vectorize=True)  # D x t+1 x E
        off = 0
        for p in pairs:
            d = model_states_size[p]
            blockJ = J[off:off + d].detach().numpy()
            off += d
            acc = sums.setdefault(p, np.zeros((K + 1, d, X.shape[1])))
            for tau in range(min(t, K) + 1):
                acc[tau] += blockJ[:, t - tau]
        for tau in range(min(t, K) + 1):
            count[tau] += 1
    return {p: s / count[:, None, None] for p, s in sums.items()}


model_states_size: dict = {}


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float64", 1e-9)])
@pytest.mark.parametrize("family", FAMILIES)
def test_state_gradients_equal_autograd_through_model(family, dtype, tol):
    """Every readout against autograd Jacobians through the model's forward.

    The models' own code computes parts in float32 whatever the model's dtype (Mamba's
    RMSNorm, RWKV's WKV keys and states, xLSTM's states and norms; xLSTM's config refuses
    float64 states), so the float64 oracle is the adapter's step sequence under autograd
    (checked against the model in float32 here and in test_step_equals_model_forward), and
    the model's own float64 forward agrees with it to float32 precision."""
    tdt = getattr(torch, dtype)
    model = tiny(family, tdt)
    enc = from_hf(model)
    ids = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(2))
    K = 2
    X = model.get_input_embeddings().weight.detach()[ids].to(tdt)
    # every readout of the top block (its tangents come through block 0) and block 0's output
    pairs = [(0, "hidden")] + [(1, n) for n in COMPONENTS[family]]
    for p in pairs:
        model_states_size[p] = enc.layers[p[0]].readout_size(p[1])
    if dtype == "float64":
        want = adapter_average(enc, X, K, pairs)
        with torch.no_grad():  # the model's own float64 forward: float32-precise
            ref = model_states(model, family, X)
            st = enc.init_state(1, dtype=tdt)
            for t in range(X.shape[0]):
                st = enc.step(X[t:t + 1], st)
        assert max(rel_err(enc.readout(st, i, n)[0], ref[(i, n)]) for i, n in pairs) < 1e-5
    else:
        want = autograd_average(model, family, X, K, pairs)
    for layer, readout in pairs:
        opts = RunOptions(dtype=dtype, bootstrap=Bootstrap(0))
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts)
        # Mamba's and RWKV's blocks have a written-out derivative (jvp_step): "hand"
        written = True  # every family here
        assert r.settings["method"] == ("hand" if written else "generic")
        assert rel_err(r.means(), want[(layer, readout)]) <= tol, (layer, readout)
        if written:  # torch.func.jvp through the step: the same answer
            g = memlens.state_gradients(enc, ids, K, site=Site(layer, readout), options=opts,
                                        method="generic")
            assert g.settings["method"] == "generic"
            assert rel_err(g.means(), want[(layer, readout)]) <= tol, (layer, readout)


def adapter_average(enc, X, K, pairs) -> dict:
    """The same average by autograd through the adapter's step sequence (float64)."""
    def f(Xa):
        st, out = enc.init_state(1, dtype=Xa.dtype), []
        for t in range(Xa.shape[0]):
            st = enc.step(Xa[t:t + 1], st)
            out.append(torch.cat([enc.readout(st, i, n)[0] for i, n in pairs]))
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(f, X, vectorize=True).numpy()  # T x D x T x E
    out, off = {}, 0
    for p in pairs:
        d = model_states_size[p]
        sums = np.zeros((K + 1, d, X.shape[1]))
        cnt = np.zeros(K + 1)
        for t in range(X.shape[0]):
            for tau in range(min(t, K) + 1):
                sums[tau] += J[t, off:off + d, t - tau]
                cnt[tau] += 1
        out[p] = sums / cnt[:, None, None]
        off += d
    return out


# -- tokenizers, CLI, unsupported architectures ----------------------------------------------

def ewt_words(path, sentences: int) -> list[str]:
    """The words of the first sentences of a CoNLL-U file (one sentence per line)."""
    from memlens.data import load_corpus

    toks = load_corpus(path, "conllu").tokens
    lines, cur = [], []
    for t in toks:
        if t == "<eos>":
            lines.append(" ".join(cur))
            cur = []
            if len(lines) == sentences:
                break
        else:
            cur.append(t)
    return lines


def bpe_tokenizer(lines: list[str], size: int = 150):
    """A tiny byte-pair tokenizer trained offline on ``lines`` (whitespace pre-tokenised, so
    rare words split into several sub-tokens), as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=size,
                                                       special_tokens=["[UNK]", "[EOS]"]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                eos_token="[EOS]")


@pytest.fixture
def hf_dir(tmp_path, ewt_dev):
    """A tiny random Mamba with a BPE tokenizer trained on EWT dev, saved as a directory."""
    tok = bpe_tokenizer(ewt_words(ewt_dev, 400))
    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=len(tok) + 2, hidden_size=8, state_size=4, num_hidden_layers=2,
        expand=2, conv_kernel=3, time_step_rank=2))
    model.save_pretrained(tmp_path / "mamba")
    tok.save_pretrained(tmp_path / "mamba")
    return tmp_path / "mamba"


def test_own_tokenizer_and_first_subtoken_classes(hf_dir, ewt_dev):
    from memlens.analyses.gradients.classes import token_classes
    from memlens.data import load_corpus

    enc = from_hf(str(hf_dir))
    assert enc.vocab is not None and len(enc.vocab) == enc.vocab_size
    assert enc.vocab.itos[-1] == f"<id:{enc.vocab_size - 1}>"  # a row beyond the tokenizer
    words = load_corpus(ewt_dev, "conllu")
    words.tokens, words.tags = words.tokens[:600], {k: v[:600] for k, v in words.tags.items()}
    sub = tokenize_corpus(words, enc.tokenizer, enc.vocab)
    assert len(sub.tokens) > len(words.tokens)  # rare words split
    assert len(sub.first) == len(words.tokens)
    ends = sub.first[1:] + [len(sub.tokens)]
    for w, a, b in zip(words.tokens, sub.first, ends):
        if w == "<eos>":
            assert sub.tokens[a:b] == ["[EOS]"]
        else:  # the decoded sub-tokens spell the word; its tag sits on the first one
            assert "".join(sub.tokens[a:b]) == w
    upos = sub.tags["upos"]
    assert [upos[i] for i in sub.first] == words.tags["upos"]
    assert all(upos[i] is None for i in set(range(len(sub.tokens))) - set(sub.first))
    names, per = sub.classes(token_classes, "upos")
    assert "NOUN" in names and len(per) == len(sub.tokens)
    assert sum(1 for p in per if p) == sum(1 for t in words.tags["upos"] if t not in (None,
                                                                                     "_"))
    names, per = sub.classes(token_classes, "freq:3")
    assert names == ["freq1of3", "freq2of3", "freq3of3"]
    assert all(not per[i] for i in set(range(len(sub.tokens))) - set(sub.first))


def cli(args, capsys):
    from memlens.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def test_cli_hf_gradients_signatures_ablation_report(hf_dir, ewt_dev, tmp_path, capsys):
    model = f"hf:{hf_dir}"
    rc, io = cli(["gradients", "--model", model, "--corpus", ewt_dev, "--format", "conllu",
                  "--classes", "upos", "--max-tokens", "150", "--max-delay", "3",
                  "--bootstrap", "10", "--no-progress", "--out", tmp_path / "g"], capsys)
    assert rc == 0, io.err
    doc = json.loads((tmp_path / "g" / "result.json").read_text())
    assert doc["model"]["arch"] == "hf-mamba" and doc["settings"]["readout"] == "hidden"
    assert "NOUN" in {r["class"] for r in doc["table"]}
    rc, io = cli(["signatures", "--model", model, "--corpus", ewt_dev, "--format", "conllu",
                  "--layer", "0,1", "--train-tokens", "400", "--heldout-tokens", "200",
                  "--max-delay", "2", "--bootstrap", "10", "--control", "none",
                  "--out", tmp_path / "s"], capsys)
    assert rc == 0, io.err
    with np.load(tmp_path / "s" / "recall.npz") as npz:
        symbols = set(npz["symbols"].tolist())
    assert "[EOS]" in symbols or "the" in symbols  # decoded tokens, not ids
    rc, io = cli(["ablation", "--model", model, "--corpus", ewt_dev, "--format", "conllu",
                  "--max-tokens", "400", "--context", "8", "--distances", "2,4",
                  "--targets", "40", "--bootstrap", "10", "--blocks", "4", "--no-progress",
                  "--out", tmp_path / "a"], capsys)
    assert rc == 0, io.err
    rc, io = cli(["report", tmp_path / "g", tmp_path / "s", tmp_path / "a", "--out",
                  tmp_path / "r.html"], capsys)
    assert rc == 0, io.err
    page = (tmp_path / "r.html").read_text()
    assert "hf-mamba" in page and "NOUN" in page


def test_unsupported_architectures_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=30, n_embd=8, n_layer=1, n_head=2, n_positions=16))
    gpt2.save_pretrained(tmp_path / "gpt2")
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=8))
    for m in (gpt2, bert):
        with pytest.raises(MemlensError, match="supported: .*MambaForCausalLM.*"
                                               "RwkvForCausalLM.*xLSTMForCausalLM"):
            from_hf(m)
    (tmp_path / "c.txt").write_text("a b c\n" * 20)
    rc, io = cli(["gradients", "--model", f"hf:{tmp_path / 'gpt2'}", "--corpus",
                  tmp_path / "c.txt", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and len(io.err.strip().splitlines()) == 1
    assert "gpt2" in io.err and "MambaForCausalLM" in io.err and "Traceback" not in io.err
    rc, io = cli(["gradients", "--model", f"hf:{tmp_path / 'nothing'}", "--corpus",
                  tmp_path / "c.txt", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and len(io.err.strip().splitlines()) == 1 and "hf:" in io.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_memory_signatures_per_block(family):
    model = tiny(family)
    enc = from_hf(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8, 900)  # 8 symbols, so every lag has something to decode
    for layer in range(enc.num_layers):
        sig = memlens.memory_signature(enc, ids[:600], ids[600:], max_delay=2,
                                       site=Site(layer), decoder_options={"max_epochs": 3},
                                       options=RunOptions(bootstrap=Bootstrap(10, blocks=5)))
        assert sig.info["readout"] == "hidden" and len(sig.accuracy) == 3
        assert sig.accuracy[0] > sig.majority[0]  # the current token is readable


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mamba_written_out_jvp_equals_torch_func_jvp(dtype):
    """MambaLayer.jvp_step (primal once, SSM tangent in place) against torch.func.jvp of its
    step, at a state reached after a few tokens, for random tangents of every state part."""
    model = tiny("mamba", dtype)
    enc = from_hf(model)
    layer = enc.layers[1]
    g = torch.Generator().manual_seed(5)
    st = layer.init_state(1, dtype=dtype)
    for _ in range(4):
        st = layer.step(torch.randn(1, layer.input_size, generator=g, dtype=dtype), st)
    x = torch.randn(1, layer.input_size, generator=g, dtype=dtype)
    n = 7
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
