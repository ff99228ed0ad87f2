"""``memlens ngram``: train a count-based n-gram LM (interpolated Kneser-Ney) and evaluate it.

Prints bits per symbol and perplexity on the evaluation text (last line: ``perplexity: X``).
This is the n-gram model of the n-gram vs recurrent memory comparison of ``memlens
signatures --ngram N``.
"""

from __future__ import annotations

import argparse

from memlens.commands.common import add_option, add_overwrite


def register(sub) -> None:
    p = sub.add_parser("ngram", help="train/evaluate a Kneser-Ney n-gram LM",
                       description=__doc__)
    p.add_argument("--train", required=True, help="training text")
    p.add_argument("--eval", help="evaluation text (default: the training text)")
    add_option(p, "order")
    p.add_argument("--unit", choices=["word", "char"], default="char")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    add_option(p, "max_tokens", help="use only the first N training tokens")
    p.add_argument("--out", help="write the evaluation summary as JSON here")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options and --out, fit the model, print (and write) the evaluation."""
    from contextlib import nullcontext

    from memlens.core.seal import seal_json
    from memlens.core.version import __version__
    from memlens.data import load_corpus
    from memlens.models.ngram import KneserNeyLM
    from memlens.models.run_inputs import check_max_tokens
    from memlens.runtime.io import claim_output, write_json

    max_tokens = check_max_tokens(args.max_tokens)
    claim = claim_output(args.out, args.overwrite, directory=False,
                                 scratch=()) if args.out else nullcontext()
    with claim as out:
        train = load_corpus(args.train, args.format, args.unit).tokens
        if max_tokens:
            train = train[:max_tokens]
        ev_tokens = load_corpus(args.eval, args.format, args.unit).tokens if args.eval \
            else train
        lm = KneserNeyLM(args.order).fit(train)
        report = lm.evaluate(ev_tokens)
        unit = "character" if args.unit == "char" else "word"
        print(f"{args.order}-gram interpolated Kneser-Ney, {len(train)} training tokens")
        print(f"evaluation tokens: {report['tokens']} (OOV {100 * report['oov_rate']:.2f}%)")
        print(f"bits per {unit}: {report['bits']:.4f}")
        print(f"perplexity: {report['perplexity']:.4f}")
        if out is not None:
            write_json(out, seal_json({"kind": "ngram", "memlens_version": __version__,
                             "order": args.order, "unit": args.unit,
                             "smoothing": "interpolated Kneser-Ney", "train": args.train,
                             "train_tokens": len(train), "eval": args.eval or args.train,
                             **report}))
    return 0
