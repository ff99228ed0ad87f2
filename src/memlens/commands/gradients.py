"""``memlens gradients``: exact average state gradients per delay and word class.

Writes OUT/result.json, OUT/table.csv, OUT/gradients.npz and PNG plots. Long runs save a
checkpoint next to OUT every --checkpoint-every seconds and on Ctrl-C / SIGTERM (at any
moment, also during the bootstrap and the plots: exit code 130); --resume continues to a
result identical to an uninterrupted run. The checkpoint is deleted only once OUT is in place.

Under torchrun (torchrun --nproc-per-node N -m memlens gradients ...) each process accumulates
one contiguous shard of the stream after --warmup positions before its start; the sums are
all-reduced (gloo on CPU, NCCL on GPU), rank 0 writes OUT and prints; every rank keeps its own
checkpoint .OUT.partial.rank<r>.pt and resumes from it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from memlens.commands.common import add_model_arguments, add_option, add_overwrite, sharded_output
from memlens.commands.common import log as _log
from memlens.core.errors import MemlensError
from memlens.runtime.options import OPTIONS, check_option

# options of the runtime schema that this command takes, validated before anything is loaded
SCHEMA_OPTIONS = ("max_delay", "warmup", "columns", "checkpoint_every", "blocks", "bootstrap",
                  "dtype", "device")


def register(sub) -> None:
    p = sub.add_parser("gradients", help="exact average state gradients per delay and class",
                       description=__doc__)
    add_model_arguments(p)
    p.add_argument("--corpus", required=True, help="corpus (one continuous stream); for a "
                   "model with continuous inputs a .npy file of T x I input vectors")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    add_option(p, "layer")
    p.add_argument("--readout", default=None, help="readout name (default: cell for LSTM "
                   "layers, as the paper; the layer's output otherwise)")
    p.add_argument("--units", default="all", help="units of the readout: all (default), "
                   "indices 0,5,10-19, group:G (grouped LSTM), factor or basis:J (factorised "
                   "LSTM)")
    add_option(p, "max_delay", default=50, help="maximum delay K (default 50)")
    p.add_argument("--classes", help="class of each source position: upos | xpos | "
                   "groups:FILE | lexicon:FILE | freq:N | freq:E1,E2,... | words:FILE[,FILE]; "
                   "lexicon:FILE, upos or xpos followed by +groups:FILE applies tag groups to "
                   "those tags; a speech corpus: grapheme-type (the default)")
    add_option(p, "tagset")
    add_option(p, "contrasts", metavar="ptb|upos|A-B,C-D",
               help="tag contrasts: relative memory and top-5 alignment of the direction "
               "mean embedding of A minus that of B, on the gradient averaged over the words "
               "of A and B, with intervals; a preset, ptb (NNS-NN, NNPS-NNP, VBD-VB, VBZ-VBP, "
               "VBG-VB, VBN-VB, JJR-JJ, JJS-JJ, RBR-RB) or upos (NOUN-VERB, NOUN-ADJ, ...), or "
               "pairs A-B,C-D of --classes names; writes OUT/contrasts.csv")
    p.add_argument("--direction", help="property direction: two classes A,B (mean embedding "
                   "of A minus that of B) or a saved .npy vector")
    p.add_argument("--direction-weighting", choices=["type", "token"], default="type",
                   help="class-mean embeddings for --direction A,B: over vocabulary types, each "
                   "word once (default, as the original) or over token occurrences")
    add_option(p, "context", metavar="REGIME",
               help="context regime: stream (default: one stream, state carried, every "
               "pair), segment:S (state carried, pairs inside S-token segments: the "
               "original's truncated-BPTT pair set), sentence (state reset after each <eos> "
               "or utterance), window:N[,stride=M][,targets=last] (independent windows of N "
               "inputs from the initial state)")
    add_option(p, "max_tokens", help="analyse only the first N tokens")
    add_option(p, "warmup", metavar="W",
               help="under torchrun: positions each process runs before its shard start, "
               "accumulating nothing (default max(1000, 4 K); the single-process result is "
               "recovered as W grows)")
    add_option(p, "columns", metavar="C",
               help="input columns whose tangents one pass over the stream carries: a model "
               "too large for all E at once is run in ceil(E / C) passes with the same result "
               "(default: all when they fit in a quarter of the memory, else the most that fit)")
    p.add_argument("--out", required=True, help="result directory")
    add_option(p, "resume")
    add_overwrite(p)
    add_option(p, "checkpoint_every")
    add_option(p, "blocks", help="corpus blocks for the bootstrap (default 20)")
    add_option(p, "bootstrap", default=200, help="bootstrap resamples (default 200; 0: no "
               "intervals)")
    add_option(p, "dtype")
    p.add_argument("--method", choices=["auto", "hand", "generic"], default="auto",
                   help="tangent propagation: the layer's declared rule, hand-derived, or "
                   "torch.func.jvp")
    add_option(p, "device")
    add_option(p, "progress", flag="--no-progress", help="no progress bar")
    p.set_defaults(func=run)


def checkpoint_path(out: str | Path) -> Path:
    """The checkpoint beside OUT: ``.OUT.partial.pt``."""
    from memlens.runtime.progress import partial_path

    return partial_path(out, ".pt")


def run(args: argparse.Namespace) -> int:
    """Check the options and --out, then compute and write the result directory."""
    from memlens.models.run_inputs import check_max_tokens
    from memlens.runtime.options import resolve_device

    check_max_tokens(args.max_tokens)
    for name in SCHEMA_OPTIONS:
        check_option(name, getattr(args, name), OPTIONS[name].cli_flag)
    device = resolve_device(args.device)
    with sharded_output(args.out, args.overwrite, args.resume, device) as (out, device, group):
        return _run(args, out, device, group)


def _run(args: argparse.Namespace, out: Path, device, group) -> int:
    from memlens.runtime import distributed

    if group is None:
        return _compute(args, out, device, None)
    try:
        return _compute(args, out, device, group)
    except BaseException as exc:
        if not getattr(exc, "_memlens_agreed", False):  # failed before the accumulation
            distributed.agree(group, exc, "before the accumulation")
        raise


def _agreed(exc: BaseException) -> BaseException:
    """Mark an exception as already known to the other ranks (no second agreement)."""
    exc._memlens_agreed = True
    return exc


def _agree(group, err: BaseException | None, what: str) -> None:
    from memlens.runtime import distributed

    try:
        distributed.agree(group, err, what)
    except BaseException as exc:
        raise _agreed(exc) from None


def _compute(args: argparse.Namespace, out: Path, device, group) -> int:
    """Inputs, classes and directions; the accumulation; then the result directory."""
    from memlens.runtime import distributed
    from memlens.runtime.progress import Interrupted

    base = checkpoint_path(out)
    ck = base if group is None else distributed.rank_path(base, group.rank)
    if args.resume and not ck.exists():
        raise MemlensError(f"nothing to resume: no checkpoint {ck} (run without --resume)")
    data = _inputs(args, device)
    directions = _directions(args.direction, data.names)
    for name, vec in directions.items():
        if not isinstance(vec, tuple) and vec.size != data.loaded.encoder.input_size:
            raise MemlensError(f"direction vector {name!r} has {vec.size} entries; the model's "
                               f"inputs have {data.loaded.encoder.input_size}")
    if not args.resume and ck.exists():
        print(f"memlens: warning: starting afresh; removing the old checkpoint {ck}",
              file=sys.stderr)
        ck.unlink()
    if group is not None:
        _agree(group, None, "before the accumulation")
    try:
        result = _accumulate(args, data, base, device)
    except Interrupted as exc:
        print(f"memlens: {exc}", file=sys.stderr)
        return 130
    except BaseException as exc:  # the other ranks know (state_gradients agrees)
        raise _agreed(exc) from None
    return _finish(args, out, result, directions, data, ck, group)


# -- the inputs ----------------------------------------------------------------------------------
@dataclass
class _Inputs:
    """What the command analyses: the loaded model, the resolved site, the stream (token ids
    or T x I vectors), the classes of its positions and their names, the target mask (speech)
    and the corpus record of result.json."""

    loaded: object
    site: object
    values: object
    classes: list | None
    names: list[str] | None
    mask: np.ndarray | None
    corpus_meta: dict


def _inputs(args: argparse.Namespace, device) -> _Inputs:
    """Model, site (checked before the corpus is read), stream and classes."""
    from memlens.analyses.gradients import resolve_site
    from memlens.models.loading import load_model
    from memlens.models.run_inputs import read_run_inputs
    from memlens.protocol import Site

    loaded = load_model(args.model, args.vocab, device, args.unit)
    site = resolve_site(loaded.encoder, Site(args.layer, args.readout, args.units))
    if loaded.encoder.input_kind == "vectors" and _speech_corpus(args.corpus):
        speech = _speech_inputs(args, loaded)
        _check_length(args, len(speech["values"]))
        if args.classes not in (None, "grapheme-type"):
            raise MemlensError("a speech corpus has one class set: --classes grapheme-type "
                               "(vowel, consonant, space of the aligned grapheme; the default)")
        classes = speech["labels"]
        names = sorted({c for c in classes if c is not None})
        meta = {"path": str(args.corpus), "tokens": len(speech["values"]), "oov_rate": 0.0,
                "format": "npy"}
        return _Inputs(loaded, site, speech["values"], classes, names, speech["mask"], meta)
    inputs = read_run_inputs(loaded, args.corpus, format=args.format,
                             max_tokens=args.max_tokens, what="memlens gradients", log=_log)
    _check_length(args, len(inputs))
    names, classes = _token_classes(args, inputs)
    return _Inputs(loaded, site, inputs.inputs, classes, names, None, inputs.corpus_meta())


def _check_length(args: argparse.Namespace, n: int) -> None:
    if args.max_delay >= n:
        raise MemlensError(f"--max-delay {args.max_delay} is not shorter than the stream "
                           f"({n} tokens)")


def _token_classes(args: argparse.Namespace, inputs) -> tuple[list[str] | None, list | None]:
    """(class names, classes per position) of ``--classes`` on a token stream (None, None
    without it); word classes of a subword corpus go on each word's first sub-token."""
    from memlens.analyses.gradients.classes import token_classes
    from memlens.models.hf import SubwordCorpus

    if not args.classes:
        if args.tagset is not None:
            raise MemlensError("--tagset applies to --classes lexicon:FILE.conllu (give it)")
        return None, None
    if inputs.tokens is None:
        raise MemlensError("--classes needs a token corpus (this model reads vectors)")
    if isinstance(inputs.corpus, SubwordCorpus):
        return inputs.corpus.classes(partial(token_classes, tagset=args.tagset), args.classes,
                                     len(inputs.tokens), log=_log)
    return token_classes(args.classes, inputs.tokens, inputs.tags,
                         inputs.loaded.encoder.vocab, log=_log, tagset=args.tagset)


