"""Block outputs through the model's own forward (issue 23, item 4: extraction through the
model's chunked forward, not a per-token loop): for every registered family with a tiny
config in benchmarks/bench_hf_families.py, the windows / sentences of a context regime read
through :class:`memlens.models.hf.own_forward.OwnForward` equal the adapter's step-by-step
states (itself checked against the model's forward hooks and cache in the family tests), for
every block, ragged segments (padding) included; other readouts keep the step path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from memlens.models.hf import FAMILIES, from_hf  # noqa: E402
from memlens.models.states import extract_segment_states, own_forward  # noqa: E402
from memlens.protocol import Site  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_hf_families.py"


def configs() -> dict:
    spec = importlib.util.spec_from_file_location("bench_hf_families", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {k: v for k, v in mod.configs().items() if k in FAMILIES}, mod.V


CONFIGS, V = configs()


def tiny(name: str):
    cls, cfg = CONFIGS[name]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(cfg())
    with torch.no_grad():  # off the init, so that norms and gates matter
        for pname, p in model.named_parameters():
            if "norm" in pname and p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    for mod in model.modules():  # experts by their plain forward, as memlens runs them
        c = getattr(mod, "config", None)
        if c is not None and hasattr(c, "_experts_implementation"):
            c._experts_implementation = "eager"
    return model.eval()


def starts_of(n: int, seed: int) -> np.ndarray:
    """Segment starts every 1-23 tokens (ragged lengths, so batches are padded)."""
    rng = np.random.default_rng(seed)
    starts = np.zeros(n, dtype=bool)
    pos = 0
    while pos < n:
        starts[pos] = True
        pos += int(rng.integers(1, 24))
    return starts


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_own_forward_equals_the_steps(name):
    enc = from_hf(tiny(name), log=lambda *_: None)
    assert enc.own_forward is not None, name
    n = 120
    ids = torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(1))
    starts = starts_of(n, 2)
    views = [Site(i, "hidden").resolve(enc) for i in range(len(enc.layers))]
    assert own_forward(enc, {(v.layer, v.readout) for v in views}) is not None
    fast = extract_segment_states(enc, ids, starts, views, batch=7)
    own, enc.own_forward = enc.own_forward, None
    try:
        slow = extract_segment_states(enc, ids, starts, views, batch=7)
    finally:
        enc.own_forward = own
    for v in views:
        a, b = np.asarray(fast[v]), np.asarray(slow[v])
        err = np.abs(a - b).max() / max(1.0, np.abs(b).max())
        # float32: the models' chunked scans and fused norms sum in another order
        assert err <= 5e-5, (name, v.layer, err)


def test_top_block_only_stops_early_and_other_readouts_step():
    name = sorted(CONFIGS)[0]
    enc = from_hf(tiny(name), log=lambda *_: None)
    calls = []
    top = enc.layers[-1].block
    handle = top.register_forward_hook(lambda *_: calls.append(1))
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(3))
    starts = starts_of(40, 4)
    try:
        extract_segment_states(enc, ids, starts, [Site(0, "hidden").resolve(enc)])
        assert not calls  # the forward stopped after block 0
    finally:
        handle.remove()
    other = [r for r in enc.layers[0].readouts if r != "hidden"]
    if other:
        assert own_forward(enc, {(0, other[0])}) is None
        assert own_forward(enc, {(0, "hidden"), (0, other[0])}) is None


def test_rwkv_rescaling_between_blocks():
    """RWKV halves the hidden state after every rescale_every-th block in inference: the
    hooked block output is before it, the layer's ``hidden`` after it."""
    if "rwkv" not in FAMILIES:
        pytest.skip("no rwkv")
    torch.manual_seed(0)
    cfg = transformers.RwkvConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                  context_length=1024, rescale_every=1)
    enc = from_hf(transformers.RwkvForCausalLM(cfg).eval(), log=lambda *_: None)
    ids = torch.randint(0, V, (50,), generator=torch.Generator().manual_seed(5))
    starts = starts_of(50, 6)
    views = [Site(i, "hidden").resolve(enc) for i in range(3)]
    fast = extract_segment_states(enc, ids, starts, views)
    enc.own_forward = None
    slow = extract_segment_states(enc, ids, starts, views)
    for v in views:
        assert np.abs(np.asarray(fast[v]) - np.asarray(slow[v])).max() <= 1e-5, v.layer
