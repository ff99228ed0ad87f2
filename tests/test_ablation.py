"""Context ablation: oracles with known answers, batching invariance, resume, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.analyses.ablation import (
    PERTURBATIONS,
    Perturbation,
    PerturbationContext,
    context_ablation,
)
from memlens.analyses.ablation.perturbations import seed_code, unigram_cdf
from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.models.ngram import KneserNeyLM
from memlens.results import load_result
from memlens.runtime.options import Bootstrap, Checkpointing, RunOptions
from memlens.runtime.progress import Interrupted

WORDS = [f"w{i}" for i in range(12)]


def markov_text(n: int = 4000, seed: int = 0) -> list[str]:
    """Text where x_t depends on x_{t-1} and x_{t-2} (70%) or is uniform (30%)."""
    rng = np.random.default_rng(seed)
    toks = ["w0", "w1"]
    for _ in range(n):
        a, b = WORDS.index(toks[-2]), WORDS.index(toks[-1])
        toks.append(WORDS[(7 * a + 3 * b) % 12] if rng.random() < 0.7 else
                    WORDS[rng.integers(12)])
    return toks


class ConstantHead(nn.Module):
    """Logits that ignore the state: the model's output ignores its input."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(vocab))

    def forward(self, h):
        return self.bias.expand(h.shape[0], -1) + 0.0 * h.sum(-1, keepdim=True)


def boot(resamples: int, blocks: int = 20, seed: int = 0) -> RunOptions:
    """Run options with ``resamples`` bootstrap resamples."""
    return RunOptions(bootstrap=Bootstrap(resamples, blocks, seed))


def ctx_of(windows, index: int = 0, cdf=None) -> PerturbationContext:
    """The context of target ``index`` among targets whose windows are ``windows``."""
    windows = np.asarray(windows)
    L = windows.shape[1]
    return PerturbationContext(windows.reshape(-1), np.arange(1, len(windows) + 1) * L, index,
                               L, cdf)