def _speech_corpus(path: str) -> bool:
    from memlens.data.speech.corpus import is_speech_corpus

    return is_speech_corpus(path) or str(path).endswith(".tsv")


def _speech_inputs(args: argparse.Namespace, loaded) -> dict:
    """A speech corpus through a train-asr model: its input frames (one stream), the
    grapheme type of each step (CTC forced alignment) and the target mask that keeps every
    (t, t - tau) pair inside one utterance (see memlens.analyses.speech.analysis)."""
    from memlens.analyses.speech.analysis import prepare_speech
    from memlens.models.asr import asr_settings, load_asr

    if asr_settings(loaded.extra) is None:
        raise MemlensError(f"{args.corpus} is a speech corpus: --model must be a memlens "
                           "train-asr checkpoint (its features and output layer align the "
                           "frames)")
    from memlens.models.inputs import Stream

    data = prepare_speech(load_asr(args.model), args.corpus)
    values, labels, offsets = data.values(), data.types(), data.offsets()
    if args.max_tokens:
        values, labels, offsets = (values[: args.max_tokens], labels[: args.max_tokens],
                                   offsets[: args.max_tokens])
    if args.context is not None:  # the regime decides: no mask, utterances as sentences
        return {"values": Stream(values.double(), sentences=np.nonzero(offsets == 0)[0]),
                "labels": labels, "mask": None}
    mask = offsets >= args.max_delay
    if not mask.any():
        raise MemlensError(f"no utterance is longer than --max-delay {args.max_delay} steps")
    return {"values": values.double(), "labels": labels, "mask": mask}


