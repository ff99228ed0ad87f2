"""``memlens.context_ablation``: how much of its context a language model *uses*.

After Khandelwal, He, Qi & Jurafsky (ACL 2018, "Sharp Nearby, Fuzzy Far Away"). For every
target position t (N targets, evenly spaced over the stream, each with a full window) the model
reads a context window of L tokens, x_{t-L} .. x_{t-1}, from a zero state and predicts x_t. The
token x_{t-j} is at *distance* j from the target (x_{t-1}: distance 1). At distance k, the
tokens farther than k, i.e. at positions < t-k (window slots x_{t-L} .. x_{t-k-1}, L-k of them),
are perturbed while the last k tokens x_{t-k} .. x_{t-1} stay intact, by one of the
perturbations of :mod:`memlens.analyses.ablation.perturbations` (``shuffle``, ``replace``,
``drop``, ``swap``, or one you register).

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

The steps: :func:`ablation_settings` (validate what is measured), :func:`stream_ids`,
:func:`target_positions`, :func:`plan_contexts` (every scored context, batched by width),
:meth:`AblationPlan.batch` (the id matrices of one batch), :func:`score_batches` (the loop,
with checkpoint / resume / interrupt), :func:`gather_losses` (the ranks' losses) and
:func:`make_result`.

Inside an initialised torch.distributed process group (``torchrun ... -m memlens ablation``)
rank r scores the batches r, r + N_proc, r + 2 N_proc, ... and the per-context losses are
all-reduced: every context is scored exactly as in one process (same batch, same randomness),
so the result is identical to the single-process one, only faster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from memlens.analyses.ablation.perturbations import (
    DEFAULT_PERTURBATIONS,
    PerturbationContext,
    get_perturbation,
    seed_code,
    unigram_cdf,
)
from memlens.analyses.ablation.result import ContextAblationResult
from memlens.analyses.ablation.scorers import NextTokenScorer, RecurrentLMScorer, as_scorer
from memlens.core.errors import MemlensError
from memlens.core.limits import check_int, check_memory
from memlens.runtime import distributed
from memlens.runtime.context import Context
from memlens.runtime.options import RunOptions, as_options, check_option
from memlens.runtime.progress import (
    RunCheckpoint,
    fingerprint,
    interrupt_guard,
    progress_bar,
    stop_point,
)

DEFAULT_DISTANCES = (1, 2, 3, 5, 10, 20, 50, 100, 200)
DEFAULT_BOOTSTRAP = 1000  # resamples when options.bootstrap.resamples is None
MAX_CONTEXT = 1 << 16
# the result's settings, in this order
SETTINGS = ("perturbations", "distances", "context", "targets", "seed", "unigram", "bootstrap",
            "blocks", "bootstrap_seed", "tolerance", "batch_size", "world_size")


def context_ablation(model, inputs, distances: Sequence[int] | str = DEFAULT_DISTANCES,
                     perturbation: Sequence[str] | str = DEFAULT_PERTURBATIONS, *,
                     context: Context | str | int = "window:300",
                     targets: int | Sequence[int] | None = 1000,
                     tolerance: float = 0.01, seed: int = 0, batch_size: int = 256,
                     unigram=None, options: RunOptions | None = None) -> ContextAblationResult:
    """Loss increase on the same targets when the context beyond distance k is perturbed.

    Each target x_t is scored after the L tokens before it, read from the initial state; at
    distance k the tokens farther than k are perturbed and the last k stay intact.
    Delta(p, k) = (1/N) sum_t [l_t(p, k) - l_t] (nats) per perturbation p, with a 95%
    block-bootstrap interval; the effective context of p is the smallest k with
    |Delta(p, k')| <= tolerance x the unperturbed loss for every k' >= k (module docstring).

    Parameters
    ----------
    model : torch.nn.Module or KneserNeyLM or NextTokenScorer
        A memlens LanguageModel, an encoder from ``memlens.wrap(..., head=decoder)``, a
        fitted :class:`~memlens.models.ngram.KneserNeyLM` (then ``inputs`` are its ids) or
        any :class:`~memlens.analyses.ablation.scorers.NextTokenScorer`.
    inputs : sequence or Corpus or Stream or torch.Tensor
        One stream (ids, symbols, a Corpus or a Stream).
    distances : sequence of int or str, optional
        The distances k, each 1 <= k < L, or a string "1,2,5" (default 1, 2, 3, 5, 10, 20,
        50, 100, 200).
    perturbation : sequence of str or str, optional
        Registered names: "shuffle", "replace", "drop" (the default set) and "swap" (needs
        two or more targets).
    context : Context or str or int, optional
        ``window:L``, 2 <= L <= 65536 (default ``"window:300"``; a bare integer L is the
        same); ``stride=`` and ``targets=`` are refused (``targets`` below picks them).
    targets : int or sequence of int or None, optional
        How many evenly spaced targets (default 1000), None for every position with a full
        window, or explicit positions.
    tolerance : float, optional
        The effective-context criterion, a fraction of the unperturbed loss in [0, 1)
        (default 0.01).
    seed : int, optional
        Seeds the perturbations, per (seed, perturbation, target, distance) (default 0).
    batch_size : int, optional
        Contexts per forward pass, 1..2**20 (default 256); changes no number.
    unigram : array-like or None, optional
        V weights for "replace" (default None: the stream's counts).
    options : RunOptions or None, optional
        device (None: where the model is), bootstrap (resamples, default 1000; blocks >= 2;
        seed), checkpoint (an interrupt or ``stop_after`` batches saves and raises
        :class:`~memlens.runtime.progress.Interrupted`; per-rank files under a process
        group), progress, distributed; ``dtype`` is not used (losses are float64).

    Returns
    -------
    ContextAblationResult
        ``base_nll`` (N losses, nats), ``nll`` (P x D x N), ``positions``, ``increase``
        (P x D), ``effective_context()``; ``to_frame()`` has one row per (p, k).

    Raises
    ------
    MemlensError
        One line naming a bad model (no next-token head), stream, distance, perturbation,
        context, target choice, tolerance or option.
    """
    options = as_options(options)
    group = distributed.current() if options.distributed else None
    scorer: NextTokenScorer = as_scorer(model)
    settings = ablation_settings(distances, perturbation, context, tolerance, seed, batch_size,
                                 options)
    ids = stream_ids(scorer, inputs)
    pos = target_positions(len(ids), settings["window"], targets)
    for name in settings["perturbations"]:
        get_perturbation(name).check_targets(len(pos))
    _place(scorer, options, settings, len(pos))
    plan = plan_contexts(ids, pos, settings, unigram, scorer.vocab_size)
    rank, world = (0, 1) if group is None else (group.rank, group.world)
    settings = {**settings, "targets": len(pos), "world_size": world,
                "unigram": "stream counts" if unigram is None else "given"}
    window = settings["window"]
    settings = {k: settings[k] for k in SETTINGS}
    fp = fingerprint({**{k: settings[k] for k in ("perturbations", "distances", "targets",
                                                  "seed", "unigram", "batch_size")},
                      "context": window},
                     {"rank": rank, "world": world}, pos, ids, plan.cdf,
                     *_modules(scorer))
    path = options.checkpoint.path
    if path is not None and group is not None:
        path = distributed.rank_path(path, rank)
    ck = RunCheckpoint(path, fp, options.checkpoint.every, kind="ablation")
    start = time.perf_counter()
    nll, steps = score_batches(scorer, plan, list(range(rank, len(plan.batches), world)), ck,
                               options, group)
    seconds = time.perf_counter() - start
    nll, steps = gather_losses(group, nll, steps)
    return make_result(scorer, plan, nll, settings,
                       {"seconds": seconds, "token_steps": steps,
                        "token_steps_per_second": steps / seconds if seconds > 0 else None,
                        "contexts": plan.size, "batches": len(plan.batches),
                        "processes": world})


# -- what is measured ----------------------------------------------------------------------------
def parse_list(value, name: str, cast=int) -> list:
    """"1,2,5" or a sequence -> a list (order kept, duplicates removed)."""
    shown = " ".join(repr(value).split())[:60]
    if not isinstance(value, str) and (isinstance(value, dict) or not hasattr(value, "__iter__")):
        raise MemlensError(f"{name}: give a list or a comma-separated string, not {shown}")
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = [cast(str(v).strip()) if isinstance(v, str) else _cast(cast, v) for v in items]
    except (TypeError, ValueError, OverflowError):
        raise MemlensError(f"{name}: cannot read {shown}") from None
    if not out:
        raise MemlensError(f"{name}: give at least one value")
    return list(dict.fromkeys(out))


def _cast(cast, v):
    """``cast(v)`` of a non-str item: an int list takes integral numbers only (no 1.5, NaN,
    bool), a str list takes strings only."""
    if cast is int and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
        raise TypeError(v)
    if cast is str and not isinstance(v, str):
        raise TypeError(v)
    return cast(v)


def ablation_settings(distances, perturbation, context: int, tolerance: float, seed: int,
                      batch_size: int, options: RunOptions) -> dict:
    """The validated settings of a run (one-line :class:`MemlensError` otherwise):
    perturbations (registered names, order kept), distances (sorted, each 1..L-1), context
    L (2..65536), tolerance in [0, 1), seed, batch_size, and the bootstrap's resamples, blocks
    (>= 2) and seed."""
    perts = parse_list(perturbation, "perturbation", str)
    for p in perts:
        get_perturbation(p)
    distances = parse_list(distances, "distances")
    regime = Context.parse(context)
    if regime.kind != "window" or regime.stride is not None or regime.targets != "all":
        raise MemlensError(f"context ablation scores each target after a window of the L "
                           f"tokens before it: give context window:L, not {regime}")
    context = check_int(regime.length, "context window", 2, MAX_CONTEXT)
    for k in distances:
        check_int(k, "distance", 1, context - 1)
    boot = options.bootstrap
    check_int(boot.blocks, "blocks", 2, 1 << 20)
    return {"perturbations": perts, "distances": sorted(distances), "context": str(regime),
            "window": context,
            "seed": check_option("seed", seed),
            "bootstrap": boot.count(DEFAULT_BOOTSTRAP), "blocks": boot.blocks,
            "bootstrap_seed": boot.seed,
            "tolerance": check_option("tolerance", tolerance),
            "batch_size": check_option("batch_size", batch_size)}


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
    if isinstance(targets, (str, bytes, dict)) or not hasattr(targets, "__iter__"):
        raise MemlensError(f"targets must be None, a number of targets or a list of target "
                           f"positions, got {' '.join(repr(targets).split())[:60]}")
    try:
        pos = np.asarray(parse_list(targets, "targets"), dtype=np.int64)
    except OverflowError:
        raise MemlensError("targets: positions must lie in the stream") from None
    if pos.size == 0 or pos.min() < lo or pos.max() >= T:
        raise MemlensError(f"target positions must lie in {lo}..{T - 1} (a full context of "
                           f"{context} tokens before each)")
    return np.unique(pos)


def stream_ids(scorer: NextTokenScorer, inputs) -> np.ndarray:
    """The analysed stream as int64 ids in 0..V-1 (validated like every analysis' input)."""
    if isinstance(scorer, RecurrentLMScorer):
        from memlens.models.inputs import as_stream

        return as_stream(scorer.encoder, inputs, "tokens").values.numpy().astype(np.int64)
    arr = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(
        list(inputs) if not isinstance(inputs, np.ndarray) else inputs)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise MemlensError("tokens: give a non-empty 1-D stream of integer ids for this model")
    if arr.min() < 0 or arr.max() >= scorer.vocab_size:
        raise MemlensError(f"tokens: ids must lie in 0..{scorer.vocab_size - 1}")
    return arr.astype(np.int64)


def _place(scorer: NextTokenScorer, options: RunOptions, settings: dict, n: int) -> None:
    """Move a torch scorer to ``options.device`` (when given) and refuse batches that would
    not fit in memory."""
    if not isinstance(scorer, RecurrentLMScorer):
        return
    if options.device is not None:
        scorer.to(options.torch_device())
    H, V = max(scorer.encoder.hidden_sizes), scorer.vocab_size
    B, L = settings["batch_size"], settings["window"]
    scored = n * (1 + len(settings["perturbations"]) * len(settings["distances"]))
    check_memory(B * L * (H * 4 * 6 + 16) + B * V * 24 + scored * 8,
                 "the context-ablation batches")


def _modules(scorer: NextTokenScorer) -> tuple:
    """The torch modules whose weights identify the run (none for other scorers)."""
    return (scorer.encoder, scorer.head) if isinstance(scorer, RecurrentLMScorer) else ()


# -- the contexts --------------------------------------------------------------------------------
@dataclass
class AblationPlan:
    """Every scored context of a run and its batches.

    ``items``: one (width, slot, perturbation code, distance k, target index) per context,
    sorted by decreasing width, then slot; code -1 is the intact window (slots 0..N-1), the
    (p, k) contexts fill slots N (1 + p D + d) + i. ``batches``: lists of items of one width,
    at most ``batch_size`` each. ``cdf``: the unigram CDF (None when no perturbation uses
    it).
    """

    ids: np.ndarray
    positions: np.ndarray
    settings: dict
    items: list[tuple[int, int, int, int, int]]
    batches: list[list[tuple[int, int, int, int, int]]]
    cdf: np.ndarray | None
    codes: dict[int, str]

    @property
    def size(self) -> int:
        return len(self.items)

    def batch(self, b: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Batch ``b``: (B x W context ids, B target ids, B slots)."""
        batch = self.batches[b]
        L, seed = self.settings["window"], self.settings["seed"]
        ctx = np.empty((len(batch), batch[0][0]), dtype=np.int64)
        tgt = np.empty(len(batch), dtype=np.int64)
        for r, (width, _, code, k, i) in enumerate(batch):
            t = int(self.positions[i])
            window = self.ids[t - L:t]
            if code < 0:
                ctx[r] = window
            else:
                ctx[r] = self._perturbed(window, width, code, k, i, np.random.default_rng(
                    [seed, code, t, k]))
            tgt[r] = self.ids[t]
        return ctx, tgt, [it[1] for it in batch]

    def _perturbed(self, window, width, code, k, i, rng) -> np.ndarray:
        name = self.codes[code]
        out = np.asarray(get_perturbation(name).perturb(
            window, k, rng, PerturbationContext(self.ids, self.positions, i,
                                                self.settings["window"], self.cdf)))
        if out.shape != (width,):
            raise MemlensError(f"the {name} perturbation returned {out.shape} ids at distance "
                               f"{k}; its width() says {width}")
        return out


def plan_contexts(ids: np.ndarray, pos: np.ndarray, settings: dict, unigram,
                  vocab_size: int) -> AblationPlan:
    """The :class:`AblationPlan` of N = len(pos) targets under the settings' perturbations
    and distances: 1 + P D contexts per target, in batches of equal width."""
    N, L, D = len(pos), settings["window"], len(settings["distances"])
    names = settings["perturbations"]
    items = [(L, i, -1, 0, i) for i in range(N)]
    codes = {seed_code(name): name for name in names}
    for pi, name in enumerate(names):
        p, code = get_perturbation(name), seed_code(name)
        for di, k in enumerate(settings["distances"]):
            base = N * (1 + pi * D + di)
            width = check_int(p.width(L, k), f"{name}: width", 1, L)
            items += [(width, base + i, code, k, i) for i in range(N)]
    items.sort(key=lambda it: (-it[0], it[1]))
    B = settings["batch_size"]
    batches = [b for chunk in _split_widths(items) for b in
               (chunk[s:s + B] for s in range(0, len(chunk), B))]
    cdf = (unigram_cdf(ids, vocab_size, unigram)
           if any(get_perturbation(name).uses_unigram for name in names) else None)
    return AblationPlan(ids, pos, settings, items, batches, cdf, codes)


def _split_widths(items: list) -> list[list]:
    """Runs of equal context width (items sorted by width)."""
    runs: list[list] = []
    for it in items:
        if runs and runs[-1][0][0] == it[0]:
            runs[-1].append(it)
        else:
            runs.append([it])
    return runs


# -- the loop ------------------------------------------------------------------------------------
class _Losses:
    """The state of the loop: the losses of every slot (NaN: not scored here) and the number
    of this rank's batches done."""

    def __init__(self, size: int):
        self.nll, self.done = np.full(size, np.nan), 0

    def payload(self) -> dict:
        return {"nll": self.nll, "done": self.done}

    def restore(self, ck: RunCheckpoint, mine: int) -> None:
        saved = ck.load(like=self.payload())
        done = int(saved["done"])
        if not 0 <= done <= mine:
            raise MemlensError(f"checkpoint {ck.path} is damaged or was edited (done {done} of "
                               f"{mine} batches): delete it or run without --resume")
        self.nll, self.done = np.asarray(saved["nll"], dtype=np.float64), done


def score_batches(scorer: NextTokenScorer, plan: AblationPlan, mine: list[int],
                  ck: RunCheckpoint, options: RunOptions, group=None) -> tuple[np.ndarray, int]:
    """Score this rank's batches ``mine`` (indices into ``plan.batches``): the losses of
    every slot (NaN for the slots of other ranks) and the token steps run in this call.

    Checkpointing (``ck``, ``options.checkpoint``): resume from the saved batches, save every
    ``every`` seconds; on SIGINT / SIGTERM (or after ``stop_after`` batches, or when another
    rank was interrupted) save and raise :class:`~memlens.runtime.progress.Interrupted`; at
    the end delete the file, or with ``keep`` leave the final state for the caller.
    """
    state = _Losses(plan.size)
    with distributed.agreed(group, "resuming the context ablation"):
        if options.checkpoint.resume:
            state.restore(ck, len(mine))
    steps = sum(len(plan.batches[b]) * plan.batches[b][0][0] for b in mine[state.done:])
    with interrupt_guard(ck.enabled) as guard:
        try:
            with distributed.agreed(group, "during the context ablation"):
                _run_batches(scorer, plan, mine, ck, state, guard, options)
        except KeyboardInterrupt:
            if not ck.enabled:
                raise
            raise ck.stop(state.payload(), state.done, len(mine), unit="batches") from None
    ck.finish(options.checkpoint.keep, state.payload())
    return state.nll, steps


def _run_batches(scorer: NextTokenScorer, plan: AblationPlan, mine: list[int],
                 ck: RunCheckpoint, state: _Losses, guard, options: RunOptions) -> None:
    """The batches from ``state.done`` on, until all are done, an interrupt was requested or
    ``stop_after`` batches ran (then KeyboardInterrupt); periodic checkpoints."""
    end = stop_point(state.done, len(mine), options.checkpoint.stop_after)
    with progress_bar(len(mine), options.progress, "context ablation", unit="batch",
                      initial=state.done) as bar:
        while state.done < end and not guard.requested:
            ctx, tgt, slots = plan.batch(mine[state.done])
            lp = scorer.target_logprobs(torch.from_numpy(ctx), torch.from_numpy(tgt))
            state.nll[slots] = -lp.double().numpy()
            state.done += 1
            bar.update(1)
            if ck.due():
                ck.save(state.payload())
    if state.done < len(mine):  # interrupted, or stop_after
        raise KeyboardInterrupt


def gather_losses(group, nll: np.ndarray, steps: int) -> tuple[np.ndarray, int]:
    """Every rank's losses and token steps, summed (each context was scored on one rank:
    x + 0 + ... = x exactly); checks that every loss is finite."""
    if group is not None:
        scored = np.isfinite(nll) | np.isinf(nll)
        total, count, all_steps = distributed.all_reduce_arrays(
            group, [np.where(scored, nll, 0.0), scored.astype(np.int64),
                    np.array([steps], dtype=np.int64)])
        nll, steps = np.where(count == 1, total, np.nan), int(all_steps[0])
    if not np.isfinite(nll).all():
        raise MemlensError("the model gave a zero or non-finite probability to some target "
                           "(infinite loss)")
    return nll, steps


def make_result(scorer: NextTokenScorer, plan: AblationPlan, nll: np.ndarray, settings: dict,
                stats: dict) -> ContextAblationResult:
    """The :class:`ContextAblationResult` of the slots' losses."""
    N, P, D = len(plan.positions), len(settings["perturbations"]), len(settings["distances"])
    describe = getattr(scorer, "describe", None)
    return ContextAblationResult(
        perturbations=list(settings["perturbations"]), distances=list(settings["distances"]),
        base_nll=nll[:N].copy(), nll=nll[N:].reshape(P, D, N), positions=plan.positions,
        settings=settings, model_meta=describe() if callable(describe) else {}, stats=stats)


__all__ = ["DEFAULT_DISTANCES", "MAX_CONTEXT", "AblationPlan", "ablation_settings",
           "context_ablation", "gather_losses", "make_result", "parse_list", "plan_contexts",
           "score_batches", "stream_ids", "target_positions"]
