"""``memlens.context_ablation``: how much of its context a language model *uses*.

After Khandelwal, He, Qi & Jurafsky (ACL 2018, "Sharp Nearby, Fuzzy Far Away"). For every
target position t (N targets, evenly spaced over the stream, each with a full window) the model
reads a context window of L tokens, x_{t-L} .. x_{t-1}, from a zero state and predicts x_t. The
token x_{t-j} is at *distance* j from the target (x_{t-1}: distance 1). At distance k, the
tokens farther than k, i.e. at positions < t-k (window slots x_{t-L} .. x_{t-k-1}, L-k of them),
are perturbed while the last k tokens x_{t-k} .. x_{t-1} stay intact:

* ``shuffle``: the L-k far tokens are randomly permuted among themselves (same words, order lost);
* ``replace``: each far token is replaced by an independent draw from the unigram
  distribution (default: the analysed stream's token frequencies);
* ``drop``: the far tokens are removed: the model reads only the last k tokens, from a zero
  state (a truncated context);
* ``swap`` (not in the default set): the far tokens are replaced by the tokens in the same
  window slots of *another* target, chosen at random among the analysed targets: real text
  of the same stream, in its own order and at the same offsets from its own target, but
  unrelated to this one. The state stays warmed up on in-distribution text (no zero state,
  no unnatural token sequence); when the targets share a structure (e.g. every target is the
  verb of a sentence) the swapped context is aligned with it. Unlike the others, which other
  targets exist decides what is swapped in.

With l_t = -log P(x_t | intact window) and l_t(p, k) the loss under perturbation p at distance
k, the result is, per (p, k), the mean loss and the paired increase

    Delta(p, k) = (1/N) sum_t [ l_t(p, k) - l_t ]            (nats; / ln 2 for bits)

with a 95% block-bootstrap interval (contiguous blocks of targets, the same targets in both
terms). The *effective context* of p is the smallest k such that |Delta(p, k')| <= tol for
every measured k' >= k, with tol = ``tolerance`` x the unperturbed mean loss (default 1%).

Randomness is seeded per (seed, perturbation, target position, distance), so every number is
independent of batching, of the order of the options and of the other targets. Cost: every
(target, perturbation, distance) is one forward pass over its context (L steps; k for drop) plus
one over the intact window per target: N (1 + |shuffle, replace, swap| D) L + N sum_k k
token-steps for D distances; the contexts run as columns of batches of ``batch_size``.

Inside an initialised torch.distributed process group (``torchrun ... -m memlens ablation``)
rank r scores the batches r, r + N_proc, r + 2 N_proc, ... and the per-context losses are
all-reduced: every context is scored exactly as in one process (same batch, same randomness),
so the result is identical to the single-process one, only faster.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from memlens.ablation.result import DEFAULT_PERTURBATIONS, PERTURBATIONS, ContextAblationResult
from memlens.ablation.scorers import NextTokenScorer, RecurrentLMScorer, as_scorer
from memlens.errors import MemlensError
from memlens.io import atomic_path
from memlens.limits import check_int, check_memory

DEFAULT_DISTANCES = (1, 2, 3, 5, 10, 20, 50, 100, 200)
MAX_CONTEXT = 1 << 16


class AblationInterrupted(KeyboardInterrupt):
    """Raised after an interrupt once the progress has been saved to the checkpoint."""

    def __init__(self, checkpoint: str, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} batches; progress saved to "
                         f"{checkpoint}; rerun with --resume to continue")
        self.checkpoint, self.done, self.total = checkpoint, done, total


def parse_list(value, name: str, cast=int) -> list:
    """"1,2,5" or a sequence -> a list (order kept, duplicates removed)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = [cast(str(v).strip()) if isinstance(v, str) else cast(v) for v in items]
    except (TypeError, ValueError):
        raise MemlensError(f"{name}: cannot read {value!r}") from None
    if not out:
        raise MemlensError(f"{name}: give at least one value")
    return list(dict.fromkeys(out))


def target_positions(T: int, context: int, targets: int | Sequence[int] | None) -> np.ndarray:
    """Target positions with a full window (context <= t < T): ``targets`` of them evenly
    spaced, or the positions given, or (None) all of them."""
    lo = context
    if T <= lo:
        raise MemlensError(f"the stream has {T} tokens: a context of {context} leaves no "
                           f"target (need more than {context} tokens)")
    if targets is None:
        return np.arange(lo, T)
    if isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        if not 1 <= targets <= T - lo:
            raise MemlensError(f"targets must be in 1..{T - lo} (the positions with a full "
                               f"context of {context} tokens), got {targets}")
        return np.unique(np.linspace(lo, T - 1, int(targets)).round().astype(np.int64))
    pos = np.asarray(list(targets), dtype=np.int64)
    if pos.size == 0 or pos.min() < lo or pos.max() >= T:
        raise MemlensError(f"target positions must lie in {lo}..{T - 1} (a full context of "
                           f"{context} tokens before each)")
    return np.unique(pos)


