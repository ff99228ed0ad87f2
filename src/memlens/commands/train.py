"""``memlens train``: train a recurrent language model and write a checkpoint.

The training state is saved after every epoch; after Ctrl-C / SIGTERM (exit code 130) the same
command with --resume continues from the last finished epoch.
"""

from __future__ import annotations

import argparse

from memlens.commands.common import add_option, add_overwrite, train_into
from memlens.models.lm import ARCHITECTURES
from memlens.training import TrainConfig, train


def register(sub) -> None:
    p = sub.add_parser("train", help="train a recurrent language model",
                       description=__doc__)
    p.add_argument("--train", required=True, help="training corpus")
    p.add_argument("--valid", help="validation corpus (best checkpoint by its perplexity)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    p.add_argument("--unit", choices=["word", "char"], default="word")
    p.add_argument("--arch", choices=ARCHITECTURES, default="lstm")
    for name in ("layers", "emb", "hidden", "rank", "groups", "vocab_size", "min_freq",
                 "epochs", "bptt", "batch"):
        add_option(p, name)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    add_option(p, "lr", help="learning rate (sgd: 1, adam: 0.002)")
    add_option(p, "clip")
    add_option(p, "dropout")
    p.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    p.add_argument("--pretrained", help="fixed embeddings in word2vec text format")
    add_option(p, "max_tokens", help="use only the first N training tokens")
    add_option(p, "seed")
    add_option(p, "device")
    add_option(p, "resume", help="continue an interrupted run from its last finished epoch")
    add_option(p, "progress", flag="--no-progress", help="no progress bar (default: a bar "
               "on a terminal)")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (TrainConfig validates every option) into --out, print the best epoch."""
    cfg = TrainConfig(train=args.train, valid=args.valid, out=args.out, format=args.format,
                      unit=args.unit, arch=args.arch, layers=args.layers, emb=args.emb,
                      hidden=args.hidden, rank=args.rank, groups=args.groups,
                      vocab_size=args.vocab_size, min_freq=args.min_freq, epochs=args.epochs,
                      bptt=args.bptt, batch=args.batch, optimizer=args.optimizer, lr=args.lr,
                      clip=args.clip, dropout=args.dropout, tied=args.tied,
                      pretrained=args.pretrained, max_tokens=args.max_tokens, seed=args.seed,
                      device=args.device, resume=args.resume,
                      progress=None if args.progress else False)
    model = train_into(args.out, args.overwrite, args.resume, lambda: train(cfg))
    best = min(model.history, key=lambda r: r.get("valid_loss", r["train_loss"]))
    print(f"best epoch {best['epoch']}: perplexity {best['valid_ppl']:.2f}; saved {args.out}")
    return 0