def _directions(spec: str | None, names: list[str] | None) -> dict:
    """{"A-B": (A, B)} for two classes, or {"vector": array} for a saved .npy direction."""
    if spec is None:
        if names and "NOUN" in names and "VERB" in names:
            return {"NOUN-VERB": ("NOUN", "VERB")}
        return {}
    if spec.endswith(".npy"):
        from memlens.models.run_inputs import load_vectors_file

        return {Path(spec).stem: load_vectors_file(spec, "direction vector")}
    parts = spec.split(",")
    if len(parts) != 2 or not names or any(p not in names for p in parts):
        raise MemlensError(f"--direction {spec!r}: give two classes A,B among the --classes "
                           "names, or a .npy file")
    return {f"{parts[0]}-{parts[1]}": (parts[0], parts[1])}


# -- the accumulation and the result -------------------------------------------------------------
def _accumulate(args: argparse.Namespace, data: _Inputs, base: Path, device):
    """``memlens.state_gradients`` with the command's options; the checkpoint (per rank
    under torchrun) is kept until the result directory is written."""
    from memlens.analyses.gradients import EngineSettings, state_gradients
    from memlens.runtime.options import Bootstrap, Checkpointing, RunOptions

    options = RunOptions(device=device, dtype=args.dtype,
                         bootstrap=Bootstrap(args.bootstrap, args.blocks),
                         checkpoint=Checkpointing(base, args.checkpoint_every, args.resume,
                                                  keep=True),
                         progress=args.progress)
    return state_gradients(data.loaded.model, data.values, args.max_delay, site=data.site,
                           classes=data.classes, class_names=data.names, method=args.method,
                           context=args.context, direction_weighting=args.direction_weighting,
                           contrasts=args.contrasts,
                           options=options,
                           engine=EngineSettings(target_mask=data.mask, warmup=args.warmup,
                                                 columns=args.columns))


