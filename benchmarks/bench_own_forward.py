"""Benchmark: block outputs of windowed text through the model's own forward vs the adapter's
per-token steps (issue 23, item 4), one run, side by side as a ratio.

For every registered family with a tiny config in bench_hf_families.py (hidden 32) and for the
130M-parameter Mamba and Bamba shapes of bench_hf.py (random weights): tokens/s of
``extract_segment_states`` for the top block's ``hidden`` over ``window:64`` segments (the
windows of a context regime, as memory signatures read them), once through
:class:`memlens.models.hf.own_forward.OwnForward` (the default) and once step by step
(``encoder.own_forward = None``), and the largest difference between the two.

Run:  python benchmarks/bench_own_forward.py [--tokens 1024] [--real-tokens 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import transformers
from bench_hf import REAL
from bench_hf_families import configs

from memlens.models.hf import FAMILIES, from_hf
from memlens.models.states import extract_segment_states
from memlens.protocol import Site

WINDOW = 64


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def line(name: str, model, vocab: int, tokens: int) -> None:
    enc = from_hf(model.eval(), log=lambda *_: None)
    ids = torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(1))
    starts = np.zeros(tokens, dtype=bool)
    starts[::WINDOW] = True
    view = [Site(len(enc.layers) - 1, "hidden").resolve(enc)]
    fast, t_own = timed(lambda: extract_segment_states(enc, ids, starts, view))
    own, enc.own_forward = enc.own_forward, None
    slow, t_step = timed(lambda: extract_segment_states(enc, ids, starts, view))
    enc.own_forward = own
    a, b = np.asarray(fast[view[0]]), np.asarray(slow[view[0]])
    err = float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))
    print(f"{name:14s} {tokens / t_own:12.0f} {tokens / t_step:12.0f} {t_step / t_own:7.1f}x"
          f" {err:10.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--real-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-real", action="store_true", help="skip the 130M-parameter shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    print(f"window:{WINDOW} segments, top block 'hidden', {args.threads} thread(s); tiny "
          f"configs over {args.tokens} tokens, 130M shapes over {args.real_tokens}")
    print("model          own fwd tok/s  steps tok/s  speed-up  max rel diff")
    for name, (cls, cfg) in configs().items():
        if name in FAMILIES:
            torch.manual_seed(0)
            model = getattr(transformers, cls)(cfg())
            for mod in model.modules():  # experts by their plain forward, as memlens runs them
                c = getattr(mod, "config", None)
                if c is not None and hasattr(c, "_experts_implementation"):
                    c._experts_implementation = "eager"
            line(name, model, model.config.vocab_size, args.tokens)
    if not args.no_real:
        for name, build in REAL.items():
            torch.manual_seed(0)
            line(name, build(), 50280, args.real_tokens)


if __name__ == "__main__":
    main()
