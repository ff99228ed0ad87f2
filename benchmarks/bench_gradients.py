"""Benchmark: memlens' forward-mode state gradients vs the original per-unit backward algorithm.

Both compute d s_t / d x_{t-tau} (tau = 0..K) of a 1-layer LSTM LM (E=64, H=256, K=50 by
default), averaged over the same target positions, and must agree. Printed from one run:

* original (Verwimp et al.'s algorithm, ported faithfully to PyTorch): batch size 1, one target
  position per segment, segment = the model's BPTT length (max(35, K+1) so that every delay
  fits), the segment starts from the exact carried state, then one backward pass per state unit
  (H passes) gives the H x E Jacobian for every delay. Speed: target positions (tokens) / s.
* memlens: tokens / s of the streaming engine over the whole stream (every position is a
  target), the multiply-adds it executes per token and their rate, and the rate of a plain
  float32 matrix product of the recurrent shape (4H x H) @ (H x K*E) measured in the same run.
* peak resident memory (ru_maxrss) of the process.

Run:  python benchmarks/bench_gradients.py [--tokens 300] [--positions 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import memlens
from memlens.analyses.gradients import EngineSettings
from memlens.models import LanguageModel
from memlens.protocol import Site
from memlens.runtime.options import as_options


def original_gradients(model: LanguageModel, ids: torch.Tensor, targets: list[int], K: int,
                       seg: int, readout: str = "cell") -> tuple[np.ndarray, float]:
    """The original algorithm: per target, one segment forward + H backward passes."""
    enc = model.encoder
    rnn = enc.layers[0].rnn  # nn.LSTM (1 layer): the framework's fused LSTM, as in TF
    H = rnn.hidden_size
    with torch.no_grad():  # carried state at every position (the stream from a zero state)
        x_all = enc.embedding(ids).unsqueeze(1)
        h, c = torch.zeros(1, 1, H), torch.zeros(1, 1, H)
        starts = {}
        want = {t - seg + 1 for t in targets}
        for p in range(ids.numel()):
            if p in want:
                starts[p] = (h.clone(), c.clone())
            _, (h, c) = rnn(x_all[p:p + 1], (h, c))
    total = np.zeros((K + 1, H, enc.emb_size))
    start = time.perf_counter()
    for t in targets:
        a = t - seg + 1
        x = enc.embedding(ids[a:t + 1]).detach().unsqueeze(1).requires_grad_(True)  # seg x 1 x E
        _, (hn, cn) = rnn(x, starts[a])
        s = (cn if readout == "cell" else hn)[0, 0]
        G = torch.empty(K + 1, H, enc.emb_size)
        for u in range(H):  # one backward pass per state unit
            (gx,) = torch.autograd.grad(s[u], x, retain_graph=True)
            G[:, u] = gx[seg - 1 - torch.arange(K + 1), 0]
        total += G.numpy()
    seconds = time.perf_counter() - start
    return total / len(targets), seconds


def matmul_rate(H: int, K: int, E: int, repeat: int = 20) -> float:
    """Multiply-adds per second of a plain float32 (4H x H) @ (H x K*E) product."""
    a, b = torch.randn(4 * H, H), torch.randn(H, K * E)
    out = torch.empty(4 * H, K * E)
    for _ in range(3):
        torch.mm(a, b, out=out)
    start = time.perf_counter()
    for _ in range(repeat):
        torch.mm(a, b, out=out)
    return 4 * H * H * K * E * repeat / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="memlens checkpoint (default: random 1-layer LSTM)")
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--max-delay", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=300, help="stream length for memlens")
    ap.add_argument("--positions", type=int, default=6, help="target positions (original)")
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: keep default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.model:
        model = memlens.load_checkpoint(args.model)
    else:
        model = LanguageModel({"arch": "lstm", "emb": args.emb, "hidden": args.hidden},
                              args.vocab).eval()
    K, H, E = args.max_delay, model.config["hidden"], model.config["emb"]
    V = model.encoder.vocab_size
    ids = torch.randint(2, V, (args.tokens,), generator=torch.Generator().manual_seed(1))
    seg = max(args.bptt, K + 1)
    targets = np.linspace(seg - 1, args.tokens - 1, args.positions).round().astype(int).tolist()
    print(f"model: 1-layer LSTM E={E} H={H} V={V}; K={K}; stream {args.tokens} tokens; "
          f"torch threads {torch.get_num_threads()}")

    rate_mm = matmul_rate(H, K, E)
    orig_mean, orig_s = original_gradients(model, ids, targets, K, seg)
    orig_tps = len(targets) / orig_s
    mask = np.zeros(args.tokens, bool)
    mask[targets] = True
    site, cpu = Site(readout="cell"), as_options(device="cpu")
    same = memlens.state_gradients(model, ids, K, site=site, options=cpu,
                                   engine=EngineSettings(target_mask=mask))
    full = memlens.state_gradients(model, ids, K, site=site, options=cpu)
    rate_mm2 = matmul_rate(H, K, E)
    mm = max(rate_mm, rate_mm2)
    st = full.stats
    err = np.abs(same.means() - orig_mean).max() / np.abs(orig_mean).max()
    nominal = 4 * H * H * K * E
    print(f"original (per-unit backward, segment {seg}): {len(targets)} target positions in "
          f"{orig_s:.1f} s = {orig_tps:.3f} tokens/s")
    print(f"memlens (forward-mode, streaming):          {st['tokens_processed']} tokens in "
          f"{st['seconds']:.1f} s = {st['tokens_per_second']:.2f} tokens/s")
    print(f"speed-up memlens / original: {st['tokens_per_second'] / orig_tps:.1f}x")
    print(f"same {len(targets)} positions, max relative difference of the averages: {err:.2e}")
    print(f"plain float32 matmul (4H x H)@(H x K*E): {mm / 1e9:.1f} GMAC/s "
          f"(runs: {rate_mm / 1e9:.1f}, {rate_mm2 / 1e9:.1f})")
    print(f"memlens executed multiply-adds: {st['macs_per_token'] / 1e6:.1f} M/token "
          f"((2H x H)@(H x (K+1)E) folded product) -> {st['macs_per_second'] / 1e9:.1f} GMAC/s "
          f"= {100 * st['macs_per_second'] / mm:.0f}% of the plain matmul rate")
    print(f"nominal multiply-adds (4H x H x K x E): {nominal / 1e6:.1f} M/token -> "
          f"{nominal * st['tokens_per_second'] / 1e9:.1f} GMAC/s equivalent "
          f"= {100 * nominal * st['tokens_per_second'] / mm:.0f}% of the plain matmul rate")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MB")


if __name__ == "__main__":
    main()
