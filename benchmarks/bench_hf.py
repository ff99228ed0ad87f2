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

Real size (``--real-size``): for a 130M-parameter Mamba-shaped config and a 130M-parameter
hybrid (Bamba: Mamba-2 mixers with attention blocks) with random weights, each measurement in
its own process (peak resident memory from ``getrusage``): tokens/s of the model's own forward
(reference), of memlens' state extraction (every readout of the top block, one stream; the
hybrid in ``window:N`` windows) and of state gradients at K = 20 (top block output, column
passes chosen by the engine; the first ``--grad-tokens`` positions of the first pass are timed
and the rate divided by the number of passes, which all have the same shapes and cost):

      python benchmarks/bench_hf.py --real-size [--tokens 64] [--grad-tokens 4] [--threads 2]
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
    if family == "mamba2":
        cfg = transformers.Mamba2Config(vocab_size=vocab, hidden_size=width, state_size=16,
                                        num_hidden_layers=layers, expand=2, conv_kernel=4,
                                        num_heads=max(1, 2 * width // 16), head_dim=16,
                                        n_groups=1, chunk_size=64)
        return transformers.Mamba2ForCausalLM(cfg).eval()
    if family == "rwkv":
        cfg = transformers.RwkvConfig(vocab_size=vocab, hidden_size=width,
                                      num_hidden_layers=layers, context_length=1024,
                                      rescale_every=0)
        return transformers.RwkvForCausalLM(cfg).eval()
    cfg = transformers.xLSTMConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers,
                                   num_heads=4, ffn_round_up_to_multiple_of=8)
    return transformers.xLSTMForCausalLM(cfg).eval()


def top_blocks(model, family: str):
    return {"mamba": lambda: model.backbone.layers, "mamba2": lambda: model.backbone.layers,
            "rwkv": lambda: model.rwkv.blocks,
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


# -- real size ---------------------------------------------------------------------------------
REAL = {  # 130M-parameter shapes (random weights; vocabulary of GPT-NeoX, 50280)
    "mamba-130m": lambda: transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2,
        conv_kernel=4)),
    "bamba-130m": lambda: transformers.BambaForCausalLM(transformers.BambaConfig(
        vocab_size=50280, hidden_size=768, num_hidden_layers=12, intermediate_size=2048,
        num_attention_heads=12, num_key_value_heads=4, attn_layer_indices=[3, 7, 11],
        mamba_n_heads=24, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=64,
        mamba_expand=2, mamba_chunk_size=64, tie_word_embeddings=True)),
}
WINDOW = 64  # the hybrid's context regime: window:64


class _Stop(Exception):
    """Raised from on_chunk to end a timed gradient run after its first chunk."""


def _measure(what: str, name: str, tokens: int, grad_tokens: int, K: int) -> None:
    """One measurement of ``--real-size`` in this process; prints one line of key=value."""
    import resource

    from memlens.analyses.gradients.engine import EngineSettings
    from memlens.models.states import extract_states
    from memlens.protocol import Site

    torch.manual_seed(0)
    model = REAL[name]().eval()
    params = sum(p.numel() for p in model.parameters())
    enc = from_hf(model, log=lambda *_: None)
    ids = torch.randint(0, 50280, (tokens,), generator=torch.Generator().manual_seed(1))
    hybrid = name.startswith("bamba")
    out = {"params": params}
    with torch.no_grad():
        if what == "forward":
            _, w, _ = timed(lambda: model(ids[None], use_cache=False))
            out["tok_s"] = tokens / w
        elif what == "states":
            top = len(enc.layers) - 1
            views = [Site(top, r).resolve(enc) for r in enc.layers[top].readouts]
            if hybrid:  # window:N: each window from the initial state
                _, w, _ = timed(lambda: [extract_states(enc, ids[a:a + WINDOW], views)
                                         for a in range(0, tokens, WINDOW)])
            else:
                _, w, _ = timed(lambda: extract_states(enc, ids, views))
            out["tok_s"] = tokens / w
        else:
            t0 = {}

            def stop(pos):
                raise _Stop()

            eng = EngineSettings(chunk_size=grad_tokens, on_chunk=stop)
            ctx = f"window:{WINDOW}" if hybrid else None
            run_ids = ids[:max(K + 1, WINDOW) if hybrid else max(K + 1, grad_tokens)]
            t0["w"] = time.perf_counter()
            try:
                memlens.state_gradients(enc, run_ids, K, options=NO_BOOT, engine=eng,
                                        context=ctx)
            except _Stop:
                pass
            w = time.perf_counter() - t0["w"]
            from memlens.analyses.gradients.api import _column_width

            width = _column_width(enc, len(enc.layers) - 1, K, torch.float32, None)
            passes = 1 if width is None else -(-enc.input_size // width)
            out.update(tok_s=grad_tokens / (w * passes), passes=passes,
                       columns=width or enc.input_size, first_pass_s=w)
    out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + " ".join(f"{k}={v}" for k, v in out.items()), flush=True)


def real_size(args) -> None:
    """The --real-size table: each measurement in a fresh process (its own peak memory)."""
    import subprocess
    import sys

    print(f"real-size configs, random weights, {args.threads} threads, states/forward over "
          f"{args.tokens} tokens, gradients K={args.real_delay} ({args.grad_tokens} positions "
          "of the first column pass timed)")
    print("config       params  measurement  tokens/s   peak GiB  remarks")
    for name in REAL:
        for what in ("forward", "states", "gradients"):
            cmd = [sys.executable, __file__, "--_measure", what, name, "--tokens",
                   str(args.tokens), "--grad-tokens", str(args.grad_tokens), "--threads",
                   str(args.threads), "--real-delay", str(args.real_delay)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{name:11s}  -  {what:11s}  failed: {tail}")
                continue
            r = dict(kv.split("=", 1) for kv in line[0].split()[1:])
            extra = (f"{r['passes']} column passes of {r['columns']}; first pass "
                     f"{float(r['first_pass_s']):.1f} s" if what == "gradients" else "")
            if name.startswith("bamba") and what != "forward":
                extra = (extra + "; " if extra else "") + f"window:{WINDOW}"
            print(f"{name:11s}  {int(r['params']) / 1e6:5.1f}M  {what:11s}  "
                  f"{float(r['tok_s']):9.4g}  {float(r['peak_gib']):8.2f}  {extra}", flush=True)


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="mamba", choices=["mamba", "mamba2", "rwkv", "xlstm"])
    ap.add_argument("--width", type=int, default=64, help="hidden size of the comparison")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=64, help="stream length of the comparison")
    ap.add_argument("--max-delay", type=int, default=8)
    ap.add_argument("--widths", default="16,32,64,128", help="widths for tokens/s")
    ap.add_argument("--width-tokens", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real-size", action="store_true",
                    help="the 130M-parameter table instead (module docstring)")
    ap.add_argument("--grad-tokens", type=int, default=4)
    ap.add_argument("--real-delay", type=int, default=20)
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    if args._measure:
        return _measure(*args._measure, args.tokens, args.grad_tokens, args.real_delay)
    if args.real_size:
        return real_size(args)
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
