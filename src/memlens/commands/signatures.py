"""``memlens signatures``: memory signatures of a model's states, with baselines and controls.

For every lag k = 0..K a decoder predicts the symbol x[t-k] from the state s[t]; all lags are
trained jointly on states of the training text and scored on states of held-out text. The
result directory holds result.json, table.csv, recall.npz and PNG plots. Every finished
signature is saved in .<OUT>.partial/ beside OUT; after Ctrl-C / SIGTERM (exit code 130)
--resume continues from there to the same result as an uninterrupted run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memlens.cli import add_overwrite
from memlens.commands.common import add_model_arguments
from memlens.errors import MemlensError
from memlens.signatures.decoders import DECODERS


def register(sub) -> None:
    p = sub.add_parser("signatures", help="memory signatures (what states remember, per lag)",
                       description=__doc__)
    add_model_arguments(p)
    p.add_argument("--corpus", required=True, help="text whose states train the decoders; "
                   "or a speech corpus directory (manifest.tsv with a train/test split, or "
                   "LibriSpeech layout) for a memlens train-asr model: lags in graphemes")
    p.add_argument("--heldout", help="held-out text for the reported numbers (default: the "
                   "part of --corpus after the training part)")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    p.add_argument("--layer", "--layers", dest="layers", default="all",
                   help="all or comma-separated layer indices (--layers is the old name)")
    p.add_argument("--readout", default=None, help="readout name (default: the layer's output, "
                   "hidden; cell for an LSTM's cell state)")
    p.add_argument("--units", default="all", help="all, unit indices (0,5,10-19), group:G, "
                   "groups (one signature per group) or factor (rank-r factor space), basis:J "
                   "(coefficient (A h)_J of basis J of a factorised kernel W_hh = B A) or bases "
                   "(the factor space and every basis, with their divergence)")
    p.add_argument("--max-delay", "--max-lag", dest="max_delay", type=int, default=20,
                   help="largest lag K (--max-lag is the old name)")
    p.add_argument("--decoder", choices=DECODERS, default="linear",
                   help="linear: joint softmax trained by Adam from a random start; "
                   "linear-fast: the same softmax from a closed-form (LDA) start and 3 "
                   "epochs, for large symbol sets (thousands of word types: 5x faster at "
                   "equal held-out accuracy, README); mlp: one shared hidden layer")
    p.add_argument("--labels", "--symbols", dest="symbols", help="what is decoded: chars, "
                   "top:N or upos (default: chars for character models, top:1000 for word "
                   "models; --symbols is the old name)")
    p.add_argument("--control", choices=["random-init", "none"], default="random-init")
    p.add_argument("--ngram", type=int, default=0, help="add the state of an N-gram model "
                   "(its window) as a comparison, and its KN perplexity (0 = off)")
    p.add_argument("--window-lm", type=int, default=0, help="add a feed-forward window LM of "
                   "order N as a comparison (0 = off)")
    p.add_argument("--lm-train", help="text for the comparison LMs (default: the model's "
                   "training text if recorded in the checkpoint)")
    p.add_argument("--lm-max-tokens", type=int, default=300000)
    p.add_argument("--lm-epochs", type=int, default=2)
    p.add_argument("--train-tokens", type=int, help="use only the first N training tokens")
    p.add_argument("--heldout-tokens", type=int, help="use only N held-out tokens")
    p.add_argument("--blocks", type=int, default=20, help="bootstrap blocks")
    p.add_argument("--bootstrap", "--resamples", dest="bootstrap", type=int, default=1000,
                   help="bootstrap resamples (0: no intervals; --resamples is the old name)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (state extraction)")
    p.add_argument("--warmup", type=int, default=None,
                   help="under torchrun: positions each process reads before its shard of the "
                   "streams (default max(1000, 4 K))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="result directory")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from .<OUT>.partial/")
    add_overwrite(p)
    p.set_defaults(func=run)


def progress_path(out: str | Path) -> Path:
    """Where the finished signatures of a run on ``out`` are kept until OUT is in place."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def run(args: argparse.Namespace) -> int:
    """Check --out, compute the study (saving progress), write OUT, drop the progress."""
    from memlens import __version__, distributed
    from memlens.commands.common import sharded_output
    from memlens.signatures.result import write_result
    from memlens.signatures.study import StudyConfig, StudyProgress, run_study
    from memlens.train import resolve_device

    if args.warmup is not None and args.warmup < 0:
        raise MemlensError(f"--warmup must be >= 0, got {args.warmup}")
    with sharded_output(args.out, args.overwrite, args.resume,
                        resolve_device(args.device)) as (out, device, group):
        rank0 = group is None or group.rank == 0
        cfg = StudyConfig(model=args.model, corpus=args.corpus, out=args.out,
                          heldout=args.heldout, format=args.format, layers=args.layers,
                          readout=args.readout, units=args.units, max_delay=args.max_delay,
                          decoder=args.decoder, symbols=args.symbols, control=args.control,
                          ngram=args.ngram, window_lm=args.window_lm, lm_train=args.lm_train,
                          lm_max_tokens=args.lm_max_tokens, lm_epochs=args.lm_epochs,
                          train_tokens=args.train_tokens, heldout_tokens=args.heldout_tokens,
                          blocks=args.blocks, bootstrap=args.bootstrap, seed=args.seed,
                          vocab=args.vocab, unit=args.unit, device=str(device),
                          warmup=args.warmup, world_size=1 if group is None else group.world)
        progress = None
        with distributed.agreed(group, "checking the saved progress"):
            if rank0:
                progress = StudyProgress(progress_path(out), cfg, args.resume)
        try:
            if _is_speech(args):  # a speech recogniser on a speech corpus (no --resume)
                from memlens.analyses.speech.analysis import speech_signature_study

                if group is not None:
                    raise MemlensError("signatures of a speech corpus run as one process "
                                       "(not under torchrun)")
                result = speech_signature_study(cfg)
            else:
                result = run_study(cfg, progress=progress, log=print if rank0 else _silent)
            if not rank0:
                return 0
            path = write_result(result, out, __version__)
        except KeyboardInterrupt:
            if not rank0:
                raise
            raise KeyboardInterrupt(f"interrupted; finished signatures are saved in "
                                    f"{progress.path}; rerun with --resume to continue"
                                    ) from None
        except BaseException:
            if progress is not None and not progress.state["entries"]:
                progress.discard()
            raise
        progress.discard()  # only now: the result directory is in place
    print(f"wrote {path}/result.json ({len(result.entries)} signatures)")
    return 0


def _silent(*_args) -> None:
    """The log of ranks other than 0."""


def _is_speech(args: argparse.Namespace) -> bool:
    """True when --corpus is a speech corpus directory (manifest.tsv / *.trans.txt)."""
    from memlens.data.speech.corpus import is_speech_corpus

    return is_speech_corpus(args.corpus) or str(args.corpus).endswith(".tsv")
