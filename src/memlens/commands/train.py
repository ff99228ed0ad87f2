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
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--emb", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--rank", type=int, help="rank of the recurrent kernel (flstm)")
    p.add_argument("--groups", type=int, default=2, help="number of groups (glstm)")
    p.add_argument("--vocab-size", type=int, default=10000, help="word vocabulary cap")
    p.add_argument("--min-freq", type=int, default=1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--lr", type=float, help="learning rate (sgd: 1, adam: 0.002)")
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    p.add_argument("--pretrained", help="fixed embeddings in word2vec text format")
    add_option(p, "max_tokens", help="use only the first N training tokens")
    add_option(p, "seed")
    add_option(p, "device")
    add_option(p, "resume", help="continue an interrupted run from its last finished epoch")
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
                      device=args.device, resume=args.resume)
    model = train_into(args.out, args.overwrite, args.resume, lambda: train(cfg))
    best = min(model.history, key=lambda r: r.get("valid_loss", r["train_loss"]))
    print(f"best epoch {best['epoch']}: perplexity {best['valid_ppl']:.2f}; saved {args.out}")
    return 0
