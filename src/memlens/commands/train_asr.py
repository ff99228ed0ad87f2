"""``memlens train-asr``: train a grapheme CTC speech recogniser and write a checkpoint.

A causal multi-layer LSTM/GRU over stacked 80-bin log-mel frames, a linear grapheme output
(letters, space, apostrophe, blank), CTC loss, Adam. After every epoch the held-out greedy
CER/WER is printed, the best model (lowest CER) is written atomically to --out, and the
training state is saved; after Ctrl-C / SIGTERM (exit 130) the same command with --resume
continues from the last finished epoch. The checkpoint loads with --model in every analysis
(a vector-input encoder over the stacked frames).
"""

from __future__ import annotations

import argparse

from memlens.commands.common import add_option, add_overwrite, train_into


def register(sub) -> None:
    p = sub.add_parser("train-asr", help="train a grapheme CTC speech recogniser",
                       description=__doc__)
    p.add_argument("--data", required=True, help="speech corpus: manifest.tsv (or a directory "
                   "holding it; a 'split' column of train/test selects the held-out "
                   "utterances, else the last 10%%) or a LibriSpeech-layout directory")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--arch", choices=["lstm", "gru"], default="lstm")
    add_option(p, "layers", default=3)
    add_option(p, "hidden")
    add_option(p, "stack")
    p.add_argument("--norm", choices=["corpus", "utterance", "none"], default="corpus",
                   help="mean/variance normalisation of the features")
    add_option(p, "dropout", default=0.0, help="dropout between layers, in [0, 1)")
    add_option(p, "epochs", default=10)
    add_option(p, "batch", default=16, help="utterances per batch")
    add_option(p, "lr", default=2e-3, help="Adam learning rate")
    for name in ("clip", "max_train", "time_limit", "threads"):
        add_option(p, name)
    add_option(p, "seed")
    add_option(p, "resume", help="continue an interrupted run from its last finished epoch")
    add_option(p, "progress", flag="--no-progress", help="no per-epoch progress lines")
    add_overwrite(p)
    p.set_defaults(func=run)


def _quiet(_message: str) -> None:
    """The log of ``--no-progress``."""


def run(args: argparse.Namespace) -> int:
    """Train (ASRConfig / train_asr validate the options) into --out, print the best epoch."""
    from memlens.training.asr import ASRConfig, train_asr

    cfg = ASRConfig(data=args.data, out=args.out, arch=args.arch, layers=args.layers,
                    hidden=args.hidden, stack=args.stack, norm=args.norm,
                    dropout=args.dropout, epochs=args.epochs, batch=args.batch, lr=args.lr,
                    clip=args.clip, seed=args.seed, max_train=args.max_train,
                    time_limit=args.time_limit, threads=args.threads, resume=args.resume)
    log = print if args.progress else _quiet
    model = train_into(args.out, args.overwrite, args.resume, lambda: train_asr(cfg, log=log))
    best = min(model.history, key=lambda r: r["cer"])
    print(f"best epoch {best['epoch']}: held-out CER {100 * best['cer']:.2f}% WER "
          f"{100 * best['wer']:.2f}%; saved {args.out}")
    return 0
