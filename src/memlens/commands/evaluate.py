"""``memlens eval``: perplexity of a trained model on a corpus (last line: ``perplexity: X``)."""

from __future__ import annotations

import argparse

from memlens.data import load_corpus
from memlens.models.checkpoint import load_checkpoint
from memlens.runtime.options import resolve_device
from memlens.training import perplexity_report


def register(sub) -> None:
    p = sub.add_parser("eval", help="perplexity of a model on a corpus", description=__doc__)
    p.add_argument("--model", required=True, help="memlens checkpoint")
    p.add_argument("--corpus", required=True, help="corpus to evaluate on")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model = load_checkpoint(args.model, device)
    corpus = load_corpus(args.corpus, args.format, model.config["unit"])
    report = perplexity_report(model, corpus, device)
    unit = "character" if model.config["unit"] == "char" else "word"
    print(f"tokens: {report['tokens']}")
    print(f"unigram perplexity (same vocabulary): {report['unigram_perplexity']:.4f}")
    print(f"bits per {unit}: {report['bits']:.4f}")
    print(f"perplexity: {report['perplexity']:.4f}")
    return 0
