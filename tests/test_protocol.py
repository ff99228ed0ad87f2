"""The model protocol: continuous inputs, custom step functions with matrix states, one
calling convention, vocabularies for wrapped models (oracles: autograd Jacobians, a delay line)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_signatures import delay_line
from torch import nn

import memlens
from memlens.analyses.gradients import resolve_site
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.models import StepLayer, wrap
from memlens.models.inputs import Stream
from memlens.protocol import Site
from memlens.runtime.options import Bootstrap, RunOptions


def autograd_average(enc, X, K, layer, readout, segment=None):
    """Average d r_t / d x_{t-tau} over the stream by torch.autograd (float64): S x D x I."""
    def readouts(X):
        st, out = enc.init_state(1, dtype=X.dtype), []
        for t in range(X.shape[0]):
            st = enc.step(X[t:t + 1], st)
            out.append(enc.layers[layer].readout(st[layer], readout)[0])
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(readouts, X, vectorize=True).numpy()  # T x D x T x I
    sums = np.zeros((K + 1, J.shape[1], J.shape[3]))
    cnt = np.zeros(K + 1)
    for t in range(X.shape[0]):
        for tau in range(min(t, K) + 1):
            sums[tau] += J[t, :, t - tau]
            cnt[tau] += 1
    return sums / cnt[:, None, None]


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def frame_lstm(dtype=torch.float64):
    torch.manual_seed(0)
    return wrap(None, nn.LSTM(6, 9, num_layers=2)).to(dtype)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("layer,readout", [(0, "hidden"), (0, "cell"), (1, "hidden"),
                                           (1, "cell")])
def test_frames_lstm_exact_against_autograd(dtype, tol, layer, readout):
    enc = frame_lstm()
    frames = torch.randn(25, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = autograd_average(enc, frames, 4, layer, readout)
    r = memlens.state_gradients(enc, frames.float() if dtype == "float32" else frames, 4,
                                site=Site(layer, readout), options=RunOptions(dtype=dtype))
    assert enc.input_kind == "vectors" and r.means().shape == (5, 9, 6)
    assert rel_err(r.means(), want) < tol
    assert r.settings["input"] == "vectors" and r.settings["readout"] == readout


def test_frames_normalisation_uses_stream_covariance():
    enc = frame_lstm()
    frames = torch.randn(40, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = memlens.state_gradients(enc, frames, 2, options=RunOptions(dtype="float64"))
    cov = np.cov(frames.numpy(), rowvar=False)
    assert np.allclose(r.normalization.D @ r.normalization.D.T, cov)
    with pytest.raises(MemlensError, match="singular"):
        memlens.state_gradients(enc, torch.ones(40, 6, dtype=torch.float64), 2)
    with pytest.raises(MemlensError, match="T x 6"):
        memlens.state_gradients(enc, torch.randn(40, 5), 2)
    with pytest.raises(MemlensError, match="continuous vectors"):
        memlens.state_gradients(enc, ["a", "b"], 1)


def diagonal_ssm(d: int = 3, n: int = 4, seed: int = 0):
    """A diagonal linear state-space layer with a d x n matrix state and readout y = C h:
    h' = a * h + x b^T (elementwise a), y = sum_n c * tanh(h)."""
    g = torch.Generator().manual_seed(seed)
    params = nn.ParameterDict({"a": nn.Parameter(torch.rand(d, n, generator=g) * 0.9),
                               "b": nn.Parameter(torch.randn(d, n, generator=g)),
                               "c": nn.Parameter(torch.randn(d, n, generator=g))})

    def step(x, state):
        (h,) = state
        return (params["a"] * h + x[:, :, None] * params["b"],)

    return StepLayer(step=step,
                     init_state=lambda b, device, dtype: (torch.zeros(b, d, n, device=device,
                                                                       dtype=dtype),),
                     input_size=d, module=params,
                     readouts={"y": lambda s: (params["c"] * torch.tanh(s[0])).sum(-1),
                               "state": lambda s: s[0].flatten(1)})


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("readout", ["y", "state"])
def test_matrix_state_generic_path_exact(dtype, tol, readout):
    layer = diagonal_ssm()
    enc = memlens.RecurrentEncoder(None, [layer])
    assert layer.readout_size("state") == 12 and layer.readout_size("y") == 3
    frames = torch.randn(20, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = memlens.RecurrentEncoder(None, [diagonal_ssm()]).double()
    want = autograd_average(ref, frames, 5, 0, readout)
    r = memlens.state_gradients(enc, frames, 5, site=Site(readout=readout),
                                options=RunOptions(dtype=dtype))
    assert r.settings["method"] == "generic"
    assert rel_err(r.means(), want) < tol
    # the user's parameters are untouched (float32, same values)
    assert layer.module["a"].dtype == torch.float32


def test_custom_layer_on_top_of_lstm_and_tokens():
    """Token embedding -> LSTM layer (hand path) -> custom layer (generic path)."""
    torch.manual_seed(0)
    lstm = memlens.TorchLayer(nn.LSTM(3, 3))
    enc = memlens.RecurrentEncoder(nn.Embedding(10, 3), [lstm, diagonal_ssm(3, 2)]).double()
    ids = torch.randint(0, 10, (18,), generator=torch.Generator().manual_seed(4))
    X = enc.embedding.weight.detach()[ids]
    want = autograd_average(enc, X, 3, 1, "y")
    r = memlens.state_gradients(enc, ids, 3, site=Site(1), options=RunOptions(dtype="float64"))
    assert rel_err(r.means(), want) < 1e-10


def test_one_calling_convention_and_default_readouts():
    torch.manual_seed(0)
    gru = wrap(nn.Embedding(12, 4), nn.GRU(4, 5))
    lstm = wrap(nn.Embedding(12, 4), nn.LSTM(4, 5))
    assert resolve_site(gru).readout == "hidden"  # the gradients' default: the memory readout
    assert resolve_site(lstm).readout == "cell"
    assert Site().resolve(lstm, "output").readout == "hidden"  # the signatures' default
    ids = np.random.default_rng(0).integers(0, 12, 60)
    assert memlens.state_gradients(gru, ids, 2).settings["readout"] == "hidden"
    r = memlens.state_gradients(lstm, ids, 2, site=Site(readout="hidden"))
    assert r.settings["readout"] == "hidden"
    with pytest.raises(TypeError, match="state"):  # the old alias is gone
        memlens.state_gradients(lstm, ids, 2, state="hidden")
    sig = memlens.memory_signature(gru, ids[:40], ids[40:], max_delay=1, site=Site(0, "hidden"),
                                   decoder_options={"max_epochs": 3},
                                   options=RunOptions(bootstrap=Bootstrap(50, blocks=5)))
    assert sig.info["readout"] == "hidden" and len(sig.accuracy) == 2


def one_hot_delay_line(v: int, m: int):
    """The delay-line oracle of test_signatures as a frame-input model: one-hot frames of
    size v, state m slots (slot j = the frame j steps back)."""
    return memlens.RecurrentEncoder(None, list(delay_line(v, m).layers))


def test_delay_line_as_frame_model_with_labels():
    v, m = 4, 3
    rng = np.random.default_rng(0)
    tr, he = rng.integers(0, v, 3000), rng.integers(0, v, 1500)
    eye = np.eye(v, dtype=np.float32)
    sig = memlens.memory_signature(one_hot_delay_line(v, m), Stream(eye[tr], labels=tr),
                                   Stream(eye[he], labels=he), max_delay=6,
                                   decoder_options={"max_epochs": 20},
                                   options=RunOptions(bootstrap=Bootstrap(200)))
    assert (sig.accuracy[:m] > 0.99).all()
    assert np.allclose(sig.accuracy[m:], sig.majority[m:], atol=0.05)
    assert sig.memory_span() == m - 1
    with pytest.raises(MemlensError, match="needs labels"):
        memlens.memory_signature(one_hot_delay_line(v, m), eye[tr], eye[he], max_delay=2)


def test_wrapped_vocabulary_shows_words():
    words = ["the", "cat", "dog", "sat", "ran", "<eos>"]
    torch.manual_seed(0)
    enc = wrap(nn.Embedding(6, 4), nn.LSTM(4, 8), vocab=words)
    text = ["the", "cat", "sat", "<eos>", "the", "dog", "ran", "<eos>"] * 40
    sig = memlens.memory_signature(enc, text[:200], text[200:], max_delay=1,
                                   decoder_options={"max_epochs": 3},
                                   options=RunOptions(bootstrap=Bootstrap(20)))
    assert set(sig.symbols) <= set(words)
    with pytest.raises(MemlensError, match="'bird' is not in the vocabulary"):
        memlens.state_gradients(enc, ["the", "bird"], 1)
    with pytest.raises(MemlensError, match="6 rows"):
        wrap(nn.Embedding(6, 4), nn.LSTM(4, 8), vocab=words[:5])
    v = Vocab.from_symbols(["a", "<unk>", "b"])
    assert v.encode(["b", "zzz"]).tolist() == [2, 1] and v.unk == "<unk>"


def test_layers_declare_readouts_tangent_rules_and_memory():
    from memlens.protocol import Readout, TangentRule

    torch.manual_seed(0)
    lstm = wrap(nn.Embedding(12, 4), nn.LSTM(4, 5)).layers[0]
    gru = wrap(nn.Embedding(12, 4), nn.GRU(4, 5)).layers[0]
    assert lstm.readout_specs() == {"hidden": Readout("hidden", 5, True),
                                    "cell": Readout("cell", 5, True)}
    assert (lstm.tangent_rule, lstm.memory_readout, lstm.output_readout) == (
        TangentRule.GATES, "cell", "hidden")
    assert (gru.tangent_rule, gru.memory_readout, gru.readouts) == (
        TangentRule.GATES, "hidden", ("hidden",))
    ssm = diagonal_ssm()
    assert ssm.tangent_rule is TangentRule.GENERIC and ssm.tangent_rule == "generic"
    assert ssm.readout_specs()["state"] == Readout("state", 12, False)
    assert ssm.memory_readout == ssm.output_readout == "y" and not ssm.readout_is_linear
    with pytest.raises(MemlensError, match="unknown readout 'z'"):
        ssm.readout_size("z")
    d, n = 3, 4
    flat = StepLayer(step=lambda x, s: (s[0] * 0.5 + x[:, :, None],),
                     init_state=lambda b, device, dtype: (torch.zeros(b, d, n, dtype=dtype),),
                     input_size=d, readouts={"state": lambda s: s[0].flatten(1)},
                     linear=["state"])
    assert flat.readout_is_linear and flat.readout_specs()["state"].linear
    with pytest.raises(MemlensError, match="linear= names unknown readouts: y"):
        StepLayer(step=flat.step, init_state=flat._init, input_size=d,
                  readouts={"state": lambda s: s[0].flatten(1)}, linear=["y"])


def test_sites_resolve_against_an_encoder():
    from memlens.models.states import View
    from memlens.protocol import Site

    torch.manual_seed(0)
    enc = frame_lstm()
    assert Site().resolve(enc) == Site(1, "hidden", "all")
    assert Site(0).resolve(enc, "memory") == Site(0, "cell", "all")
    assert Site(-2, None, "1,3").resolve(enc, lambda layer: "cell").label == "layer0/cell/1,3"
    assert Site(0, "cell", "2-4").resolve(enc).size(enc) == 3
    assert View(0) == Site(0, "hidden", "all") and View(1, "cell").units == "all"
    with pytest.raises(MemlensError, match="unknown readout 'gate' for layer 1"):
        Site(-1, "gate").resolve(enc)
    with pytest.raises(MemlensError, match="layer 0: unit 9 out of range"):
        Site(0, "hidden", "9").resolve(enc)
    with pytest.raises(MemlensError, match="layer 0: units 'group:0': the layer is not a "
                                           "grouped LSTM"):
        Site(0, "hidden", "group:0").resolve(enc)
    with pytest.raises(MemlensError, match="layer 5 does not exist"):
        Site(5).resolve(enc)
    with pytest.raises(MemlensError, match="unknown readout role 'state'"):
        Site(0).resolve(enc, "state")