def unigram_cdf(ids: np.ndarray, V: int, unigram=None) -> np.ndarray:
    """Cumulative unigram distribution over 0..V-1 (counts of ``ids`` unless given)."""
    if unigram is None:
        p = np.bincount(ids, minlength=V).astype(np.float64)
    else:
        p = np.asarray(unigram, dtype=np.float64).reshape(-1)
        if p.size != V or not np.isfinite(p).all() or (p < 0).any():
            raise MemlensError(f"unigram= must hold {V} non-negative finite weights")
    if p.sum() <= 0:
        raise MemlensError("the unigram distribution is empty")
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    return cdf


def perturbed_window(window: np.ndarray, perturbation: str, k: int, rng: np.random.Generator,
                     cdf: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """The context seen at distance k: ``window`` (x_{t-L} .. x_{t-1}) with its first L-k
    tokens shuffled, replaced by unigram draws or by the same slots of ``other`` (another
    target's window, for ``swap``), or dropped (see module docstring)."""
    far = len(window) - k
    if perturbation == "drop":
        return window[far:]
    out = window.copy()
    if perturbation == "swap":
        if other is None or len(other) != len(window):
            raise MemlensError("swap needs another target's window of the same length")
        out[:far] = other[:far]
    elif perturbation == "shuffle":
        out[:far] = window[:far][rng.permutation(far)]
    elif perturbation == "replace":
        out[:far] = np.searchsorted(cdf, rng.random(far), side="right")
    else:  # pragma: no cover - checked by the caller
        raise MemlensError(f"unknown perturbation {perturbation!r}")
    return out


def _fingerprint(settings: dict, ids: np.ndarray, scorer) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(ids).tobytes())
    if isinstance(scorer, RecurrentLMScorer):
        for mod in (scorer.encoder, scorer.head):
            for name, t in mod.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Progress:
    """Finished batches of one run in ``.npz`` (no pickle), with a fingerprint of the model,
    stream and settings and a SHA-256 digest of the losses."""

    def __init__(self, path: str | Path | None, fingerprint: str, size: int):
        self.path = None if path is None else Path(path)
        self.fingerprint, self.size = fingerprint, size

    @staticmethod
    def _digest(nll: np.ndarray, done: int) -> str:
        return hashlib.sha256(nll.tobytes() + str(done).encode()).hexdigest()

    def load(self) -> tuple[np.ndarray, int]:
        if self.path is None or not self.path.exists():
            raise MemlensError(f"nothing to resume: no checkpoint at {self.path}")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                nll, done = z["nll"].astype(np.float64), int(z["done"])
                fp, digest = str(z["fingerprint"]), str(z["digest"])
        except (OSError, ValueError, KeyError) as exc:
            raise MemlensError(f"checkpoint {self.path} is damaged ({str(exc)[:100]}): delete "
                               "it or run without --resume") from None
        if fp != self.fingerprint:
            raise MemlensError(f"checkpoint {self.path} was made with a different model, "
                               "corpus or settings: run without --resume")
        if nll.shape != (self.size,) or digest != self._digest(nll, done):
            raise MemlensError(f"checkpoint {self.path} is damaged or was edited: delete it or "
                               "run without --resume")
        return nll, done

    def save(self, nll: np.ndarray, done: int) -> None:
        if self.path is None:
            return
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, nll=nll, done=np.int64(done), fingerprint=self.fingerprint,
                         digest=self._digest(nll, done))