def _finish(args: argparse.Namespace, out: Path, result, directions: dict, data: _Inputs,
            ck: Path, group) -> int:
    """Rank 0 writes OUT (every rank hears how it went); the checkpoint goes only then."""
    rank0 = group is None or group.rank == 0
    err = None
    if rank0:
        try:
            _write(args, out, result, directions, data)
        except BaseException as exc:
            err = exc
    if group is not None:
        _agree(group, err, "while rank 0 wrote the result")
    if isinstance(err, KeyboardInterrupt):
        _log(f"memlens: interrupted after the accumulation; progress saved to {ck}; rerun "
             "with --resume to continue")
        return 130
    if isinstance(err, MemlensError):
        raise _agreed(MemlensError(f"{err} (the accumulated sums stay in {ck}: rerun with "
                                   "--resume)")) from None
    if err is not None:
        raise _agreed(err)
    ck.unlink(missing_ok=True)  # only now: the result directory is in place
    if rank0:
        _print_summary(args, out, result, group)
    return 0


def _write(args: argparse.Namespace, out: Path, result, directions: dict, data: _Inputs) -> None:
    """Rank 0 (or the single process): directions, then the result directory."""
    from memlens.analyses.gradients.output import write_result

    if directions:
        directions = {k: (result.direction(*v) if isinstance(v, tuple) else v)
                      for k, v in directions.items()}
    settings = {"classes_spec": args.classes, "class_names": data.names or [],
                "bootstrap": args.bootstrap, "direction": args.direction,
                "tagset": args.tagset}
    write_result(result, out, data.loaded.info, data.corpus_meta, settings, args.bootstrap,
                 directions)


def _print_summary(args: argparse.Namespace, out: Path, result, group) -> None:
    s = result.stats
    print(f"tokens: {result.settings['tokens']} ({s['tokens_per_second']:.1f} tokens/s"
          + (f", {group.world} processes" if group is not None else "")
          + f"); condition number of Z: {result.normalization.condition:.2f}")
    spec = result.spectrum(None)
    for tau in sorted({0, 1, 5, 10, args.max_delay}):
        if tau <= args.max_delay:
            print(f"sum of singular values at delay {tau}: {spec[tau].sum():.4g}")
    st = result.stability
    if st is not None:
        lam = "n/a" if st.lyapunov is None else f"{st.lyapunov:.3g}"
        top = "n/a" if st.max_top1_share is None else f"{st.max_top1_share:.3g}"
        print(f"stability: Lyapunov estimate {lam} per step, top-1% share up to {top}: "
              + (f"UNSTABLE ({', '.join(st.flags)})" if st.flagged else "no warning"))
    best = result.summary().get("contrast_best")
    if best is not None:
        print(f"tag contrasts: best remembered {best} (mean relative memory over delays 1..K "
              f"{result.summary()[f'contrast_{best}_relmem_mean']:.3g}); see contrasts.csv")
    print(f"wrote {out}")
