"""Model zoo: the step form equals the fast form, wrap() equals the user's module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memlens
from memlens.core.errors import MemlensError
from memlens.models.layers import FactorizedLSTMLayer, GroupedLSTMLayer, RecurrentLayer, TorchLayer
from memlens.models.lm import LanguageModel

ARCHS = ("lstm", "gru", "rnn", "flstm", "glstm")


def step_vs_fast(encoder, tokens):
    """Max |step-form state - fast-form state| over every layer, readout and time step."""
    seqs, final = encoder.states(tokens)
    state = encoder.init_state(tokens.shape[1])
    x = encoder.embedding(tokens)
    diff = 0.0
    with torch.no_grad():
        for t in range(tokens.shape[0]):
            state = encoder.step(x[t], state)
            for (layer, name), seq in seqs.items():
                diff = max(diff, (encoder.readout(state, layer, name) - seq[t]).abs().max().item())
    return diff, seqs


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layers", [1, 2])
def test_step_equals_fast_path(arch, layers):
    torch.manual_seed(1)
    model = LanguageModel({"arch": arch, "layers": layers, "emb": 8, "hidden": 12,
                           "groups": 2, "rank": 3}, 30).eval()
    tokens = torch.randint(0, 30, (25, 3))
    diff, seqs = step_vs_fast(model.encoder, tokens)
    assert diff < 1e-5
    expected = {(i, n) for i in range(layers)
                for n in (("hidden", "cell") if arch in ("lstm", "flstm", "glstm")
                          else ("hidden",))}
    assert set(seqs) == expected
    # The top hidden sequence is what the language model decodes.
    with torch.no_grad():
        top, _ = model.encoder(tokens)
    assert torch.allclose(top, seqs[(layers - 1, "hidden")], atol=1e-6)


@pytest.mark.parametrize("arch", ["flstm", "glstm"])
def test_dense_weights_reproduce_the_special_step(arch):
    torch.manual_seed(2)
    model = LanguageModel({"arch": arch, "emb": 8, "hidden": 12, "groups": 4, "rank": 2}, 10)
    layer = model.encoder.layers[0]
    x = torch.randn(5, 8)
    state = (torch.randn(5, 12), torch.randn(5, 12))
    special = layer.step(x, state)
    generic = RecurrentLayer.step(layer, x, state)
    for a, b in zip(special, generic):
        assert torch.allclose(a, b, atol=1e-6)


def test_grouped_lstm_groups_are_independent():
    torch.manual_seed(3)
    layer = GroupedLSTMLayer(8, 12, groups=2)
    x = torch.randn(6, 1, 8)
    out1, _ = layer(x)
    x2 = x.clone()
    x2[..., 4:] += 1.0  # change only group 1's input
    out2, _ = layer(x2)
    assert torch.equal(out1[..., :6], out2[..., :6])
    assert not torch.equal(out1[..., 6:], out2[..., 6:])
    assert layer.group_units(1) == list(range(6, 12))
    with pytest.raises(MemlensError, match="group 2 out of range"):
        layer.group_units(2)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
def test_wrap_matches_user_module(cls, num_layers, batch_first):
    torch.manual_seed(4)
    emb = nn.Embedding(20, 5)
    rnn = cls(5, 7, num_layers=num_layers, batch_first=batch_first)
    wrapped = memlens.wrap(emb, rnn)
    tokens = torch.randint(0, 20, (9, 2))
    with torch.no_grad():
        x = emb(tokens)
        out, _ = rnn(x.transpose(0, 1) if batch_first else x)
        if batch_first:
            out = out.transpose(0, 1)
        mine, _ = wrapped(tokens)
    assert torch.allclose(out, mine, atol=1e-6)
    diff, _ = step_vs_fast(wrapped, tokens)
    assert diff < 1e-5
    # Parameters are shared, not copied.
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.5)
    assert wrapped.layers[0].dense_weights()[1].data_ptr() == rnn.weight_hh_l0.data_ptr()


def test_wrap_refuses_unsupported_modules():
    emb = nn.Embedding(10, 4)
    with pytest.raises(MemlensError, match="bidirectional"):
        memlens.wrap(emb, nn.LSTM(4, 6, bidirectional=True))
    with pytest.raises(MemlensError, match="does not match"):
        memlens.wrap(emb, nn.GRU(5, 6))
    with pytest.raises(MemlensError, match="nn.LSTM, nn.GRU or nn.RNN"):
        memlens.wrap(emb, nn.Linear(4, 4))


def test_readout_and_layer_errors():
    model = LanguageModel({"arch": "gru", "layers": 2, "emb": 4, "hidden": 6}, 10)
    with pytest.raises(MemlensError, match="unknown readout 'cell'"):
        model.encoder.check_readout(0, "cell")
    with pytest.raises(MemlensError, match="layer 2 does not exist"):
        model.encoder.check_readout(2, "hidden")
    assert model.encoder.check_readout(-1, "hidden") == (1, "hidden")


def test_tied_weights_and_config_errors():
    model = LanguageModel({"arch": "lstm", "emb": 8, "hidden": 8, "tied": True}, 15)
    assert model.decoder.weight is model.encoder.embedding.weight
    with pytest.raises(MemlensError, match="tied weights need --emb equal to --hidden"):
        LanguageModel({"arch": "lstm", "emb": 8, "hidden": 16, "tied": True}, 15)
    with pytest.raises(MemlensError, match="unknown architecture 'transformer'"):
        LanguageModel({"arch": "transformer"}, 15)
    with pytest.raises(MemlensError, match="divisible by --groups"):
        LanguageModel({"arch": "glstm", "emb": 9, "hidden": 8, "groups": 2}, 15)


def test_unit_sets_are_declared_by_the_layers():
    """group:G, factor, basis:J and the groups / bases partitions come from the layer types;
    every other layer refuses them, naming the layer type that has them."""
    torch.manual_seed(5)
    grouped = GroupedLSTMLayer(6, 12, groups=3)
    fact = FactorizedLSTMLayer(8, 12, rank=3)
    plain = TorchLayer(nn.LSTM(8, 12))
    h = torch.randn(5, 12)
    g1 = grouped.units("group:1", "cell")
    assert (g1.size, g1.index, g1.readout) == (4, tuple(range(4, 8)), "cell")
    assert torch.equal(grouped.select_units(h, "group:1"), h[:, 4:8])
    assert grouped.split_units("groups") == ["group:0", "group:1", "group:2"]
    assert "group:G" in grouped.unit_sets() and "group:G" not in plain.unit_sets()
    assert fact.units("factor").size == 3 and fact.units("basis:2").size == 1
    with torch.no_grad():
        assert torch.allclose(fact.select_units(h, "basis:2"), fact.factor_space(h)[:, 2:3])
    assert fact.split_units("bases") == ["factor", "basis:0", "basis:1", "basis:2"]
    assert "factor" in fact.unit_sets("hidden") and "factor" not in fact.unit_sets("cell")
    assert plain.units("0,3-4").index == (0, 3, 4) and plain.units("all").size == 12
    assert plain.split_units("0-2") == ["0-2"]
    for layer, spec, message in [
            (plain, "group:0", "not a grouped LSTM"), (fact, "group:0", "not a grouped LSTM"),
            (plain, "factor", "not a factorised LSTM"), (grouped, "basis:0", "not a factorised"),
            (grouped, "group:3", "group 3 out of range"), (fact, "basis:3", "basis 3 out of "),
            (fact, "basis:x", "expected basis:J"), (grouped, "group:x", "expected group:G"),
            (fact, "bases", "bad unit spec"), (plain, "12", "unit 12 out of range")]:
        with pytest.raises(MemlensError, match=message):
            layer.units(spec)
    with pytest.raises(MemlensError, match="hidden readout only"):
        fact.units("factor", "cell")
    with pytest.raises(MemlensError, match="not a grouped LSTM"):
        plain.split_units("groups")
    with pytest.raises(MemlensError, match="unknown readout 'gate'"):
        plain.units("all", "gate")


def test_layer_registry():
    from memlens.models.registry import architectures, build_layer, register_layer

    assert architectures()[:5] == ARCHS
    with pytest.raises(MemlensError, match="already registered"):
        register_layer("lstm", lambda i, h, cfg: TorchLayer.create("lstm", i, h))
    register_layer("wrong", lambda i, h, cfg: TorchLayer.create("gru", i, h + 1))
    try:
        with pytest.raises(MemlensError, match="built a layer 4 -> 7, asked for 4 -> 6"):
            build_layer("wrong", 4, 6, {})
        with pytest.raises(MemlensError, match="layer type 'wrong' built a layer"):
            LanguageModel({"arch": "wrong", "emb": 4, "hidden": 6}, 10)
    finally:
        memlens.models.unregister_layer("wrong")
    with pytest.raises(MemlensError, match="choose from lstm, gru, rnn, flstm, glstm"):
        build_layer("wrong", 4, 6, {})
