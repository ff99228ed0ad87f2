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
from pathlib import Path

import numpy as np

from memlens.cli import add_overwrite
from memlens.commands.common import add_model_arguments, load_vectors, sharded_output
from memlens.commands.common import log as _log
from memlens.data.vocab import EOS
from memlens.errors import MemlensError


def register(sub) -> None:
    p = sub.add_parser("gradients", help="exact average state gradients per delay and class",
                       description=__doc__)
    add_model_arguments(p)
    p.add_argument("--corpus", required=True, help="corpus (one continuous stream); for a "
                   "model with continuous inputs a .npy file of T x I input vectors")
    p.add_argument("--format", choices=["text", "conllu"], default="text")
    p.add_argument("--layer", type=int, default=-1, help="readout layer (default: top)")
    p.add_argument("--readout", "--state", dest="readout", default=None,
                   help="readout name (default: cell for LSTM layers, as the paper; the "
                   "layer's output otherwise); --state is the old name")
    p.add_argument("--max-delay", type=int, default=50, help="maximum delay K")
    p.add_argument("--labels", "--classes", dest="classes",
                   help="class of each source position: upos | xpos | groups:FILE | "
                   "lexicon:FILE | freq:N | freq:E1,E2,... | words:FILE[,FILE]; lexicon:FILE, "
                   "upos or xpos followed by +groups:FILE applies tag groups to those tags "
                   "(--classes is the old name)")
    p.add_argument("--direction", help="property direction: two classes A,B (mean embedding "
                   "of A minus that of B) or a saved .npy vector")
    p.add_argument("--direction-weighting", choices=["type", "token"], default="type",
                   help="class-mean embeddings for --direction A,B: over vocabulary types, each "
                   "word once (default, as the original) or over token occurrences")
    p.add_argument("--segment", type=int, metavar="S",
                   help="average only pairs with source and target in the same S-token "
                   "segment (the original's truncated-BPTT pair set); default: every pair")
    p.add_argument("--max-tokens", type=int, help="analyse only the first N tokens")
    p.add_argument("--warmup", type=int, metavar="W",
                   help="under torchrun: positions each process runs before its shard start, "
                   "accumulating nothing (default max(1000, 4 K); the single-process result "
                   "is recovered as W grows)")
    p.add_argument("--out", required=True, help="result directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    add_overwrite(p)
    p.add_argument("--checkpoint-every", type=float, default=300.0,
                   help="seconds between checkpoints (default 300)")
    p.add_argument("--blocks", type=int, default=20, help="corpus blocks for the bootstrap")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="bootstrap resamples (0: no intervals)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--method", choices=["auto", "hand", "generic"], default="auto",
                   help="tangent propagation: hand-derived or torch.func.jvp")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.partial.pt"


def run(args: argparse.Namespace) -> int:
    """Check the options and --out, then compute and write the result directory."""
    if args.max_tokens is not None and args.max_tokens < 1:
        raise MemlensError(f"--max-tokens must be positive, got {args.max_tokens}")
    if args.max_delay < 0:
        raise MemlensError(f"--max-delay must be >= 0, got {args.max_delay}")
    if args.blocks < 1 or args.bootstrap < 0:
        raise MemlensError("--blocks must be positive and --bootstrap non-negative")
    if not args.checkpoint_every > 0:
        raise MemlensError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")
    if args.warmup is not None and args.warmup < 0:
        raise MemlensError(f"--warmup must be >= 0, got {args.warmup}")
    from memlens.train import resolve_device

    device = resolve_device(args.device)
    with sharded_output(args.out, args.overwrite, args.resume, device) as (out, device, group):
        return _run(args, out, device, group)


def _run(args: argparse.Namespace, out: Path, device, group) -> int:
    from memlens import distributed

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
    from memlens import distributed

    try:
        distributed.agree(group, err, what)
    except BaseException as exc:
        raise _agreed(exc) from None


