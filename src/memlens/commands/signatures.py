"""``memlens signatures``: memory signatures of a model's states, with baselines and controls.

For every lag k = 0..K a decoder predicts the symbol x[t-k] from the state s[t]; all lags are
trained jointly on states of the training text and scored on states of held-out text. The
result directory holds result.json, table.csv, recall.npz and PNG plots. Every finished
signature is saved in .<OUT>.partial.npz beside OUT; after Ctrl-C / SIGTERM (exit code 130)
--resume continues from there to the same result as an uninterrupted run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memlens.analyses.signatures.decoders import DECODER_CHOICES
from memlens.commands.common import add_model_arguments, add_option, add_overwrite
from memlens.core.errors import MemlensError


def register(sub) -> None:
    p = sub.add_parser("signatures", help="memory signatures (what states remember, per lag)",
                       description=__doc__)
    add_model_arguments(p)
    _add_inputs(p)
    _add_measure(p)
    _add_comparisons(p)
    add_option(p, "blocks", help="bootstrap blocks (at least 2; default 20)")
    add_option(p, "bootstrap", default=1000,
               help="bootstrap resamples (0: no intervals; default 1000)")
    add_option(p, "device", help="auto, cpu or cuda (state extraction)")
    add_option(p, "warmup")
    add_option(p, "seed")
    p.add_argument("--out", required=True, help="result directory")
    add_option(p, "resume", help="continue an interrupted run from .<OUT>.partial.npz")
    add_option(p, "progress", flag="--no-progress", help="no progress lines (one per "
               "signature) on stdout")
    add_overwrite(p)
    p.set_defaults(func=run)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """--corpus, --heldout, --format, --train-tokens, --heldout-tokens."""
    p.add_argument("--corpus", required=True, help="text whose states train the decoders; "
                   "or a speech corpus directory (manifest.tsv with a train/test split, or "
                   "LibriSpeech layout) for a memlens train-asr model: lags in graphemes")
    p.add_argument("--heldout", help="held-out text for the reported numbers (default: the "
                   "part of --corpus after the training part)")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    add_option(p, "train_tokens")
    add_option(p, "heldout_tokens")


def _add_measure(p: argparse.ArgumentParser) -> None:
    """What is measured: --layer, --readout, --units, --max-delay, --decoder, --symbols."""
    p.add_argument("--layer", default="all",
                   help="all (default), a layer index or comma-separated layer indices")
    p.add_argument("--readout", default=None, help="readout name (default: the layer's output, "
                   "hidden; cell for an LSTM's cell state)")
    p.add_argument("--units", default="all", help="all, unit indices (0,5,10-19), group:G, "
                   "groups (one signature per group) or factor (rank-r factor space), basis:J "
                   "(coefficient (A h)_J of basis J of a factorised kernel W_hh = B A) or bases "
                   "(the factor space and every basis, with their divergence)")
    add_option(p, "max_delay", default=20, help="largest lag K (default 20)")
    add_option(p, "context", metavar="REGIME",
               help="context regime of the model and its control: stream (default for text: "
               "one continuous pass, state carried), segment:S, sentence (state reset after each "
               "<eos>: one line = one sentence) or window:N[,stride=M][,targets=last] "
               "(independent windows from the initial state); lags stay inside a segment. "
               "The n-gram and window-LM comparisons always read the stream. Speech corpora: "
               "sentence (default: each utterance from the initial state) or stream")
    p.add_argument("--decoder", choices=DECODER_CHOICES, default="auto",
                   help="auto (default): linear-fast from 1000 decoded symbols on (word "
                   "models), else linear; linear: joint softmax trained by Adam from a "
                   "random start; "
                   "linear-fast: the same softmax from a closed-form (LDA) start and 3 "
                   "epochs, for large symbol sets (thousands of word types: 5x faster at "
                   "equal held-out accuracy, docs/analyses/signatures.md); mlp: one shared "
                   "hidden layer")
    p.add_argument("--symbols", help="what is decoded: chars, top:N or upos (default: chars "
                   "for character models, top:1000 for word models)")


def _add_comparisons(p: argparse.ArgumentParser) -> None:
    """The control and the comparison models: --control, --ngram, --window-lm, --lm-*."""
    p.add_argument("--control", choices=["random-init", "none"], default="random-init")
    add_option(p, "ngram", help="add the state of an N-gram model (its window) as a "
               "comparison, and its KN perplexity (0 = off)")
    add_option(p, "window_lm", help="add a feed-forward window LM of order N as a comparison "
               "(0 = off)")
    p.add_argument("--lm-train", help="text for the comparison LMs (default: the model's "
                   "training text if recorded in the checkpoint)")
    add_option(p, "lm_max_tokens")
    add_option(p, "lm_epochs")


def progress_path(out: str | Path) -> Path:
    """Where the finished signatures of a run on ``out`` are kept until OUT is in place."""
    from memlens.runtime.progress import partial_path

    return partial_path(out, ".npz")


def study_config(args: argparse.Namespace, device, world_size: int = 1):
    """The :class:`~memlens.analyses.signatures.config.StudyConfig` of the parsed ``args``
    (``device``: the resolved device)."""
    from memlens.analyses.signatures.config import StudyConfig

    return StudyConfig(model=args.model, corpus=args.corpus, out=args.out,
                       heldout=args.heldout, format=args.format, layer=args.layer,
                       readout=args.readout, units=args.units, max_delay=args.max_delay,
                       decoder=args.decoder, symbols=args.symbols, control=args.control,
                       ngram=args.ngram, window_lm=args.window_lm, lm_train=args.lm_train,
                       lm_max_tokens=args.lm_max_tokens, lm_epochs=args.lm_epochs,
                       train_tokens=args.train_tokens, heldout_tokens=args.heldout_tokens,
                       blocks=args.blocks, bootstrap=args.bootstrap, seed=args.seed,
                       vocab=args.vocab, unit=args.unit, device=str(device),
                       warmup=args.warmup, world_size=world_size, context=args.context)


def run(args: argparse.Namespace) -> int:
    """Check --out, compute the study (saving progress), write OUT, drop the progress."""
    from memlens.analyses.signatures.config import check_config
    from memlens.analyses.signatures.progress import StudyCheckpoint
    from memlens.analyses.signatures.result import write_result
    from memlens.commands.common import sharded_output
    from memlens.runtime import distributed
    from memlens.runtime.options import resolve_device

    check_config(study_config(args, args.device))
    with sharded_output(args.out, args.overwrite, args.resume,
                        resolve_device(args.device), scratch=".npz") as (out, device, group):
        rank0 = group is None or group.rank == 0
        cfg = study_config(args, device, 1 if group is None else group.world)
        checkpoint = None
        with distributed.agreed(group, "checking the saved progress"):
            if rank0:
                checkpoint = StudyCheckpoint(progress_path(out), cfg, args.resume)
        try:
            result = _compute(args, cfg, checkpoint, group)
            if not rank0:
                return 0
            path = write_result(result, out)
        except BaseException:
            if checkpoint is not None and not checkpoint.done:
                checkpoint.discard()
            raise
        checkpoint.discard()  # only now: the result directory is in place
    print(f"wrote {path}/result.json ({len(result.entries)} signatures)")
    return 0


def _compute(args: argparse.Namespace, cfg, checkpoint, group):
    """The study's result: a speech study for a speech corpus, else the text study."""
    from memlens.analyses.signatures.study import run_study

    if not _is_speech(args):
        rank0 = group is None or group.rank == 0
        return run_study(cfg, log=print if rank0 and args.progress else _silent,
                         checkpoint=checkpoint)
    from memlens.analyses.speech.analysis import speech_signature_study

    if group is not None:  # a speech recogniser on a speech corpus (no --resume)
        raise MemlensError("signatures of a speech corpus run as one process (not under "
                           "torchrun)")
    return speech_signature_study(cfg)


def _silent(*_args) -> None:
    """The log of ranks other than 0."""


def _is_speech(args: argparse.Namespace) -> bool:
    """True when --corpus is a speech corpus directory (manifest.tsv / *.trans.txt)."""
    from memlens.data.speech.corpus import is_speech_corpus

    return is_speech_corpus(args.corpus) or str(args.corpus).endswith(".tsv")
