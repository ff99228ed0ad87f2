"""Column passes of the state-gradient engine (EngineSettings.columns): the stream is run once
per group of input columns, so that models whose tangents of all E columns do not fit in memory
can be analysed. Oracle: the single-pass run (itself checked against autograd in
tests/test_gradients.py); every sum, count, interval and per-pair norm must agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memlens
from memlens.analyses.gradients import api
from memlens.analyses.gradients.engine import EngineSettings
from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.models import LanguageModel, save_checkpoint
from memlens.runtime.options import Checkpointing, as_options
from memlens.runtime.progress import Interrupted

K = 4
TAGS = ["a", "b", "c", "a", "b", "c", "a", "b", ["a", "b"], "c"]


def model(arch="lstm", layers=2, emb=6):
    torch.manual_seed(0)
    return LanguageModel({"arch": arch, "layers": layers, "emb": emb, "hidden": 5}, 10).eval()


def ids(n=120):
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))


def run(m, columns=None, method="auto", checkpoint=None, **kw):
    x = ids()
    return memlens.state_gradients(
        m, x, K, classes=[TAGS[i] for i in x.tolist()], method=method,
        options=as_options(blocks=6, dtype="float64", checkpoint=checkpoint),
        engine=EngineSettings(columns=columns, class_ci_delays=(0, 2, K)), **kw)


def same(a, b, rtol=1e-10):
    ra, rb = a.raw, b.raw
    for name in ("sums", "class_sums", "block_sums", "class_block_sums"):
        np.testing.assert_allclose(getattr(rb, name), getattr(ra, name), rtol=rtol,
                                   atol=1e-13, err_msg=name)
    for name in ("counts", "class_counts", "block_counts", "class_block_counts"):
        np.testing.assert_array_equal(getattr(rb, name), getattr(ra, name), err_msg=name)
    np.testing.assert_allclose(rb.norms, ra.norms, rtol=1e-5, atol=1e-7)
    fa, fb = a.to_frame(), b.to_frame()
    np.testing.assert_allclose(fb["sum_sv"], fa["sum_sv"], rtol=1e-9)
    np.testing.assert_allclose(fb["ci_low"], fa["ci_low"], rtol=1e-9)


@pytest.mark.parametrize("arch,method", [("lstm", "auto"), ("gru", "auto"), ("rnn", "auto"),
                                         ("lstm", "generic")])
@pytest.mark.parametrize("columns", [1, 4, 5])
def test_passes_equal_one_pass(arch, method, columns):
    m = model(arch)
    one, many = run(m, method=method), run(m, columns, method=method)
    assert many.raw.stats["column_passes"] == -(-6 // columns)
    assert one.raw.stats["column_passes"] == 1
    same(one, many)


def test_the_layer_below_and_a_window_regime():
    m = model()
    for kw in ({"site": memlens.Site(0, "hidden")}, {"context": "window:30"}):
        same(run(m, **kw), run(m, 4, **kw))


def test_auto_width_follows_the_memory_budget(monkeypatch):
    m = model()
    one = run(m)
    per_column = (K + 1) * (2 * 5 + 2 * 5) * 4 * 8  # K+1 slots, 2 layers x (h, c), float64
    monkeypatch.setattr(api, "memory_budget", lambda: 4 * 2.5 * per_column)
    auto = run(m)
    assert auto.raw.stats["column_passes"] == 3  # 2 columns per pass
    same(one, auto)


def test_interrupted_in_a_later_pass_resumes(tmp_path):
    m = model()
    full = run(m, 4)
    ck = tmp_path / "ck.pt"
    with pytest.raises(Interrupted):  # pass 0 and part of pass 1
        run(m, 4, checkpoint=Checkpointing(ck, stop_after=170))
    assert ck.exists()
    resumed = run(m, 4, checkpoint=Checkpointing(ck, resume=True))
    same(full, resumed, rtol=0)
    # a checkpoint of another column width is refused, not mixed in
    with pytest.raises(Interrupted):
        run(m, 4, checkpoint=Checkpointing(ck, stop_after=50))
    with pytest.raises(MemlensError):
        run(m, 3, checkpoint=Checkpointing(ck, resume=True))


def test_bad_columns_refused():
    m = model()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MemlensError, match="columns"):
            run(m, bad)


def test_cli_columns(tmp_path, capsys):
    words = [f"w{i}" for i in range(8)]
    vocab = Vocab(["<unk>", "<eos>", *words], [1, 5] + [10 - i for i in range(8)])
    m = model()
    m.vocab = vocab
    path = tmp_path / "m.pt"
    save_checkpoint(path, m)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(words[(i * 3 + j) % 8] for j in range(9))
                                for i in range(20)) + "\n")
    base = ["gradients", "--model", str(path), "--corpus", str(corpus), "--max-delay", str(K),
            "--dtype", "float64", "--no-progress", "--bootstrap", "20"]
    outs = []
    for extra in ((), ("--columns", "4")):
        out = tmp_path / f"g{len(extra)}"
        assert main([*base, "--out", str(out), *extra]) == 0
        outs.append(memlens.load_result(out))
    np.testing.assert_allclose(outs[1].to_frame()["sum_sv"], outs[0].to_frame()["sum_sv"],
                               rtol=1e-9)
    capsys.readouterr()
    for bad in ("0", "-2", "nan", "x"):
        try:
            code = main([*base, "--columns", bad, "--out", str(tmp_path / "bad")])
        except SystemExit as exc:  # argparse's type check
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert "--columns" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_hugging_face_blocks(family):
    """Written-out (Mamba) and generic (Mamba-2) tangents of a tiny random HF model."""
    transformers = pytest.importorskip("transformers")
    from memlens.models.hf import from_hf

    torch.manual_seed(0)
    if family == "mamba":
        cfg = transformers.MambaConfig(vocab_size=32, hidden_size=8, state_size=4,
                                       num_hidden_layers=2, expand=2, conv_kernel=3)
        hf = transformers.MambaForCausalLM(cfg)
    else:
        cfg = transformers.Mamba2Config(vocab_size=32, hidden_size=8, state_size=4,
                                        num_hidden_layers=2, expand=2, conv_kernel=3,
                                        num_heads=4, head_dim=4, n_groups=1, chunk_size=4)
        hf = transformers.Mamba2ForCausalLM(cfg)
    enc = from_hf(hf.eval().double(), log=lambda *_: None)
    x = torch.randint(0, 32, (40,), generator=torch.Generator().manual_seed(2))
    kw = dict(options=as_options(blocks=4, dtype="float64"), context="window:20")
    one = memlens.state_gradients(enc, x, 3, **kw)
    many = memlens.state_gradients(enc, x, 3, engine=EngineSettings(columns=3), **kw)
    assert many.raw.stats["column_passes"] == 3
    np.testing.assert_allclose(many.raw.sums, one.raw.sums, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(many.raw.norms, one.raw.norms, rtol=1e-5)
