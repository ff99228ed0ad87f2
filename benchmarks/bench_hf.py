"""Benchmark: state gradients of Hugging Face recurrent LMs (Mamba, RWKV, xLSTM) through
memlens' generic jvp path vs brute-force autograd Jacobians through the model's own forward.

Both compute the average d h_t / d x_{t-tau} (tau = 0..K; h = the top block's output, x = the
input embedding) over the same positions t = 0..T-1 of one stream from a zero state, and must
agree. Printed from one run:

* brute force: for every position t, the model's own forward on the prefix x_0..x_t
  (``inputs_embeds``), then ``torch.autograd.functional.jacobian`` (vectorised reverse mode)
  of the top block's output at t w.r.t. the prefix; the K+1 blocks of delays are summed.
* memlens: ``memlens.state_gradients(from_hf(model), ids, K, options=...)`` (streaming
  forward-mode tangents through the adapter's step: Mamba's written-out ``jvp_step``,
  ``torch.func.jvp`` for RWKV and xLSTM), and with ``method="generic"`` (``torch.func.jvp``
  for every family), to show what the written-out derivative gains.
* the ratio of the two times (wall and CPU), the relative difference of the averages, and
  memlens tokens/s against the model width (hidden size) on a longer stream.

Run:  python benchmarks/bench_hf.py [--family mamba] [--tokens 64] [--max-delay 8]
      [--widths 16,32,64,128] [--width-tokens 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import transformers

import memlens
from memlens.models.hf import from_hf
from memlens.runtime.options import as_options

NO_BOOT = as_options(device="cpu", bootstrap=0)  # CPU timings, no intervals


def build(family: str, width: int, layers: int, vocab: int, seed: int = 0):
    """A random model of ``family`` with hidden size ``width`` (eval mode)."""
    torch.manual_seed(seed)
    if family == "mamba":
        cfg = transformers.MambaConfig(vocab_size=vocab, hidden_size=width, state_size=16,
                                       num_hidden_layers=layers, expand=2, conv_kernel=4)
        return transformers.MambaForCausalLM(cfg).eval()
    if family == "rwkv":
        cfg = transformers.RwkvConfig(vocab_size=vocab, hidden_size=width,
                                      num_hidden_layers=layers, context_length=1024,
                                      rescale_every=0)
        return transformers.RwkvForCausalLM(cfg).eval()
    cfg = transformers.xLSTMConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers,
                                   num_heads=4, ffn_round_up_to_multiple_of=8)
    return transformers.xLSTMForCausalLM(cfg).eval()


def top_blocks(model, family: str):
    return {"mamba": lambda: model.backbone.layers, "rwkv": lambda: model.rwkv.blocks,
            "xlstm": lambda: model.backbone.blocks}[family]()


def brute_force(model, family: str, X: torch.Tensor, K: int) -> np.ndarray:
    """Average over t of d h_t / d x_{t-tau} by autograd through the model's forward on each
    prefix: (K+1) x H x E."""
    block = top_blocks(model, family)[-1]
    out: dict = {}
    hook = block.register_forward_hook(
        lambda _m, _i, o: out.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    T, E = X.shape
    sums, count = None, np.zeros(K + 1)
    try:
        for t in range(T):
            def f(Xp):
                model(inputs_embeds=Xp[None], use_cache=False)
                return out["h"][0, -1]

            J = torch.autograd.functional.jacobian(f, X[:t + 1], vectorize=True).numpy()
            if sums is None:
                sums = np.zeros((K + 1, J.shape[0], E))
            for tau in range(min(t, K) + 1):
                sums[tau] += J[:, t - tau]
                count[tau] += 1
    finally:
        hook.remove()
    return sums / count[:, None, None]


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="mamba", choices=["mamba", "rwkv", "xlstm"])
    ap.add_argument("--width", type=int, default=64, help="hidden size of the comparison")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=64, help="stream length of the comparison")
    ap.add_argument("--max-delay", type=int, default=8)
    ap.add_argument("--widths", default="16,32,64,128", help="widths for tokens/s")
    ap.add_argument("--width-tokens", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    K = args.max_delay
    model = build(args.family, args.width, args.layers, args.vocab)
    enc = from_hf(model)
    ids = torch.randint(0, args.vocab, (args.tokens,), generator=torch.Generator().manual_seed(1))
    X = model.get_input_embeddings().weight.detach()[ids]
    want, bw, bc = timed(lambda: brute_force(model, args.family, X, K))
    res, mw, mc = timed(lambda: memlens.state_gradients(enc, ids, K, options=NO_BOOT))
    err = np.abs(res.means() - want).max() / np.abs(want).max()
    gen, gw, gc = timed(lambda: memlens.state_gradients(enc, ids, K, options=NO_BOOT,
                                                        method="generic"))
    gerr = np.abs(gen.means() - want).max() / np.abs(want).max()
    print(f"{args.family}, hidden {args.width}, {args.layers} blocks, {args.tokens} tokens, "
          f"K={K}, top block 'hidden' readout, float32, {args.threads} threads")
    print(f"brute force (autograd through the model's forward, per prefix): wall {bw:.2f} s, "
          f"CPU {bc:.2f} s ({args.tokens / bw:.1f} positions/s)")
    print(f"memlens ({res.settings['method']} path): wall {mw:.2f} s, CPU {mc:.2f} s "
          f"({args.tokens / mw:.1f} tokens/s); relative difference {err:.1e}")
    print(f"memlens (generic path, torch.func.jvp): wall {gw:.2f} s, CPU {gc:.2f} s "
          f"({args.tokens / gw:.1f} tokens/s); relative difference {gerr:.1e}")
    print(f"ratio brute/memlens: wall {bw / mw:.1f}x, CPU {bc / mc:.1f}x; "
          f"generic/memlens: wall {gw / mw:.1f}x, CPU {gc / mc:.1f}x")
    print(f"\nmemlens tokens/s against width ({args.width_tokens} tokens, K={K}):")
    print("width  params   wall s  CPU s  tokens/s (wall)  tokens/s (CPU)")
    for w in [int(x) for x in args.widths.split(",")]:
        m = build(args.family, w, args.layers, args.vocab)
        e = from_hf(m)
        ids = torch.randint(0, args.vocab, (args.width_tokens,),
                            generator=torch.Generator().manual_seed(2))
        _, ww, wc = timed(lambda e=e, ids=ids: memlens.state_gradients(e, ids, K,
                                                                       options=NO_BOOT))
        n = sum(p.numel() for p in m.parameters())
        print(f"{w:5d}  {n:7d}  {ww:7.2f}  {wc:5.2f}  {args.width_tokens / ww:15.1f}  "
              f"{args.width_tokens / wc:14.1f}")


if __name__ == "__main__":
    main()
