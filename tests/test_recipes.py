"""The two recipes of docs/recipes.md, followed from outside the package.

(a) A new recurrent layer type: a diagonal linear recurrence declared through the layer
    protocol (readouts, tangent rule, a unit set), registered with ``register_layer``, built
    as a LanguageModel, saved and loaded as a checkpoint, and analysed: state gradients
    against brute-force autograd Jacobians, a memory signature on one of its unit sets.
(b) A new Hugging Face family: a tiny custom transformers model (a residual tanh RNN)
    registered with transformers' Auto classes and with ``register_family``, saved to a
    directory and loaded with ``from_hf``: its step against the model's own forward, its head
    against the model's logits, state gradients against autograd through the model's forward.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import memlens
from memlens.analyses.gradients import resolve_site
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.models import LanguageModel, load_checkpoint, register_layer, save_checkpoint
from memlens.models.registry import unregister_layer
from memlens.models.states import expand_units, extract_states
from memlens.protocol import Readout, RecurrentLayer, Site, TangentRule, UnitSet
from memlens.runtime.options import RunOptions


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def delay_average(J: np.ndarray, K: int) -> np.ndarray:
    """Mean over t of J[t, :, t - tau] (tau = 0..K) of a T x D x T x E Jacobian:
    (K+1) x D x E."""
    sums = np.zeros((K + 1, J.shape[1], J.shape[3]))
    cnt = np.zeros(K + 1)
    for t in range(J.shape[0]):
        for tau in range(min(t, K) + 1):
            sums[tau] += J[t, :, t - tau]
            cnt[tau] += 1
    return sums / cnt[:, None, None]


# -- (a) a recurrent layer type --------------------------------------------------------------

class DiagonalLayer(RecurrentLayer):
    """h' = a * h + W x + b (elementwise decay a in (0, 0.9)^H).

    Readouts: ``hidden`` = h (H values, linear; the output), ``energy`` = |h|^2 (1 value, not
    linear). Unit sets: besides ``all`` and indices, ``half:0`` / ``half:1`` (the first /
    second H/2 units), partition ``halves``. Tangents: generic (torch.func.jvp on step)."""

    kind = "diag"
    tangent_rule = TangentRule.GENERIC
    unit_families = ("half", "halves")
    unit_owner = "a diagonal layer"

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        if hidden_size % 2:
            raise MemlensError("a diagonal layer needs an even hidden size")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.decay = nn.Parameter(torch.rand(hidden_size) * 0.9)
        self.inp = nn.Linear(input_size, hidden_size)

    def readout_specs(self) -> Mapping[str, Readout]:
        return {"hidden": Readout("hidden", self.hidden_size, linear=True),
                "energy": Readout("energy", 1)}

    def init_state(self, batch: int, device=None, dtype=None):
        ref = self.decay
        return (torch.zeros(batch, self.hidden_size, device=device or ref.device,
                            dtype=dtype or ref.dtype),)

    def step(self, x: Tensor, state):
        return (self.decay * state[0] + self.inp(x),)

    def readout(self, state, name: str) -> Tensor:
        h = state[0]
        return h if name == "hidden" else (h * h).sum(-1, keepdim=True)

    def sequence_states(self, x: Tensor, state=None, names=None):
        state = self.init_state(x.shape[1], x.device, x.dtype) if state is None else state
        names = tuple(dict.fromkeys(names or self.readouts))
        out: dict[str, list[Tensor]] = {n: [] for n in names}
        for t in range(x.shape[0]):
            state = self.step(x[t], state)
            for n in names:
                out[n].append(self.readout(state, n))
        return {n: torch.stack(v) for n, v in out.items()}, state

    def forward(self, x: Tensor, state=None):
        seqs, state = self.sequence_states(x, state, ("hidden",))
        return seqs["hidden"], state

    def units(self, spec: str, readout: str | None = None) -> UnitSet:
        if not spec.startswith("half:"):
            return super().units(spec, readout)
        readout = readout or self.output_readout
        if readout != "hidden" or spec not in ("half:0", "half:1"):
            raise MemlensError(f"units {spec!r}: half:0 or half:1 of the hidden readout")
        half = self.hidden_size // 2
        lo = half * int(spec[-1])
        return UnitSet(spec, readout, half, index=tuple(range(lo, lo + half)))

    def unit_splits(self):
        return {"halves": ["half:0", "half:1"]}


@pytest.fixture
def diag_type():
    register_layer("diag", lambda i, h, cfg: DiagonalLayer(i, h),
                   description="diagonal linear recurrence")
    yield "diag"
    unregister_layer("diag")


def diag_model(seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    model = LanguageModel({"arch": "diag", "layers": 2, "emb": 4, "hidden": 6}, 12).eval()
    model.vocab = Vocab.from_symbols([f"w{i}" for i in range(12)])
    return model


def brute_force(encoder, ids, K: int, layer: int, readout: str) -> np.ndarray:
    """Mean over t of d r_t / d x_{t-tau} by torch.autograd through ``encoder.step``
    (float64): (K+1) x D x E."""
    enc = copy.deepcopy(encoder).double()
    X = enc.embedding.weight.detach()[torch.as_tensor(ids)]

    def readouts(X):
        st, out = enc.init_state(1, dtype=X.dtype), []
        for t in range(X.shape[0]):
            st = enc.step(X[t:t + 1], st)
            out.append(enc.layers[layer].readout(st[layer], readout)[0])
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(readouts, X, vectorize=True).numpy()
    return delay_average(J, K)


def test_recipe_layer_type_declares_and_builds(diag_type):
    model = diag_model()
    enc = model.encoder
    lay = enc.layers[1]
    assert isinstance(lay, DiagonalLayer) and lay.tangent_rule is TangentRule.GENERIC
    assert lay.readouts == ("hidden", "energy") and lay.readout_size("energy") == 1
    assert lay.memory_readout == "hidden" and not lay.readout_is_linear
    assert resolve_site(enc).readout == "hidden"  # the gradients' default
    site = Site(-1, None, "half:1").resolve(enc, "memory")
    assert site == Site(1, "hidden", "half:1") and site.label == "layer1/hidden/half:1"
    assert site.size(enc) == 3 and "I,J-K" in lay.unit_sets()
    assert expand_units(enc, 1, "halves") == ["half:0", "half:1"]
    with pytest.raises(MemlensError, match="not a grouped LSTM"):
        Site(0, "hidden", "group:0").resolve(enc)
    with pytest.raises(MemlensError, match="not a diagonal layer"):
        memlens.wrap(nn.Embedding(12, 4), nn.LSTM(4, 6)).layers[0].units("half:0")
    ids = np.random.default_rng(0).integers(0, 12, 40)
    states = extract_states(enc, ids, [site, Site(1, "hidden", "all")])
    assert np.array_equal(states[site], states[Site(1, "hidden", "all")][:, 3:])
    with pytest.raises(MemlensError, match="unknown architecture 'diag2'"):
        LanguageModel({"arch": "diag2"}, 12)


def test_recipe_layer_type_checkpoint(diag_type, tmp_path):
    model = diag_model()
    save_checkpoint(tmp_path / "diag.pt", model)
    back = load_checkpoint(tmp_path / "diag.pt")
    ids = torch.randint(0, 12, (15, 2))
    with torch.no_grad():
        assert torch.equal(model(ids)[0], back(ids)[0])
    unregister_layer("diag")  # a checkpoint holds no code: the type must be registered
    with pytest.raises(MemlensError, match="unknown architecture 'diag'"):
        load_checkpoint(tmp_path / "diag.pt")


@pytest.mark.parametrize("layer,readout", [(0, "hidden"), (1, "hidden"), (1, "energy")])
def test_recipe_layer_type_state_gradients(diag_type, layer, readout):
    model = diag_model()
    ids = np.random.default_rng(1).integers(0, 12, 20)
    want = brute_force(model.encoder, ids, 3, layer, readout)
    r = memlens.state_gradients(model, ids, 3, site=Site(layer, readout),
                                options=RunOptions(dtype="float64"))
    assert r.settings["method"] == "generic" and r.settings["readout"] == readout
    assert rel_err(r.means(), want) < 1e-10


def test_recipe_layer_type_memory_signature(diag_type):
    model = diag_model()
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 6, 900)
    sig = memlens.memory_signature(model, ids[:600], ids[600:], max_delay=2,
                                   site=Site(units="half:0"), decoder_options={"max_epochs": 3})
    assert sig.info["units"] == "half:0" and sig.info["readout"] == "hidden"
    assert len(sig.accuracy) == 3 and sig.accuracy[0] > sig.majority[0]


# -- (b) a Hugging Face family ---------------------------------------------------------------

def toy_hf_classes(transformers):
    """A tiny transformers causal LM "toyrnn": embeddings, L residual tanh-RNN blocks
    (h_t = tanh(W x_t + U h_{t-1}); out_t = x_t + V h_t), a final LayerNorm, an LM head."""

    class ToyRnnConfig(transformers.PretrainedConfig):
        model_type = "toyrnn"

        def __init__(self, vocab_size=20, hidden_size=6, num_hidden_layers=2, **kwargs):
            self.vocab_size, self.hidden_size = vocab_size, hidden_size
            self.num_hidden_layers = num_hidden_layers
            super().__init__(**kwargs)

    class ToyRnnBlock(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.w, self.u, self.v = nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Linear(d, d)

        def forward(self, x: Tensor) -> Tensor:  # B x T x D
            h = x.new_zeros(x.shape[0], x.shape[2])
            outs = []
            for t in range(x.shape[1]):
                h = torch.tanh(self.w(x[:, t]) + self.u(h))
                outs.append(x[:, t] + self.v(h))
            return torch.stack(outs, 1)

    class ToyRnnPreTrainedModel(transformers.PreTrainedModel):
        config_class = ToyRnnConfig
        base_model_prefix = "toyrnn"

        def _init_weights(self, module):
            pass  # the modules' own initialisation

    class ToyRnnModel(ToyRnnPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            d = config.hidden_size
            self.embeddings = nn.Embedding(config.vocab_size, d)
            self.blocks = nn.ModuleList(ToyRnnBlock(d) for _ in range(config.num_hidden_layers))
            self.norm = nn.LayerNorm(d)
            self.post_init()

        def get_input_embeddings(self):
            return self.embeddings

        def forward(self, input_ids=None, inputs_embeds=None):
            """Every block's output sequence (a tuple of B x T x D)."""
            x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
            outs = []
            for block in self.blocks:
                x = block(x)
                outs.append(x)
            return tuple(outs)

    class ToyRnnForCausalLM(ToyRnnPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.toyrnn = ToyRnnModel(config)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.post_init()

        def get_input_embeddings(self):
            return self.toyrnn.embeddings

        def forward(self, input_ids=None, inputs_embeds=None):
            return self.lm_head(self.toyrnn.norm(self.toyrnn(input_ids, inputs_embeds)[-1]))

    return ToyRnnConfig, ToyRnnForCausalLM


def toy_hf_adapter():
    """The family module of the recipe: the block layer and the adapter."""
    from memlens.models.hf import HFBlockLayer, HFFamily, HFHead

    class ToyRnnLayer(HFBlockLayer):
        """One ToyRnnBlock: readouts ``hidden`` (the block output) and ``h`` (its state)."""

        kind = "toyrnn"

        def __init__(self, block, config, index):
            super().__init__(block, config.hidden_size, index)
            self.components = {"hidden": (self.hidden_size,), "h": (self.hidden_size,)}

        def step(self, x, state):
            b = self.block
            h = torch.tanh(b.w(x) + b.u(state["h"]))
            return {"hidden": x + b.v(h), "h": h}

    class ToyRnnFamily(HFFamily):
        causal_lm = "ToyRnnForCausalLM"
        backbone_attr = "toyrnn"

        def layers(self, backbone, config):
            return [ToyRnnLayer(b, config, i) for i, b in enumerate(backbone.blocks)]

        def head(self, model, backbone):
            return HFHead(backbone.norm, model.lm_head)

    return ToyRnnFamily


@pytest.fixture
def toy_hf_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    from memlens.models.hf import register_family, unregister_family

    config_cls, model_cls = toy_hf_classes(transformers)
    transformers.AutoConfig.register("toyrnn", config_cls, exist_ok=True)
    transformers.AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
    register_family("toyrnn", toy_hf_adapter()())
    torch.manual_seed(0)
    model_cls(config_cls()).save_pretrained(tmp_path / "toyrnn")
    yield tmp_path / "toyrnn"
    unregister_family("toyrnn")


def test_recipe_hf_family(toy_hf_dir):
    from memlens.models.hf import from_hf, load_hf, supported_text

    assert "ToyRnnForCausalLM (toyrnn)" in supported_text()
    model, _ = load_hf(toy_hf_dir)
    enc = from_hf(str(toy_hf_dir))
    assert enc.model_type == "toyrnn" and enc.tokenizer is None and enc.num_layers == 2
    assert enc.layers[0].readouts == ("hidden", "h")
    assert enc.layers[0].tangent_rule is TangentRule.GENERIC
    ids = torch.randint(0, 20, (9,), generator=torch.Generator().manual_seed(1))
    seqs, _ = enc.states(ids[:, None])
    with torch.no_grad():
        want = model.toyrnn(ids[None])
        for i in range(2):
            assert (seqs[(i, "hidden")][:, 0] - want[i][0]).abs().max() < 1e-5
        logits = model(ids[None])[0]
        assert (enc.head(seqs[(1, "hidden")][:, 0]) - logits).abs().max() < 1e-5


def test_recipe_hf_family_state_gradients(toy_hf_dir):
    from memlens.models.hf import from_hf, load_hf, unregister_family

    model, _ = load_hf(toy_hf_dir)
    model = model.double()
    enc = from_hf(model)
    ids = torch.randint(0, 20, (8,), generator=torch.Generator().manual_seed(2))
    X = model.get_input_embeddings().weight.detach()[ids]

    def top(X):  # the top block's outputs by the model's own forward: T x D
        return model.toyrnn(inputs_embeds=X[None])[-1][0]

    J = torch.autograd.functional.jacobian(top, X, vectorize=True).numpy()  # T x D x T x E
    r = memlens.state_gradients(enc, ids, 2, site=Site(1), options=RunOptions(dtype="float64"))
    assert r.settings["readout"] == "hidden" and r.settings["method"] == "generic"
    assert rel_err(r.means(), delay_average(J, 2)) < 1e-10
    sig = memlens.memory_signature(enc, np.tile(np.arange(8), 80), np.tile(np.arange(8), 40),
                                   max_delay=1, site=Site(0, "h"),
                                   decoder_options={"max_epochs": 2})
    assert len(sig.accuracy) == 2
    unregister_family("toyrnn")
    with pytest.raises(MemlensError, match="is not supported yet; supported: mamba"):
        from_hf(model)
