"""``memlens eval``: perplexity of a trained model on a corpus (last line: ``perplexity: X``)."""

from __future__ import annotations

import argparse

from memlens.commands.common import add_option, inputs_from_args
from memlens.core.errors import MemlensError
from memlens.models.lm import LanguageModel
from memlens.runtime.options import resolve_device
from memlens.training import perplexity_report


def register(sub) -> None:
    p = sub.add_parser("eval", help="perplexity of a model on a corpus", description=__doc__)
    p.add_argument("--model", required=True, help="memlens checkpoint")
    p.add_argument("--corpus", required=True, help="corpus to evaluate on")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    add_option(p, "device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and the corpus (the shared loader), print the perplexity report."""
    device = resolve_device(args.device)
    run_inputs = inputs_from_args(args, need="tokens", device=device)
    model = run_inputs.loaded.model
    if not isinstance(model, LanguageModel):
        raise MemlensError(f"memlens eval needs a language model (a memlens train checkpoint, "
                           f"with its output layer); {args.model} is an encoder only")
    report = perplexity_report(model, run_inputs.corpus, device)
    unit = "character" if run_inputs.loaded.unit == "char" else "word"
    print(f"tokens: {report['tokens']}")
    print(f"unigram perplexity (same vocabulary): {report['unigram_perplexity']:.4f}")
    print(f"bits per {unit}: {report['bits']:.4f}")
    print(f"perplexity: {report['perplexity']:.4f}")
    return 0