def _compute(args: argparse.Namespace, out: Path, device, group) -> int:
    from memlens import distributed
    from memlens.gradients import GradientsInterrupted, state_gradients
    from memlens.gradients.classes import token_classes
    from memlens.models.hf import SubwordCorpus
    from memlens.models.loading import load_model

    rank0 = group is None or group.rank == 0
    base = checkpoint_path(out)
    ck = base if group is None else distributed.rank_path(base, group.rank)
    if args.resume and not ck.exists():
        raise MemlensError(f"nothing to resume: no checkpoint {ck} (run without --resume)")
    loaded = load_model(args.model, args.vocab, device, args.unit)
    model, enc = loaded.model, loaded.encoder
    layer, readout = enc.check_readout(args.layer, args.readout, "gradients")
    speech = None
    if enc.input_kind == "vectors" and _speech_corpus(args.corpus):
        speech = _speech_inputs(args, loaded)
        corpus, tokens, tags = None, None, {}
        inputs, oov = speech["values"], 0.0
    elif enc.input_kind == "vectors":
        corpus, tokens, tags = None, None, {}
        inputs, oov = load_vectors(args.corpus, enc.input_size, args.max_tokens), 0.0
    else:
        corpus = loaded.read_corpus(args.corpus, args.format)
        tokens = corpus.tokens[: args.max_tokens] if args.max_tokens else corpus.tokens
        tags = {k: v[: len(tokens)] for k, v in corpus.tags.items()}
        vocab = enc.vocab
        if vocab is None:
            raise MemlensError(f"the model {args.model} has no vocabulary: give --vocab FILE "
                               "(its symbols, one per line in id order)")
        oov = vocab.oov_rate(tokens)
        words = [t for t in tokens if t != EOS]
        if words and oov >= 1.0:
            raise MemlensError(f"the corpus has only unknown words for this model's vocabulary "
                               f"({len(words)} tokens, 100% OOV): model and corpus do not match")
        if oov > 0.5:
            _log(f"memlens: warning: vocabulary mismatch? {100 * oov:.1f}% of the corpus "
                 "tokens are unknown to the model")
        inputs = vocab.encode(tokens)
    ids = inputs
    if args.max_delay >= len(ids):
        raise MemlensError(f"--max-delay {args.max_delay} is not shorter than the stream "
                           f"({len(ids)} tokens)")
    classes, names = None, None
    if speech is not None:
        if args.classes not in (None, "grapheme-type"):
            raise MemlensError("a speech corpus has one class set: --labels grapheme-type "
                               "(vowel, consonant, space of the aligned grapheme; the default)")
        classes = speech["labels"]
        names = sorted({c for c in classes if c is not None})
    elif args.classes:
        if tokens is None:
            raise MemlensError("--labels needs a token corpus (this model reads vectors)")
        if isinstance(corpus, SubwordCorpus):  # word classes on each word's first sub-token
            names, classes = corpus.classes(token_classes, args.classes, len(tokens), log=_log)
        else:
            names, classes = token_classes(args.classes, tokens, tags, enc.vocab, log=_log)
    directions = _directions(args.direction, names)
    for name, vec in directions.items():
        if not isinstance(vec, tuple) and vec.size != enc.input_size:
            raise MemlensError(f"direction vector {name!r} has {vec.size} entries; the model's "
                               f"inputs have {enc.input_size}")
    if not args.resume and ck.exists():
        print(f"memlens: warning: starting afresh; removing the old checkpoint {ck}",
              file=sys.stderr)
        ck.unlink()
    if group is not None:
        _agree(group, None, "before the accumulation")
    try:
        result = state_gradients(model, ids, args.max_delay, readout=readout, layer=layer,
                                 labels=classes, label_names=names, dtype=args.dtype,
                                 device=device, method=args.method, blocks=args.blocks,
                                 bootstrap=args.bootstrap,
                                 checkpoint=base, checkpoint_every=args.checkpoint_every,
                                 resume=args.resume, progress=not args.no_progress,
                                 keep_checkpoint=True, segment=args.segment,
                                 direction_weighting=args.direction_weighting,
                                 warmup=args.warmup,
                                 target_mask=None if speech is None else speech["mask"])
    except GradientsInterrupted as exc:
        print(f"memlens: {exc}", file=sys.stderr)
        return 130
    except BaseException as exc:  # the other ranks know (state_gradients agrees)
        raise _agreed(exc) from None
    err = None
    if rank0:
        try:
            _write(args, out, result, directions, loaded, ids, corpus, oov, names)
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
    if not rank0:
        return 0
    s = result.stats
    print(f"tokens: {len(ids)} ({s['tokens_per_second']:.1f} tokens/s"
          + (f", {group.world} processes" if group is not None else "")
          + f"); condition number of Z: {result.normalization.condition:.2f}")
    spec = result.spectrum(None)
    for tau in sorted({0, 1, 5, 10, args.max_delay}):
        if tau <= args.max_delay:
            print(f"sum of singular values at delay {tau}: {spec[tau].sum():.4g}")
    print(f"wrote {out}")
    return 0


def _write(args, out, result, directions, loaded, ids, corpus, oov, names) -> None:
    """Rank 0 (or the single process): directions, then the result directory."""
    from memlens.gradients.output import write_result

    if directions:
        directions = {k: (result.direction(*v) if isinstance(v, tuple) else v)
                      for k, v in directions.items()}
    corpus_info = {"path": str(args.corpus), "tokens": len(ids), "oov_rate": oov,
                   "format": args.format if corpus is not None else "npy"}
    settings = {"classes_spec": args.classes, "class_names": names or [],
                "bootstrap": args.bootstrap, "direction": args.direction}
    write_result(result, out, loaded.info, corpus_info, settings, args.bootstrap, directions)


def _directions(spec: str | None, names: list[str] | None) -> dict:
    """{"A-B": (A, B)} for two classes, or {"vector": array} for a saved .npy direction."""
    if spec is None:
        if names and "NOUN" in names and "VERB" in names:
            return {"NOUN-VERB": ("NOUN", "VERB")}
        return {}
    if spec.endswith(".npy"):
        try:
            vec = np.load(spec)
        except (OSError, ValueError) as exc:
            raise MemlensError(f"cannot read direction vector {spec}: {exc}") from None
        return {Path(spec).stem: np.asarray(vec, dtype=np.float64).reshape(-1)}
    parts = spec.split(",")
    if len(parts) != 2 or not names or any(p not in names for p in parts):
        raise MemlensError(f"--direction {spec!r}: give two classes A,B among the --classes "
                           "names, or a .npy file")
    return {f"{parts[0]}-{parts[1]}": (parts[0], parts[1])}


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
    data = prepare_speech(load_asr(args.model), args.corpus)
    values, labels = data.values(), data.types()
    mask = data.offsets() >= args.max_delay
    if args.max_tokens:
        values, labels, mask = (values[: args.max_tokens], labels[: args.max_tokens],
                                mask[: args.max_tokens])
    if not mask.any():
        raise MemlensError(f"no utterance is longer than --max-delay {args.max_delay} steps")
    return {"values": values.double(), "labels": labels, "mask": mask}