def small_lm(head: nn.Module | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return memlens.wrap(nn.Embedding(12, 8), nn.LSTM(8, 16), vocab=WORDS,
                        head=head if head is not None else nn.Linear(16, 12))


@pytest.mark.parametrize("order", [2, 3, 4])
def test_ngram_oracle_exact_zero_from_window(order):
    toks = markov_text()
    lm = KneserNeyLM(order).fit(toks)
    ks = [1, 2, 3, 4, 6, 10]
    r = context_ablation(lm, lm.encode(toks), distances=ks, context=16, targets=250,
                         options=boot(100))
    inc = r.increase
    for i, p in enumerate(r.perturbations):
        for j, k in enumerate(ks):
            if k >= order - 1:
                assert inc[i, j] == 0.0, (p, k)
                assert np.array_equal(r.nll[i, j], r.base_nll)
            else:
                assert inc[i, j] > 0.05, (p, k)
    assert r.effective_context() == {p: order - 1 for p in r.perturbations}
    assert r.summary()["effective_context"]["drop"] == order - 1


def test_swap_oracle_and_definition():
    """swap (the far context of another target in place of this one's): an n-gram LM of
    order n is untouched from k = n-1 on; the swapped-in tokens are another target's."""
    toks = markov_text()
    lm = KneserNeyLM(3).fit(toks)
    ks = [1, 2, 3, 6]
    r = context_ablation(lm, lm.encode(toks), distances=ks, context=12, targets=200,
                         perturbation="swap", options=boot(50))
    assert r.perturbations == ["swap"]
    assert np.all(r.increase[0, 1:] == 0.0) and r.increase[0, 0] > 0.05
    assert r.effective_context() == {"swap": 2}
    window, other = np.arange(10), np.arange(100, 110)
    s = PERTURBATIONS["swap"].perturb(window, 3, np.random.default_rng(0),
                                      ctx_of([window, other]))
    assert list(s) == [100, 101, 102, 103, 104, 105, 106, 7, 8, 9]
    with pytest.raises(MemlensError, match="at least 2 targets"):
        context_ablation(lm, lm.encode(toks), distances=[1], context=12, targets=1,
                         perturbation="swap")
    # not in the default set: the defaults (and their seeds) are unchanged
    d = context_ablation(lm, lm.encode(toks), distances=[1], context=12, targets=20)
    assert d.perturbations == ["shuffle", "replace", "drop"]


def test_model_ignoring_input_zero_everywhere():
    enc = small_lm(ConstantHead(12))
    r = context_ablation(enc, markov_text(600), distances=[1, 2, 5, 10], context=12,
                         targets=80, options=boot(50))
    assert np.all(r.increase == 0.0)
    assert r.effective_context() == {"shuffle": 1, "replace": 1, "drop": 1}
    rows = r.rows()
    assert len(rows) == 12 and all(row["increase_low"] == 0 == row["increase_high"]
                                   for row in rows)


def test_batching_order_and_subset_invariance():
    enc = small_lm()
    toks = markov_text(800)
    a = context_ablation(enc, toks, distances=[1, 3, 7], context=10, targets=60, batch_size=7)
    b = context_ablation(enc, toks, distances=[7, 1, 3], context=10, targets=60,
                         batch_size=4096, perturbation=["drop", "replace", "shuffle"])
    order = [b.perturbations.index(p) for p in a.perturbations]
    np.testing.assert_allclose(a.nll, b.nll[order], rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.base_nll, b.base_nll, rtol=0, atol=1e-5)
    # one perturbation alone, explicit target positions: the same numbers for those targets
    c = context_ablation(enc, toks, distances=[3], context=10, targets=a.positions[:5].tolist(),
                         perturbation="replace")
    np.testing.assert_allclose(c.nll[0, 0], a.nll[1, 1, :5], rtol=0, atol=1e-5)


def test_perturbation_definitions():
    window = np.arange(10)
    rng = np.random.default_rng(0)
    s = PERTURBATIONS["shuffle"].perturb(window, 3, rng, ctx_of([window]))
    assert list(s[7:]) == [7, 8, 9] and sorted(s[:7]) == list(range(7))
    d = PERTURBATIONS["drop"].perturb(window, 3, rng, ctx_of([window]))
    assert list(d) == [7, 8, 9] and PERTURBATIONS["drop"].width(10, 3) == 3
    cdf = unigram_cdf(np.array([4, 4, 4, 2]), 6)
    r = PERTURBATIONS["replace"].perturb(window, 4, rng, ctx_of([window], cdf=cdf))
    assert list(r[6:]) == [6, 7, 8, 9] and set(r[:6]) <= {2, 4}
    assert list(window) == list(range(10))  # the window itself is never modified
    # the seed codes: positions in the registry (the numbers of every earlier run)
    assert [seed_code(p) for p in ("shuffle", "replace", "drop", "swap")] == [0, 1, 2, 3]


def test_no_head_and_bad_arguments():
    torch.manual_seed(0)
    enc = memlens.wrap(nn.Embedding(12, 8), nn.LSTM(8, 16), vocab=WORDS)
    with pytest.raises(MemlensError, match="next-token head"):
        context_ablation(enc, markov_text(100))
    enc = small_lm()
    toks = markov_text(100)
    for kwargs, msg in [({"distances": [0]}, "distance"), ({"distances": [12], "context": 12},
                                                           "distance"),
                        ({"perturbation": "reverse"}, "unknown perturbation"),
                        ({"context": 500}, "leaves no target"),
                        ({"context": 10, "distances": [1], "targets": 10_000}, "targets"),
                        ({"context": 10, "distances": [1], "tolerance": 2}, "tolerance")]:
        with pytest.raises(MemlensError, match=msg):
            context_ablation(enc, toks, **kwargs)
    # the head is kept out of the encoder's parameters and state
    assert not any(k.startswith("_next") or "head" in k for k in enc.state_dict())


def test_language_model_head_and_interrupt_resume(tmp_path):
    from memlens.models.lm import LanguageModel

    torch.manual_seed(0)
    lm = LanguageModel({"arch": "gru", "emb": 8, "hidden": 12}, 12).eval()
    ids = torch.tensor([WORDS.index(w) for w in markov_text(500)])
    kw = dict(distances=[1, 4], context=8, targets=50, batch_size=16)
    full = context_ablation(lm, ids, **kw)
    ck = tmp_path / "ck.npz"

    def run(**checkpointing):
        return context_ablation(lm, ids, **kw, options=RunOptions(
            checkpoint=Checkpointing(ck, **checkpointing)))

    with pytest.raises(Interrupted, match="after 3 of .* batches") as info:
        run(stop_after=3)
    assert ck.exists() and info.value.done == 3 and info.value.checkpoint == str(ck)
    with pytest.raises(Interrupted, match="after 5 of"):  # resumes at 3, 2 more
        run(resume=True, stop_after=2)
    resumed = run(resume=True)
    np.testing.assert_array_equal(resumed.nll, full.nll)
    assert not ck.exists()
    with pytest.raises(MemlensError, match="nothing to resume"):
        run(resume=True)
    # another run's checkpoint is refused
    with pytest.raises(Interrupted):
        run(stop_after=1)
    with pytest.raises(MemlensError, match="different model, corpus or settings"):
        context_ablation(lm, ids, **{**kw, "seed": 1}, options=RunOptions(
            checkpoint=Checkpointing(ck, resume=True)))


class SigtermScorer:
    """A next-token scorer (uniform) that sends itself SIGTERM while scoring batch 2."""

    vocab_size = 12

    def __init__(self):
        self.calls = 0

    def target_logprobs(self, contexts, targets):
        import os
        import signal

        self.calls += 1
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.full((len(targets),), -np.log(12.0), dtype=torch.float64)


def test_sigterm_saves_and_resumes(tmp_path):
    ids = np.arange(300) % 12
    ck = tmp_path / "ck.npz"
    kw = dict(distances=[1, 2], context=6, targets=40, batch_size=16)
    scorer = SigtermScorer()
    with pytest.raises(Interrupted, match="after 2 of"):
        context_ablation(scorer, ids, **kw, options=RunOptions(checkpoint=Checkpointing(ck)))
    assert ck.exists() and scorer.calls == 2
    r = context_ablation(scorer, ids, **kw, options=RunOptions(
        checkpoint=Checkpointing(ck, resume=True)))
    assert np.all(r.increase == 0.0) and not ck.exists()


class Reverse(Perturbation):
    """A toy perturbation defined outside memlens: the far tokens in reverse order."""

    name = "reverse"

    def perturb(self, window, k, rng, context):
        far = len(window) - k
        out = window.copy()
        out[:far] = window[:far][::-1]
        return out


def test_registered_perturbation_against_brute_force(monkeypatch):
    """A perturbation registered from outside runs like the built-in ones: every loss equals
    the model's loss on the window perturbed by hand; the built-in shuffle's randomness is
    default_rng([seed, code, t, k])."""
    monkeypatch.setitem(PERTURBATIONS, "reverse", Reverse())
    enc = small_lm(seed=1)
    ids = torch.tensor([WORDS.index(w) for w in markov_text(400)])
    L, ks, seed = 9, [1, 3, 6], 7
    r = context_ablation(enc, ids, distances=ks, perturbation=["reverse", "shuffle"], context=L,
                         targets=12, seed=seed, batch_size=5, options=boot(0))
    assert r.perturbations == ["reverse", "shuffle"] and seed_code("reverse") == 4

    def loss(window, t):
        with torch.no_grad():
            out, _ = enc(torch.as_tensor(window).view(-1, 1))
            return -torch.log_softmax(enc.head(out[-1]).double(), -1)[0, ids[t]].item()

    for i, t in enumerate(r.positions.tolist()):
        window = ids[t - L:t].numpy()
        assert abs(r.base_nll[i] - loss(window, t)) < 1e-5
        for j, k in enumerate(ks):
            rev = np.concatenate([window[:L - k][::-1], window[L - k:]])
            assert abs(r.nll[0, j, i] - loss(rev, t)) < 1e-5
            rng = np.random.default_rng([seed, 0, t, k])
            shuf = np.concatenate([window[:L - k][rng.permutation(L - k)], window[L - k:]])
            assert abs(r.nll[1, j, i] - loss(shuf, t)) < 1e-5
    monkeypatch.delitem(PERTURBATIONS, "reverse")
    with pytest.raises(MemlensError, match="unknown perturbation 'reverse'"):
        context_ablation(enc, ids, distances=[1], perturbation="reverse", context=L)


class BadWidth(Perturbation):
    name = "bad"

    def perturb(self, window, k, rng, context):
        return window[:-1]


def test_perturbation_of_the_wrong_width_is_refused(monkeypatch):
    monkeypatch.setitem(PERTURBATIONS, "bad", BadWidth())
    lm = KneserNeyLM(2).fit(markov_text(300))
    with pytest.raises(MemlensError, match="the bad perturbation returned"):
        context_ablation(lm, lm.encode(markov_text(300)), distances=[1], perturbation="bad",
                         context=5, targets=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ablation")
    lines = [" ".join(markov_text(30, seed=s)) for s in range(40)]
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    assert main(["train", "--train", str(tmp_path / "text.txt"), "--arch", "lstm", "--emb",
                 "8", "--hidden", "16", "--epochs", "1", "--bptt", "20", "--batch", "8",
                 "--device", "cpu", "--out", str(tmp_path / "m.pt")]) == 0
    return tmp_path


def test_cli_result_directory_and_report(trained, capsys):
    out = trained / "abl"
    args = ["ablation", "--model", str(trained / "m.pt"), "--corpus", str(trained / "text.txt"),
            "--distances", "1,2,5,10", "--context", "20", "--targets", "100", "--bootstrap",
            "50", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "effective context" in text and "wrote" in text
    res = load_result(out)
    assert res.kind == "ablation" and len(res.rows()) == 12
    assert set(res.summary()["effective_context"]) == {"shuffle", "replace", "drop"}
    assert (out / "increase.png").is_file() and (out / "ablation.npz").is_file()
    assert main(args) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["report", str(out), "--out", str(trained / "r.html")]) == 0
    html = (trained / "r.html").read_text()
    assert "Ablation" in html and "data:image/png;base64" in html
    doc = json.loads((out / "result.json").read_text())
    assert doc["series"][0]["log_x"] is True


@pytest.mark.parametrize("extra, msg", [
    (["--distances", "0"], "distance must be in 1..299"),
    (["--distances", "30", "--context", "20"], "distance must be in 1..19"),
    (["--distances", "a,b"], "distances: cannot read"),
    (["--perturbation", "reverse"], "unknown perturbation 'reverse'"),
    (["--targets", "0"], "--targets must be positive, got 0"),
    (["--context", "1"], "context window must be in 2.."),
    (["--context", "50000", "--distances", "1"], "leaves no target"),
    (["--tolerance", "1.5"], "tolerance must be in [0, 1)"),
    (["--blocks", "1"], "blocks must be in 2.."),
    (["--bootstrap", "-1"], "bootstrap must be in 0.."),
    (["--seed", "-1"], "seed must be in 0.."),
    (["--batch-size", "0"], "--batch-size must be in 1.."),
    (["--checkpoint-every", "0"], "--checkpoint-every must be > 0"),
    (["--max-tokens", "0"], "--max-tokens must be positive"),
    (["--resume"], "nothing to resume"),
])
def test_cli_bad_input_one_line_no_output(trained, capsys, extra, msg):
    out = trained / f"bad-{abs(hash(tuple(extra)))}"
    rc = main(["ablation", "--model", str(trained / "m.pt"), "--corpus",
               str(trained / "text.txt"), "--device", "cpu", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("memlens: error:") and err.count("\n") == 1, err
    assert msg in err
    assert not out.exists()


def test_cli_model_without_head(trained, capsys):
    (trained / "nohead.py").write_text(
        "import torch\nfrom torch import nn\nimport memlens\n"
        "def build():\n    return memlens.wrap(nn.Embedding(13, 8), nn.LSTM(8, 16))\n")
    (trained / "vocab.txt").write_text("\n".join([*WORDS, "<eos>"]) + "\n")
    rc = main(["ablation", "--model", f"{trained / 'nohead.py'}:build", "--vocab",
               str(trained / "vocab.txt"), "--corpus", str(trained / "text.txt"),
               "--device", "cpu", "--context", "10", "--distances", "1,2",
               "--out", str(trained / "x")])
    assert rc == 2 and "next-token head" in capsys.readouterr().err


def test_head_stays_out_of_checkpoints(tmp_path):
    enc = small_lm()
    assert enc.head is not None and not any("head" in k for k in enc.state_dict())
    assert sum(p.numel() for p in enc.parameters()) == 12 * 8 + 4 * 16 * (8 + 16 + 2)
    memlens.save_checkpoint(tmp_path / "m.pt", enc)
    back = memlens.load_checkpoint(tmp_path / "m.pt")
    assert memlens.as_encoder(back).head is None
    with pytest.raises(MemlensError, match="next-token head"):
        context_ablation(back, markov_text(100), distances=[1], context=5)
    with pytest.raises(MemlensError, match="head= must be an nn.Module"):
        memlens.wrap(nn.Embedding(12, 8), nn.LSTM(8, 16), head=lambda h: h)


def test_log_x_series_plain_tick_labels():
    lm = KneserNeyLM(2).fit(markov_text(300))
    r = context_ablation(lm, lm.encode(markov_text(300)), distances=[1, 3, 10], context=12,
                         targets=40, options=boot(20))
    ax = r.plot(series="increase")
    assert ax.get_xscale() == "log"
    assert ax.xaxis.get_major_formatter()(10.0, 0) == "10"
    assert "mathdefault" not in ax.xaxis.get_major_formatter()(100.0, 0)


def test_definitions_against_direct_computation():
    """drop at k = the model on x_{t-k}..x_{t-1} from a zero state; the baseline = the model on
    the whole window x_{t-L}..x_{t-1}; loss = -log softmax(head(last output))[x_t]."""
    enc = small_lm(seed=3)
    toks = markov_text(300)
    ids = torch.tensor([WORDS.index(w) for w in toks])
    r = context_ablation(enc, ids, distances=[2, 5], context=9, targets=7,
                         perturbation="drop", options=boot(0))
    with torch.no_grad():
        for i, t in enumerate(r.positions):
            for j, width in enumerate([9, 2, 5]):
                out, _ = enc(ids[t - width:t].view(-1, 1))
                want = -torch.log_softmax(enc.head(out[-1]).double(), -1)[0, ids[t]].item()
                got = r.base_nll[i] if j == 0 else r.nll[0, j - 1, i]
                assert abs(got - want) < 1e-5
    assert all(row["increase_low"] is None or np.isnan(row["increase_low"]) for row in r.rows())
