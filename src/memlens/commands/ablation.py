"""``memlens ablation``: how far back a language model *uses* its context (Khandelwal et al.).

For N targets the model reads a window of --context L tokens; the tokens farther than k from
the target are shuffled, replaced by unigram draws or dropped (or swapped for another target's,
--perturbation swap), and the increase of the loss on the same targets is measured for every
distance k. Writes OUT/result.json, OUT/table.csv, OUT/ablation.npz and PNG plots. Finished
batches are saved beside OUT every --checkpoint-every seconds and on Ctrl-C / SIGTERM (exit
code 130); --resume continues to the same result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memlens.commands.common import (
    add_model_arguments,
    add_option,
    add_overwrite,
    inputs_from_args,
    sharded_output,
)
from memlens.commands.common import log as _log
from memlens.runtime.progress import partial_path

DISTANCES = "1,2,3,5,10,20,50,100,200"


def register(sub) -> None:
    p = sub.add_parser("ablation", help="loss increase when the context beyond k is perturbed",
                       description=__doc__)
    add_model_arguments(p)
    p.add_argument("--corpus", required=True, help="evaluation text (one continuous stream)")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    p.add_argument("--distances", default=DISTANCES,
                   help=f"distances k, each below --context (default {DISTANCES})")
    p.add_argument("--perturbation", default="shuffle,replace,drop",
                   help="any of shuffle, replace, drop, swap (comma-separated; default "
                        "shuffle,replace,drop)")
    add_option(p, "context", default="window:300", metavar="window:L",
               help="context regime: window:L, the L tokens read before every target from "
               "the initial state (default window:300; a bare L is the same)")
    add_option(p, "targets",
                   help="number of target positions, evenly spaced (default 1000)")
    add_option(p, "max_tokens", help="use only the first N tokens of the corpus")
    add_option(p, "bootstrap", default=1000,
               help="bootstrap resamples for the intervals (0: none; default 1000)")
    add_option(p, "blocks", help="contiguous blocks of targets for the bootstrap (at least 2; "
               "default 20)")
    add_option(p, "tolerance", help="effective context: |loss increase| <= this fraction of "
               "the unperturbed loss (default 0.01)")
    add_option(p, "seed", help="seed of the perturbations and of the bootstrap (default 0)")
    add_option(p, "batch_size", help="contexts per forward pass (default 256)")
    add_option(p, "device")
    p.add_argument("--out", required=True, help="result directory")
    add_option(p, "resume")
    add_overwrite(p)
    add_option(p, "checkpoint_every", default=60.0,
               help="seconds between checkpoints (default 60)")
    add_option(p, "progress", flag="--no-progress", help="no progress bar")
    p.set_defaults(func=run)


def checkpoint_path(out: str | Path) -> Path:
    """The checkpoint beside OUT: ``.<OUT>.partial.npz`` (per rank under torchrun:
    ``.<OUT>.partial.rank<r>.npz``)."""
    return partial_path(out, ".npz")


def run(args: argparse.Namespace) -> int:
    """Claim --out, compute (the API validates every option) and write the result
    directory."""
    from memlens.runtime.options import resolve_device

    with sharded_output(args.out, args.overwrite, args.resume,
                        resolve_device(args.device), scratch=".npz") as (out, device, group):
        return _run(args, out, device, group)


def _run(args: argparse.Namespace, out: Path, device, group) -> int:
    """Load, compute (sharded over the ranks of ``group`` when given), rank 0 writes OUT."""
    from memlens.analyses.ablation import context_ablation
    from memlens.runtime import distributed
    from memlens.runtime.options import Bootstrap, Checkpointing, RunOptions

    base = checkpoint_path(out)
    ck = base if group is None else distributed.rank_path(base, group.rank)
    with distributed.agreed(group, "before the context ablation"):
        run_inputs = inputs_from_args(args, need="tokens", device=device)
        if not args.resume and ck.exists():
            _log(f"memlens: warning: starting afresh; removing the old checkpoint {ck}")
            ck.unlink()
    options = RunOptions(
        device=device, bootstrap=Bootstrap(args.bootstrap, args.blocks, args.seed),
        checkpoint=Checkpointing(base, args.checkpoint_every, args.resume, keep=True),
        progress=args.progress)
    result = context_ablation(run_inputs.loaded.model, run_inputs.inputs, args.distances,
                              args.perturbation, context=args.context, targets=args.targets,
                              tolerance=args.tolerance, seed=args.seed,
                              batch_size=args.batch_size, options=options)
    result.model_meta = {**run_inputs.loaded.info, **result.model_meta}
    result.corpus_meta = run_inputs.corpus_meta()
    try:
        with distributed.agreed(group, "while rank 0 wrote the result"):
            if group is None or group.rank == 0:
                result.save(out)
    except KeyboardInterrupt:
        _log(f"memlens: interrupted while writing; progress saved to {ck}; rerun with "
             "--resume")
        return 130
    ck.unlink(missing_ok=True)  # only now: the result directory is in place
    if group is None or group.rank == 0:
        _print_summary(result, out)
    return 0


def _print_summary(result, out: Path) -> None:
    """The headline numbers on stdout."""
    s = result.summary()
    print(f"targets: {s['targets']}, context {s['context']}: unperturbed loss "
          f"{s['base_loss_nats']:.4f} nats (perplexity {s['base_perplexity']:.1f}); "
          f"{result.stats['token_steps_per_second']:.0f} token-steps/s")
    inc = result.increase
    print("loss increase (nats) by distance: " + ", ".join(map(str, result.distances)))
    for i, p in enumerate(result.perturbations):
        print(f"  {p:8s} " + " ".join(f"{v:.4f}" for v in inc[i]))
    print("effective context (tolerance "
          f"{s['tolerance_nats']:.4f} nats): " + ", ".join(
              f"{p} {'>' + str(result.distances[-1]) if k is None else k}"
              for p, k in s["effective_context"].items()))
    print("last distance with a significant increase (interval above 0): " + ", ".join(
        f"{p} {k}" for p, k in s["last_significant_distance"].items()))
    print(f"wrote {out}")
