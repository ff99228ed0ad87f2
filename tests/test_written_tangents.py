"""Written-out tangent rules of Hugging Face blocks (``jvp_step``, TangentRule.WRITTEN) against
``torch.func.jvp`` of the block's own ``step`` (itself checked against the model's forward in
tests/test_hf.py), and whole state-gradient runs of the written rule against the generic path.
(Mamba's and FalconMamba's rules are checked in tests/test_hf.py / test_hf_families.py.)"""

from __future__ import annotations

import pytest
import torch

import memlens
from memlens.runtime.options import as_options

transformers = pytest.importorskip("transformers")
from memlens.models.hf import from_hf  # noqa: E402

V = 40


def rwkv(dtype, rescale_every=1):
    torch.manual_seed(0)
    cfg = transformers.RwkvConfig(vocab_size=V, hidden_size=6, num_hidden_layers=3,
                                  attention_hidden_size=6, intermediate_size=8,
                                  context_length=32, rescale_every=rescale_every)
    model = transformers.RwkvForCausalLM(cfg)
    with torch.no_grad():  # decays, bonuses and mixes away from their init
        for b in model.rwkv.blocks:
            b.attention.time_decay.normal_(0, 1)
            b.attention.time_first.normal_(0, 1)
            for p in (b.attention.time_mix_key, b.feed_forward.time_mix_receptance):
                p.uniform_(0, 1)
    return model.to(dtype).eval()


def xlstm(dtype, weight_mode="single"):
    torch.manual_seed(0)
    cfg = transformers.xLSTMConfig(
        vocab_size=V, hidden_size=8, num_hidden_layers=3, num_heads=2, qk_dim_factor=0.5,
        v_dim_factor=1.0, ffn_proj_factor=1.0, ffn_round_up_to_multiple_of=8, chunk_size=64,
        weight_mode=weight_mode)
    model = transformers.xLSTMForCausalLM(cfg)
    with torch.no_grad():  # gates away from their init, so the stabiliser m moves
        for b in model.backbone.blocks:
            lay = b.mlstm_layer
            for name in ("igate_preact", "fgate_preact", "ifgate_preact"):
                if hasattr(lay, name):
                    getattr(lay, name).bias.normal_(1, 2)
    return model.to(dtype).eval()


# (weight_mode="fused" is not built: transformers 5.23's xLSTM init fails for it, a shape
# error in _init_weights of ifgate_preact)
def mamba2(dtype):
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=V, hidden_size=16, state_size=4,
                                    num_hidden_layers=3, expand=2, conv_kernel=3, num_heads=8,
                                    head_dim=4, n_groups=2, chunk_size=4,
                                    time_step_limit=(0.0, 2.0))
    model = transformers.Mamba2ForCausalLM(cfg)
    with torch.no_grad():  # off the init: decays, skips, gated norm
        for b in model.backbone.layers:
            b.mixer.A_log.normal_(0, 1)
            b.mixer.dt_bias.normal_(0, 1)
            b.mixer.D.normal_(0, 1)
            b.mixer.norm.weight.normal_(1, 0.3)
    return model.to(dtype).eval()


BUILD = {"rwkv": rwkv, "xlstm": xlstm, "mamba2": mamba2}


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("family", sorted(BUILD))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_written_out_jvp_equals_torch_func_jvp(family, dtype, index):
    enc = from_hf(BUILD[family](dtype), log=lambda *_: None)
    layer = enc.layers[index]
    assert layer.tangent_rule.value == "written"
    g = torch.Generator().manual_seed(5)
    st = layer.init_state(1, dtype=dtype)
    for _ in range(4):
        st = layer.step(torch.randn(1, layer.input_size, generator=g, dtype=dtype), st)
    x = torch.randn(1, layer.input_size, generator=g, dtype=dtype)
    n = 7
    dx = torch.randn(n, layer.input_size, generator=g, dtype=dtype)
    dst = {k: torch.randn(n, *v.shape[1:], generator=g, dtype=dtype) for k, v in st.items()}
    with torch.no_grad():
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


@pytest.mark.parametrize("family", sorted(BUILD))
def test_state_gradients_written_equal_generic(family):
    enc = from_hf(BUILD[family](torch.float64), log=lambda *_: None)
    ids = torch.randint(0, V, (30,), generator=torch.Generator().manual_seed(1))
    opts = as_options(blocks=4, dtype="float64")
    fast = memlens.state_gradients(enc, ids, 3, options=opts)
    slow = memlens.state_gradients(enc, ids, 3, options=opts, method="generic")
    assert fast.raw.stats["method"] == "hand" and slow.raw.stats["method"] == "generic"
    assert rel_err(torch.from_numpy(fast.raw.sums), torch.from_numpy(slow.raw.sums)) < 1e-11
