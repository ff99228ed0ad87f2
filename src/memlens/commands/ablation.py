"""``memlens ablation``: how far back a language model *uses* its context (Khandelwal et al.).

For N targets the model reads a window of --context L tokens; the tokens farther than k from
the target are shuffled, replaced by unigram draws or dropped, and the increase of the loss on
the same targets is measured for every distance k. Writes OUT/result.json, OUT/table.csv,
OUT/ablation.npz and PNG plots. Finished batches are saved beside OUT every --checkpoint-every
seconds and on Ctrl-C / SIGTERM (exit code 130); --resume continues to the same result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memlens.cli import add_overwrite
from memlens.commands.common import add_model_arguments, sharded_output
from memlens.commands.common import log as _log
from memlens.errors import MemlensError

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
    p.add_argument("--context", type=int, default=300,
                   help="context window L read before every target (default 300)")
    p.add_argument("--targets", type=int, default=1000,
                   help="number of target positions, evenly spaced (default 1000)")
    p.add_argument("--max-tokens", type=int, help="use only the first N tokens of the corpus")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the intervals (0: none; default 1000)")
    p.add_argument("--blocks", type=int, default=20, help="contiguous blocks of targets for "
                   "the bootstrap (default 20)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="effective context: |loss increase| <= this fraction of the "
                   "unperturbed loss (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    p.add_argument("--batch-size", type=int, default=256, help="contexts per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True, help="result directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    add_overwrite(p)
    p.add_argument("--checkpoint-every", type=float, default=60.0,
                   help="seconds between checkpoints (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.partial.npz"


def run(args: argparse.Namespace) -> int:
    """Check the options and --out, then compute and write the result directory."""
    from memlens.ablation.api import MAX_CONTEXT, parse_list
    from memlens.ablation.result import PERTURBATIONS
    from memlens.limits import check_int

    check_int(args.context, "--context", 2, MAX_CONTEXT)
    distances = parse_list(args.distances, "--distances")
    for k in distances:
        check_int(k, "--distances: each distance", 1, args.context - 1)
    for p in parse_list(args.perturbation, "--perturbation", str):
        if p not in PERTURBATIONS:
            raise MemlensError(f"--perturbation: unknown {p!r}; choose from "
                               f"{', '.join(PERTURBATIONS)}")
    for name in ("targets", "batch_size", "blocks"):
        if getattr(args, name) < (2 if name == "blocks" else 1):
            raise MemlensError(f"--{name.replace('_', '-')} must be "
                               f"{'at least 2' if name == 'blocks' else 'positive'}, got "
                               f"{getattr(args, name)}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise MemlensError(f"--max-tokens must be positive, got {args.max_tokens}")
    if args.bootstrap < 0:
        raise MemlensError(f"--bootstrap must be non-negative, got {args.bootstrap}")
    if not 0 <= args.tolerance < 1:
        raise MemlensError(f"--tolerance must be a fraction in [0, 1), got {args.tolerance}")
    if not args.checkpoint_every > 0:
        raise MemlensError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")
    from memlens.train import resolve_device

    with sharded_output(args.out, args.overwrite, args.resume,
                        resolve_device(args.device)) as (out, device, group):
        return _run(args, out, device, group)


def _run(args: argparse.Namespace, out: Path, device, group) -> int:
    """Load, compute (sharded over the ranks of ``group`` when given), rank 0 writes OUT."""
    from memlens import distributed
    from memlens.ablation import AblationInterrupted, context_ablation
    from memlens.models.loading import load_model

    base = checkpoint_path(out)
    ck = base if group is None else distributed.rank_path(base, group.rank)
    with distributed.agreed(group, "before the context ablation"):
        if args.resume and not ck.exists():
            raise MemlensError(f"nothing to resume: no checkpoint {ck} (run without --resume)")
        loaded = load_model(args.model, args.vocab, device, args.unit)
        if loaded.encoder.input_kind != "tokens":
            raise MemlensError("context ablation needs a token model; this one reads vectors")
        if loaded.vocab is None:
            raise MemlensError(f"the model {args.model} has no vocabulary: give --vocab FILE "
                               "(its symbols, one per line in id order)")
        corpus = loaded.read_corpus(args.corpus, args.format)
        tokens = corpus.tokens[: args.max_tokens] if args.max_tokens else corpus.tokens
        oov = loaded.vocab.oov_rate(tokens)
        if oov > 0.5:
            _log(f"memlens: warning: vocabulary mismatch? {100 * oov:.1f}% of the corpus tokens "
                 "are unknown to the model")
        if len(tokens) <= args.context:
            raise MemlensError(f"the corpus has {len(tokens)} tokens: --context {args.context} "
                               "leaves no target")
        if not args.resume and ck.exists():
            _log(f"memlens: warning: starting afresh; removing the old checkpoint {ck}")
            ck.unlink()
    step = [0]

    def progress(done: int, total: int) -> None:
        if not args.no_progress and done * 10 // total > step[0]:
            step[0] = done * 10 // total
            _log(f"memlens: {done}/{total} batches")

    try:
        result = context_ablation(loaded.model, tokens, args.distances, args.perturbation,
                                  context=args.context, targets=args.targets,
                                  bootstrap=args.bootstrap, blocks=args.blocks,
                                  tolerance=args.tolerance, seed=args.seed,
                                  batch_size=args.batch_size, device=device, checkpoint=base,
                                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                                  keep_checkpoint=True, on_batch=progress)
    except AblationInterrupted as exc:
        _log(f"memlens: {exc}")
        return 130
    result.model_meta = {**loaded.info, **result.model_meta}
    result.corpus_meta = {"path": str(args.corpus), "tokens": len(tokens), "oov_rate": oov,
                          "format": args.format}
    try:
        with distributed.agreed(group, "while rank 0 wrote the result"):
            if group is None or group.rank == 0:
                result.save(out)
    except KeyboardInterrupt:
        _log(f"memlens: interrupted while writing; progress saved to {ck}; rerun with "
             "--resume")
        return 130
    ck.unlink(missing_ok=True)  # only now: the result directory is in place
    if group is not None and group.rank != 0:
        return 0
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
    return 0
