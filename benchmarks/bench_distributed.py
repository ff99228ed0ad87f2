"""Benchmark: sharded state gradients, 1 process vs N gloo processes on CPU (docs/scaling.md).

A random 1-layer LSTM LM (E=64, H=256, V=10k, K=50 by default; speed does not depend on
training) over a random stream of T tokens, cell readout, float32, bootstrap off:

* 1 process (``--threads`` torch threads): tokens / s of ``memlens.state_gradients``;
* the CPU time (``time.process_time``, summed over the processes): with 1 thread per process
  its ratio to the 1-process CPU time is the work overhead of sharding (warm-up, reduce), free
  of the wall-clock noise of a shared machine;
* N processes (``torch.multiprocessing.spawn``, gloo, ``--threads`` threads each), warm-up W:
  wall time from a barrier after start-up to the all-reduced result on rank 0, tokens / s
  (T / wall), each process's engine rate (its shard plus warm-up / its seconds), and the
  parallel efficiency rate_N / (N rate_1); also the relative difference from the 1-process
  averages (worst delay, Frobenius).

Run:  python benchmarks/bench_distributed.py [--tokens 600] [--procs 2] [--warmup 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

import memlens
from memlens.analyses.gradients import EngineSettings
from memlens.models import LanguageModel
from memlens.runtime.options import as_options


def _model(args) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel({"arch": "lstm", "emb": args.emb, "hidden": args.hidden},
                         vocab_size=args.vocab).eval()


def _stream(args) -> torch.Tensor:
    return torch.randint(0, args.vocab, (args.tokens,), generator=torch.Generator().manual_seed(1))


def _gradients(model, ids, args, **kw):
    engine = EngineSettings(**kw)  # warmup
    return memlens.state_gradients(model, ids, args.max_delay, engine=engine,
                                   options=as_options(device="cpu", bootstrap=0))


def _worker(rank: int, args, root: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank,
                            world_size=args.procs)
    model, ids = _model(args), _stream(args)
    _gradients(model, ids[: args.max_delay + 2], args)  # warm the code paths (no group use)
    dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    res = _gradients(model, ids, args, warmup=args.warmup)
    wall = time.perf_counter() - start
    cpu = torch.tensor([time.process_time() - cpu], dtype=torch.float64)
    dist.all_reduce(cpu)
    if rank == 0:
        np.save(f"{root}/mean.npy", res.raw.sums / res.raw.counts[:, None, None])
        Path(f"{root}/stats.json").write_text(json.dumps({"wall": wall, "cpu": float(cpu),
                                                          **res.stats}))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=600)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--max-delay", type=int, default=50)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model, ids = _model(args), _stream(args)
    _gradients(model, ids[: args.max_delay + 2], args)
    start, cpu1 = time.perf_counter(), time.process_time()
    one = _gradients(model, ids, args)
    wall1, cpu1 = time.perf_counter() - start, time.process_time() - cpu1
    rate1 = args.tokens / wall1
    mean1 = one.raw.sums / one.raw.counts[:, None, None]
    print(f"LSTM E={args.emb} H={args.hidden} K={args.max_delay}, T={args.tokens}, "
          f"{args.threads} thread(s) per process")
    print(f"1 process: {wall1:.2f} s, {rate1:.1f} tokens/s; {args.tokens / cpu1:.1f} tokens "
          "per CPU second")

    with tempfile.TemporaryDirectory() as root:
        mp.spawn(_worker, args=(args, root), nprocs=args.procs, join=True)
        st = json.loads(Path(root, "stats.json").read_text())
        mean = np.load(Path(root, "mean.npy"))
    rate = args.tokens / st["wall"]
    diff = np.sqrt(((mean - mean1) ** 2).reshape(len(mean1), -1).sum(1)) / \
        np.sqrt((mean1 ** 2).reshape(len(mean1), -1).sum(1))
    print(f"{args.procs} processes, warm-up {args.warmup}: {st['wall']:.2f} s, {rate:.1f} "
          f"tokens/s; per process {st['tokens_per_second_per_process']:.1f} tokens/s "
          f"(shard + warm-up); {st['warmup_tokens']} warm-up tokens in all")
    print(f"CPU time: {st['cpu']:.2f} s in all, {args.tokens / st['cpu']:.1f} tokens per CPU "
          f"second = {cpu1 / st['cpu']:.0%} of 1 process's (the work overhead of sharding)")
    print(f"wall-clock efficiency {rate / (args.procs * rate1):.0%} (ideal with this warm-up: "
          f"{args.tokens / (args.tokens + st['warmup_tokens']):.0%}); worst per-delay "
          f"relative difference from 1 process: {diff.max():.2e}")


if __name__ == "__main__":
    main()
