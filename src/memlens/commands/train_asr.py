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
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--stack", type=int, default=3,
                   help="stack (and subsample by) this many 10 ms frames per step")
    p.add_argument("--norm", choices=["corpus", "utterance", "none"], default="corpus",
                   help="mean/variance normalisation of the features")
    p.add_argument("--dropout", type=float, default=0.0, help="between layers")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="utterances per batch")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=5.0, help="gradient-norm clip")
    p.add_argument("--max-train", type=int, help="use only the first N training utterances")
    p.add_argument("--time-limit", type=float,
                   help="minutes of training: stop (evaluate, save) once passed "
                   "(checked before every batch)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    add_option(p, "seed")
    add_option(p, "resume", help="continue an interrupted run from its last finished epoch")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (ASRConfig / train_asr validate the options) into --out, print the best epoch."""
    from memlens.training.asr import ASRConfig, train_asr

    cfg = ASRConfig(data=args.data, out=args.out, arch=args.arch, layers=args.layers,
                    hidden=args.hidden, stack=args.stack, norm=args.norm,
                    dropout=args.dropout, epochs=args.epochs, batch=args.batch, lr=args.lr,
                    clip=args.clip, seed=args.seed, max_train=args.max_train,
                    time_limit=args.time_limit, threads=args.threads, resume=args.resume)
    model = train_into(args.out, args.overwrite, args.resume, lambda: train_asr(cfg))
    best = min(model.history, key=lambda r: r["cer"])
    print(f"best epoch {best['epoch']}: held-out CER {100 * best['cer']:.2f}% WER "
          f"{100 * best['wer']:.2f}%; saved {args.out}")
    return 0