def context_ablation(model, tokens, distances: Sequence[int] | str = DEFAULT_DISTANCES,
                     perturbation: Sequence[str] | str = DEFAULT_PERTURBATIONS, *,
                     context: int = 300, targets: int | Sequence[int] | None = 1000,
                     bootstrap: int = 1000, blocks: int = 20, tolerance: float = 0.01,
                     seed: int = 0, batch_size: int = 256, unigram=None,
                     device: str | torch.device | None = None,
                     checkpoint: str | Path | None = None, checkpoint_every: float = 300.0,
                     resume: bool = False, keep_checkpoint: bool = False,
                     on_batch: Callable[[int, int], None] | None = None,
                     distributed_run: bool = True) -> ContextAblationResult:
    """Loss increase on the same targets when the context beyond distance k is perturbed.

    See the module docstring for the definitions. ``model``: a memlens LanguageModel, an
    encoder from ``memlens.wrap(..., head=decoder)``, a fitted
    :class:`~memlens.signatures.ngram.KneserNeyLM` (then ``tokens`` are its ids,
    ``lm.encode(words)``) or any :class:`~memlens.ablation.scorers.NextTokenScorer`.
    ``tokens``: one stream (ids, symbols, a Corpus or a Stream, as every analysis takes).
    ``distances``: k values, 1 <= k < ``context`` (L); ``perturbation``: any of "shuffle",
    "replace", "drop" (the default set) and "swap" (needs two or more targets); ``targets``: how
    many evenly spaced targets (None: every position with a full window; or explicit
    positions); ``bootstrap`` resamples over ``blocks`` contiguous
    blocks of targets (0: no intervals); ``tolerance``: the effective-context criterion as a
    fraction of the unperturbed loss; ``seed``: the perturbations' randomness; ``batch_size``:
    contexts per forward pass; ``unigram``: V weights for "replace" (default: the stream's
    counts); ``device``: where a torch model runs (default: where it is). ``checkpoint`` /
    ``checkpoint_every`` / ``resume``: save finished batches (every so many seconds and on an
    interrupt, which then raises :class:`AblationInterrupted`) and continue from them. Inside
    a process group the batches are shared out over the ranks (module docstring; per-rank
    checkpoints ``<checkpoint>.rank<r>``); ``distributed_run=False`` computes everything here.
    """
    from memlens import distributed

    group = distributed.current() if distributed_run else None
    scorer: NextTokenScorer = as_scorer(model)
    distances = parse_list(distances, "distances")
    perts = parse_list(perturbation, "perturbation", str)
    for p in perts:
        if p not in PERTURBATIONS:
            raise MemlensError(f"unknown perturbation {p!r}: choose from "
                               f"{', '.join(PERTURBATIONS)}")
    context = check_int(context, "context", 2, MAX_CONTEXT)
    for k in distances:
        check_int(k, "distance", 1, context - 1)
    distances = sorted(distances)
    check_int(batch_size, "batch_size", 1, 1 << 20)
    check_int(bootstrap, "bootstrap", 0, 1 << 20)
    check_int(blocks, "blocks", 2, 1 << 20)
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise MemlensError(f"tolerance must be a fraction in [0, 1), got {tolerance!r}")
    if not checkpoint_every > 0:
        raise MemlensError(f"checkpoint_every must be positive, got {checkpoint_every}")
    ids = _stream_ids(model, scorer, tokens)
    pos = target_positions(len(ids), context, targets)
    N, P, D, V = len(pos), len(perts), len(distances), scorer.vocab_size
    if "swap" in perts and N < 2:
        raise MemlensError("the swap perturbation needs at least 2 targets (it takes the far "
                           "context of another target)")
    if isinstance(scorer, RecurrentLMScorer):
        if device is not None:
            scorer.to(device)
        H = max(scorer.encoder.hidden_sizes)
        check_memory(batch_size * context * (H * 4 * 6 + 16) + batch_size * V * 24
                     + N * (1 + P * D) * 8, "the context-ablation batches")
    cdf = unigram_cdf(ids, V, unigram) if "replace" in perts else np.ones(1)

    # every scored context: (width, slot, perturbation code, distance, target index)
    items = [(context, i, -1, 0, i) for i in range(N)]
    for pi, p in enumerate(perts):
        for di, k in enumerate(distances):
            base = N * (1 + pi * D + di)
            width = k if p == "drop" else context
            items += [(width, base + i, PERTURBATIONS.index(p), k, i) for i in range(N)]
    items.sort(key=lambda it: (-it[0], it[1]))
    batches = [b for chunk in _split_widths(items) for b in
               (chunk[s:s + batch_size] for s in range(0, len(chunk), batch_size))]
    settings = {"perturbations": perts, "distances": distances, "context": context,
                "targets": N, "seed": seed, "unigram": "stream counts" if unigram is None
                else "given", "bootstrap": bootstrap, "blocks": blocks, "tolerance": tolerance,
                "batch_size": batch_size}
    fp_settings = {k: v for k, v in settings.items() if k not in ("bootstrap", "blocks",
                                                                  "tolerance", "batch_size")}
    rank, world = (0, 1) if group is None else (group.rank, group.world)
    settings["world_size"] = world
    if checkpoint is not None and group is not None:
        checkpoint = distributed.rank_path(checkpoint, rank)
    mine = list(range(rank, len(batches), world))  # this rank's batches
    progress = _Progress(checkpoint, _fingerprint({**fp_settings, "pos": pos.tolist(),
                                                   "batch_size": batch_size,
                                                   "rank": rank, "world": world}, ids, scorer),
                         N * (1 + P * D))
    nll, done = np.full(N * (1 + P * D), np.nan), 0
    if resume:
        nll, done = progress.load()
    steps = sum(len(batches[b]) * batches[b][0][0] for b in mine[done:])
    start = last = time.perf_counter()
    try:
        with distributed.agreed(group, "during the context ablation"):
            for j in range(done, len(mine)):
                batch = batches[mine[j]]
                width = batch[0][0]
                ctx = np.empty((len(batch), width), dtype=np.int64)
                tgt = np.empty(len(batch), dtype=np.int64)
                for r, (_, _, code, k, i) in enumerate(batch):
                    t = int(pos[i])
                    window = ids[t - context:t]
                    if code < 0:
                        ctx[r] = window
                    else:
                        rng = np.random.default_rng([seed, code, t, k])
                        other = None
                        if PERTURBATIONS[code] == "swap":  # another target, never this one
                            o = (i + int(rng.integers(1, N))) % N
                            other = ids[int(pos[o]) - context:int(pos[o])]
                        ctx[r] = perturbed_window(window, PERTURBATIONS[code], k, rng, cdf,
                                                  other)
                    tgt[r] = ids[t]
                lp = scorer.target_logprobs(torch.from_numpy(ctx), torch.from_numpy(tgt))
                nll[[it[1] for it in batch]] = -lp.double().numpy()
                done = j + 1
                if on_batch is not None:
                    on_batch(done, len(mine))
                if checkpoint is not None and time.perf_counter() - last > checkpoint_every:
                    progress.save(nll, done)
                    last = time.perf_counter()
    except KeyboardInterrupt:
        if checkpoint is None:
            raise
        progress.save(nll, done)
        raise AblationInterrupted(str(checkpoint), done, len(mine)) from None
    seconds = time.perf_counter() - start
    if checkpoint is not None:
        if keep_checkpoint:
            progress.save(nll, done)
        else:
            Path(checkpoint).unlink(missing_ok=True)
    if group is not None:  # each context was scored on one rank: x + 0 + ... = x exactly
        scored = np.isfinite(nll) | np.isinf(nll)
        total, count, all_steps = distributed.all_reduce_arrays(
            group, [np.where(scored, nll, 0.0), scored.astype(np.int64),
                    np.array([steps], dtype=np.int64)])
        nll, steps = np.where(count == 1, total, np.nan), int(all_steps[0])
    if not np.isfinite(nll).all():
        raise MemlensError("the model gave a zero or non-finite probability to some target "
                           "(infinite loss)")
    describe = getattr(scorer, "describe", None)
    return ContextAblationResult(
        perturbations=perts, distances=distances, base_nll=nll[:N].copy(),
        nll=nll[N:].reshape(P, D, N), positions=pos, settings=settings,
        model_meta=describe() if callable(describe) else {},
        stats={"seconds": seconds, "token_steps": steps,
               "token_steps_per_second": steps / seconds if seconds > 0 else None,
               "contexts": len(items), "batches": len(batches), "processes": world})


def _split_widths(items: list) -> list[list]:
    """Runs of equal context width (items sorted by width)."""
    runs: list[list] = []
    for it in items:
        if runs and runs[-1][0][0] == it[0]:
            runs[-1].append(it)
        else:
            runs.append([it])
    return runs


def _stream_ids(model, scorer, tokens) -> np.ndarray:
    """The analysed stream as int64 ids in 0..V-1 (validated like every analysis' input)."""
    if isinstance(scorer, RecurrentLMScorer):
        from memlens.models.inputs import as_stream

        return as_stream(scorer.encoder, tokens, "tokens").values.numpy().astype(np.int64)
    arr = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(
        list(tokens) if not isinstance(tokens, np.ndarray) else tokens)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise MemlensError("tokens: give a non-empty 1-D stream of integer ids for this model")
    if arr.min() < 0 or arr.max() >= scorer.vocab_size:
        raise MemlensError(f"tokens: ids must lie in 0..{scorer.vocab_size - 1}")
    return arr.astype(np.int64)
