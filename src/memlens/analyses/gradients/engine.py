"""The streaming engine: exact sums of state gradients per delay and class, in one forward pass.

The corpus is one continuous stream x_0 .. x_{T-1} from a zero initial state (batch 1). For every
target position t and delay tau = 0..K with t - tau >= 0 the engine adds the H x E block
G_t(tau) = d s_t / d x_{t-tau} to

* a class accumulator, chosen by the class(es) of the *source* token t - tau
  (pass 0: the first class of the source, or a "no class" bucket; further passes add the
  second, third, ... class of multi-class sources, e.g. lexicon words with several tags);
* a per-block accumulator of the overall sum (blocks of targets, for the bootstrap).

The overall sum is the sum over the pass-0 buckets, so it costs nothing extra.

Pair set: by default every (t, tau) with t - tau >= 0, tau <= K. With segment starts
(``Task.starts``, from the context regime: ``segment:S`` starts one at 0, S, 2S, ...) only
pairs whose source and target lie in the same segment: tau <= t - (start of t's segment); for
``segment:S`` that is t // S == (t - tau) // S, tau <= t mod S, the original implementation's
pair set (truncated BPTT over
segments of ``num_steps`` tokens, batch 1, carried state; it runs once per ``time_step`` and
averages over all of them, so every target of every segment is used). It costs nothing: at
each segment start all tangents are zeroed (the gradient of later states with respect to
earlier segments is cut, exactly as truncated BPTT does), so excluded slots add exact zeros,
and the excluded pairs are left out of the counts. The primal state is carried on, as in the
original (``Task.reset`` False); d s_t / d x_{t-tau} of an included pair is the same as on the
full stream. With ``Task.reset`` (windows, sentences) the primal state restarts too.

Layout: accumulators are H x (buckets * S) x E with S = K + 1, so the readout tangent matrix
(H x S*E, viewed H x S x E) is added with one ``index_add_`` per step (index = bucket * S +
delay of each ring slot). Short-term accumulators in the compute dtype are flushed into float64
master sums every ``flush_every`` steps and at block boundaries; flush points are absolute
stream positions, so the result is bit-identical however the work is split into chunks or
interrupted and resumed. Memory is O(K * buckets * H * E), independent of the corpus length.

Shards (``shard=(start, stop)``, ``warmup=W``; used by :mod:`memlens.runtime.distributed`): only
targets start <= t < stop are accumulated, but the stream is processed from
w0 = max(0, start - W): the W warm-up steps run the primal and all tangents from a zero state and
accumulate nothing, so a target near the shard start still sees its sources before the start
(delays reach back up to K across the boundary) and the pair set and counts are exactly the
single stream's. A pair whose source lies before w0 (only when W < K) is counted with a zero
gradient. The primal state at ``start`` and the tangents of sources >= w0 are exact once W
exceeds the model's effective memory (a contracting recurrence forgets its zero start).
Ring slots, segment starts, blocks and flush points are absolute stream positions (plus one
flush at the shard end), so the shards' sums add up to the single stream's.

Units (``units`` of the site, other than "all"): the readout tangent (R x S*E) is mapped by the
unit set's linear map P (D x R, e.g. a selection of rows or the factor space A h), so the sums are
those of d (P r_t) / d x_{t-tau}.

Column passes (``Task.columns`` = c < E, for models whose tangents of all E input columns do
not fit in memory): the stream is run ceil(E / c) times, pass p carrying the tangents of input
columns lo_p .. lo_p + c - 1 only (lo_p = min(p c, E - c): every pass is c wide, the last one
overlapping the one before) and adding the columns p c .. min((p+1) c, E) - 1 of the sums; the
accumulators keep all E columns. Each column's gradient is the one of the single pass (every
column's tangent is independent of the others'); pair counts are taken in pass 0 and the
per-pair norms add up as squares over the passes. The checkpoint records the pass.

Norms (the stability diagnostic, :mod:`memlens.analyses.gradients.stability`): for every counted
pair the Frobenius norm ||G_t(tau)||_F of the raw readout tangent (one
``torch.linalg.vector_norm`` over H and E of the H x S x E tangent per step, S values) is kept in
a float32 targets x S array (delay order, zero where no pair counts): the chunk's slot-order
norms are written into it once per chunk (one scatter). Every entry is one pair's own norm, so
the array is the same however the work is chunked, interrupted, resumed or sharded (rows of other
shards stay zero and the all-reduce adds them). Above :data:`NORM_MEMORY_LIMIT` bytes it is not
kept (``Sums.norms`` None) and the diagnostic is skipped.

Checkpoints (:class:`~memlens.runtime.options.Checkpointing`, through
:class:`~memlens.runtime.progress.RunCheckpoint`, kind "gradients") hold the position, primal
states, live tangents and all accumulators, under a fingerprint of the model, the stream, the
classes and the settings and a digest of the payload; SIGINT / SIGTERM during a run save one and
raise :class:`~memlens.runtime.progress.Interrupted`. A finished run saves a final one (position
T) with ``keep``, for the caller to delete once the results are safely written. On resume the
fingerprint, the digest, every tensor's shape and dtype and the position are checked.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from memlens.analyses.gradients.tangents import make_propagator
from memlens.core.errors import MemlensError
from memlens.models.encoder import RecurrentEncoder
from memlens.protocol import RecurrentLayer
from memlens.runtime.options import Checkpointing
from memlens.runtime.progress import (
    Guard,
    RunCheckpoint,
    fingerprint,
    interrupt_guard,
    progress_bar,
    stop_point,
)

KIND = "gradients"  # the kind of the run's checkpoint
#: bytes of the per-pair norms (targets x S float32) above which the stability diagnostic is off
NORM_MEMORY_LIMIT = 1 << 30


@dataclass(frozen=True, eq=False)
class EngineSettings:
    """Rarely changed knobs of the streaming engine (``state_gradients(..., engine=...)``).

    ``chunk_size``: positions per chunk (between progress updates, ``on_chunk`` calls and
    checkpoint checks); ``flush_every``: steps between flushes of the compute-dtype sums into
    the float64 ones (neither changes a bit of the result); ``target_mask``: bool, one per
    position: only these targets t are accumulated (None: all; speech keeps every pair
    inside one utterance with it); ``on_chunk(position)``: called after every chunk;
    ``class_ci_delays``: delays at which per-class block sums are kept for class-wise
    bootstrap intervals (None: 0, 1, 2, 5, 10, 20 and K; skipped above 1 GB); ``warmup``:
    inside a torch.distributed process group, positions each rank runs before its shard
    (None: :func:`memlens.runtime.distributed.default_warmup`); ``columns``: input columns
    whose tangents one pass over the stream carries (None: all E when their tangents fit in a
    quarter of the memory budget, else the most that fit; see "Column passes" above).
    """

    chunk_size: int = 256
    flush_every: int = 256
    target_mask: Any = None
    on_chunk: Callable[[int], None] | None = None
    class_ci_delays: Sequence[int] | None = None
    warmup: int | None = None
    columns: int | None = None

    def check(self) -> None:
        """Refuse bad values with a one-line :class:`MemlensError` (``state_gradients`` calls
        it where every rank of a process group hears of the failure)."""
        for name in ("chunk_size", "flush_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise MemlensError(f"{name} must be positive, got {value!r}")
        if self.columns is not None and (not _is_int(self.columns) or self.columns < 1):
            raise MemlensError(f"columns must be a positive integer or None, got "
                               f"{self.columns!r}")
        if self.warmup is not None and (not _is_int(self.warmup) or self.warmup < 0):
            raise MemlensError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if self.on_chunk is not None and not callable(self.on_chunk):
            raise MemlensError(f"on_chunk must be callable, got {self.on_chunk!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Task:
    """What one accumulation computes (validated by ``state_gradients``).

    ``max_delay`` K; ``layer``, ``readout``, ``units``: the resolved site; ``n_classes`` C;
    ``method``: "auto", "hand" or "generic" (:func:`make_propagator`); ``dtype``, ``device``:
    of the tangent computation; ``blocks``: bootstrap blocks of targets; ``flush_every``,
    ``chunk_size``: see :class:`EngineSettings`; ``ci_delays``: delays of the per-class block
    sums; ``shard`` = (start, stop), ``warmup``: module docstring. ``starts`` (bool, one per
    position, or None) marks where segments of a context regime begin
    (:class:`~memlens.runtime.context.Layout`): only pairs inside one segment count, the
    tangents are cut there and, with ``reset``, the primal state restarts from each layer's
    initial state (windows, sentences); ``segment``: S of ``segment:S`` (its starts are in
    ``starts``), recorded in the settings and the checkpoint's fingerprint. ``columns``: input
    columns per pass (None: all E in one pass; module docstring).
    """

    max_delay: int
    layer: int
    readout: str
    units: str = "all"
    n_classes: int = 0
    method: str = "auto"
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    blocks: int = 20
    flush_every: int = 256
    chunk_size: int = 256
    ci_delays: tuple[int, ...] = ()
    segment: int | None = None
    shard: tuple[int, int] | None = None
    warmup: int = 0
    starts: Tensor | None = None
    reset: bool = False
    columns: int | None = None


@dataclass
class Sums:
    """Raw sums from the engine (float64 numpy arrays; S = K + 1 delays, C classes).

    sums: S x H x E (overall); counts: S. class_sums: C x S x H x E; class_counts: C x S.
    block_sums: B x S x H x E and block_counts: B x S (overall sums per block of targets).
    class_block_sums: B x C x D x H x E at the delays ``ci_delays`` (D of them) and
    class_block_counts: B x C x S, for class-wise bootstrap intervals (empty when disabled).
    norms: T x S float32, ||G_t(tau)||_F of every counted pair (target t, delay tau), zero
    where no pair counts (None: not kept, see :data:`NORM_MEMORY_LIMIT`).
    """

    sums: np.ndarray
    counts: np.ndarray
    class_sums: np.ndarray
    class_counts: np.ndarray
    block_sums: np.ndarray
    block_counts: np.ndarray
    stats: dict = field(default_factory=dict)
    ci_delays: list[int] = field(default_factory=list)
    class_block_sums: np.ndarray | None = None
    class_block_counts: np.ndarray | None = None
    norms: np.ndarray | None = None


# -- the steps of one run ----------------------------------------------------------------------
def accumulate(encoder: RecurrentEncoder, ids: Tensor, task: Task,
               memberships: Sequence[Sequence[int]] | None = None, *,
               target_mask: Tensor | None = None, checkpoint: Checkpointing | None = None,
               progress: bool = False, on_chunk: Callable[[int], None] | None = None) -> Sums:
    """Exact sums of d r_t / d x_{t-tau} over the stream ``ids`` (see module docstring).

    ``ids``: 1-D token ids (x_t = embedding row) or T x I input vectors (x_t = the row).
    ``memberships[j]`` lists the class indices (0..C-1) of position j (may be empty).
    ``target_mask`` (bool, length T) restricts the targets t that are accumulated.
    ``checkpoint``: where and how often to save, whether to resume, ``stop_after`` (at most
    that many positions in this call, then save and raise Interrupted) and ``keep`` (a
    finished run leaves its final checkpoint, position T, for the caller to delete; resuming
    from it skips the accumulation). ``on_chunk(position)`` is called after every chunk.
    Arguments are assumed validated. Steps: setup (:class:`_Accumulator`), resume
    (:func:`_open_checkpoint`), the chunk loop (:func:`_run_chunks`), finish.
    """
    checkpoint = checkpoint or Checkpointing()
    acc = _Accumulator(encoder, ids, task, memberships, target_mask)
    ck = _open_checkpoint(acc, encoder, checkpoint)
    start_pos, started = acc.vpos, time.perf_counter()
    _run_chunks(acc, ck, stop_point(acc.vpos, acc.vstop, checkpoint.stop_after), progress,
                on_chunk)
    elapsed = time.perf_counter() - started  # (interrupted: _run_chunks raised)
    ck.finish(checkpoint.keep, acc.payload() if acc.vpos > start_pos else None)
    return acc.sums(acc.vpos - start_pos, elapsed)


def _open_checkpoint(acc: _Accumulator, encoder: RecurrentEncoder,
                     checkpoint: Checkpointing) -> RunCheckpoint:
    """The run's checkpoint; with ``resume``, the saved run restored into ``acc``."""
    fp = acc.fingerprint(encoder) if checkpoint.path is not None else ""
    ck = RunCheckpoint(checkpoint.path, fp, checkpoint.every, kind=KIND)
    if checkpoint.resume:
        acc.restore(ck.load(like=acc.payload(), device=acc.task.device), ck.path)
    return ck


def _run_chunks(acc: _Accumulator, ck: RunCheckpoint, end: int, progress: bool,
                on_chunk: Callable[[int], None] | None) -> None:
    """Advance ``acc`` chunk by chunk up to the virtual position ``end`` (:attr:`vpos`;
    earlier after SIGINT / SIGTERM while a checkpoint is kept), with the progress bar and the
    periodic saves; a finished column pass starts the next one."""
    size = acc.task.chunk_size
    with interrupt_guard(ck.enabled) as guard, torch.no_grad(), progress_bar(
            acc.vstop - acc.first, progress, "state gradients", unit="tok",
            initial=acc.vpos - acc.first) as bar:
        while acc.vpos < end and not guard.requested:
            if acc.pos >= acc.stop:
                acc.next_pass()
            a, v = acc.pos, acc.vpos
            acc.chunk(a, min(acc.stop, a + end - v, (a // size + 1) * size), guard)
            bar.update(acc.vpos - v)
            if on_chunk is not None:
                on_chunk(acc.pos)
            if acc.vpos < acc.vstop and not guard.requested and ck.due():
                ck.save(acc.payload())
        if acc.vpos < acc.vstop:  # interrupted, or stop_after reached: answered in the guard
            where = (f" of column pass {acc.pass_ + 1}/{acc.passes}" if acc.passes > 1
                     else "")
            raise ck.stop(acc.payload(), acc.pos, acc.T, unit="tokens",
                          head=f"interrupted at token {acc.pos}/{acc.T}{where}")


# -- the accumulator -----------------------------------------------------------------------------
# the accumulators of a run (module docstring), saved in its checkpoint under these names
ACCUMULATORS = ("st", "master", "st_x", "master_x", "block_sums", "counts", "counts_x",
                "block_counts", "cblock_sums", "cblock_counts", "norms")


@dataclass
class _Chunk:
    """The bookkeeping of targets a..b-1 (n = b - a): per target and ring slot (n x S) its
    delay, whether the pair counts (``live``) and its accumulator row (``idx0``: pass 0,
    ``idx_x``: further classes); ``xs``: the n input vectors; ``sel``: targets with a pair."""

    tvec: Tensor
    delays: Tensor
    live: Tensor
    idx0: Tensor
    idx_x: list[Tensor]
    xs: Tensor
    sel: list[bool]
    idx0_d: Tensor
    idx_x_d: list[Tensor]


class _Accumulator:
    """Primal states, tangents (one propagator per layer up to the site's) and every
    accumulator of one run; ``pos``: the next stream position to process."""

    def __init__(self, encoder: RecurrentEncoder, ids: Tensor, task: Task,
                 memberships: Sequence[Sequence[int]] | None, target_mask: Tensor | None):
        self.task = task
        self.tokens = ids.dim() == 1
        self.ids = ids.to("cpu", torch.long) if self.tokens else ids.to("cpu")
        self.T = T = self.ids.shape[0]
        self.S, self.C, self.E = task.max_delay + 1, task.n_classes, encoder.input_size
        self.nb = max(1, min(task.blocks, T))
        self.start, self.stop = (0, T) if task.shard is None else (int(task.shard[0]),
                                                                    int(task.shard[1]))
        self.first = (max(0, self.start - max(0, int(task.warmup))) if self.start < self.stop
                      else self.start)
        self.bucket, self.extras = _buckets(T, self.C, memberships)
        self.mask = None if target_mask is None else target_mask.to("cpu", torch.bool).reshape(-1)
        self.starts = self.seg_start = None
        if task.starts is not None:
            self.starts = torch.as_tensor(task.starts, dtype=torch.bool).reshape(-1)
            first = torch.where(self.starts, torch.arange(T), torch.zeros(T, dtype=torch.long))
            self.seg_start = torch.cummax(first, 0).values
        self.cw = self.E if task.columns is None else max(1, min(self.E, int(task.columns)))
        self.passes, self.pass_ = -(-self.E // self.cw), 0
        self.props = [make_propagator(encoder.layers[k], self.S, self.cw, k == 0, task.dtype,
                                      task.device, task.method) for k in range(task.layer + 1)]
        layer = encoder.layers[task.layer]
        self.project = unit_projection(layer, task.readout, task.units, task.dtype, task.device)
        self.H = (layer.readout_size(task.readout) if self.project is None
                  else self.project.shape[0])
        self.emb = (encoder.embedding.weight.detach().to(device=task.device, dtype=task.dtype)
                    if self.tokens else None)
        self.ci_delays = (sorted({int(d) for d in task.ci_delays if 0 <= d <= task.max_delay})
                          if self.C else [])
        self._allocate()
        self.pos = self.first
        self._columns()

    def _allocate(self) -> None:
        """Zero accumulators: H x (C+1)*S x E (compute dtype ``st``, float64 ``master``; the
        ``_x`` pair for the further classes of multi-class sources), per-block sums
        B x H x S x E, counts, and the per-class block sums at the ``ci_delays``."""
        H, S, E, nb, dev = self.H, self.S, self.E, self.nb, self.task.device
        nbk = self.C + 1
        self.st = torch.zeros(H, nbk * S, E, dtype=self.task.dtype, device=dev)
        self.master = torch.zeros(H, nbk * S, E, dtype=torch.float64, device=dev)
        self.st_x = torch.zeros_like(self.st) if self.extras else None
        self.master_x = torch.zeros_like(self.master) if self.extras else None
        self.block_sums = torch.zeros(nb, H, S, E, dtype=torch.float64, device=dev)
        self.counts = torch.zeros(nbk * S, dtype=torch.long)
        self.counts_x = torch.zeros(nbk * S, dtype=torch.long)
        self.block_counts = torch.zeros(nb, S, dtype=torch.long)
        self.sel_d = torch.tensor(self.ci_delays, dtype=torch.long, device=dev)
        self.cblock_sums = torch.zeros(nb, H, nbk, len(self.ci_delays), E, dtype=torch.float64,
                                       device=dev)
        self.cblock_counts = torch.zeros(nb, nbk, S, dtype=torch.long)
        rows = max(0, self.stop - self.start)  # per-pair norms of this run's targets
        keep = rows * S * 4 <= NORM_MEMORY_LIMIT
        self.norms = torch.zeros(rows, S, dtype=torch.float32) if keep else None
        self.nbuf = (torch.zeros(self.task.chunk_size, S, dtype=self.task.dtype, device=dev)
                     if keep else None)  # slot-order norms of the current chunk's steps

    # -- checkpoints -------------------------------------------------------------------------
    def settings(self) -> dict:
        """What a resumed run must share with the saved one (besides model and stream)."""
        t = self.task
        out = {"K": t.max_delay, "layer": t.layer, "readout": t.readout, "dtype": str(t.dtype),
               "method": t.method, "blocks": self.nb, "flush_every": t.flush_every,
               "classes": self.C, "ci_delays": tuple(self.ci_delays)}
        if t.units != "all":
            out["units"] = t.units
        if t.segment is not None:
            out["segment"] = int(t.segment)
        if self.starts is not None:
            out["reset"] = bool(t.reset)
        if t.shard is not None:
            out["shard"] = (self.start, self.stop, self.first)
        if self.passes > 1:
            out["columns"] = self.cw
        return out

    def fingerprint(self, encoder: RecurrentEncoder) -> str:
        extra = () if self.starts is None else (self.starts,)
        return fingerprint(self.settings(), self.ids, self.bucket, list(self.extras), self.mask,
                           encoder, *extra)

    def payload(self) -> dict:
        """Position, states, tangents and accumulators (tensors; None where unused)."""
        out = {"position": self.pos, "states": [list(p.state) for p in self.props],
               "tangents": [list(p.tangents) for p in self.props],
               **{name: getattr(self, name) for name in ACCUMULATORS}}
        if self.passes > 1:
            out["column_pass"] = self.pass_
        return out

    def restore(self, saved: dict, path: Any) -> None:
        """Continue from a checked :meth:`payload` (same shapes and dtypes)."""
        pos = saved["position"]
        if not _is_int(pos) or not self.first <= pos <= self.stop:
            raise MemlensError(f"checkpoint {path} is damaged or was edited (position {pos!r} "
                               f"outside {self.first}..{self.stop}): delete it or run without "
                               "--resume")
        if self.passes > 1:
            done = saved.get("column_pass")
            if not _is_int(done) or not 0 <= done < self.passes:
                raise MemlensError(f"checkpoint {path} is damaged or was edited (column pass "
                                   f"{done!r} outside 0..{self.passes - 1}): delete it or run "
                                   "without --resume")
            self.pass_ = int(done)
            self._columns()
        for p, state, tans in zip(self.props, saved["states"], saved["tangents"]):
            p.state = tuple(state)
            p.tangents = list(tans)
        for name in ACCUMULATORS:
            if getattr(self, name) is not None:
                getattr(self, name).copy_(saved[name])
        self.pos = int(pos)

    # -- column passes -----------------------------------------------------------------------
    @property
    def vpos(self) -> int:
        """The position counted over all column passes (pass p's position t: p * span + t)."""
        return self.pass_ * (self.stop - self.first) + self.pos

    @property
    def vstop(self) -> int:
        """Where the last column pass ends, in :attr:`vpos` units."""
        return (self.passes - 1) * (self.stop - self.first) + self.stop

    def _columns(self) -> None:
        """Point the propagators at the input columns of pass ``pass_`` (restarting them);
        ``cols``: the accumulator columns it adds, ``off``: where they begin in its tangents."""
        if self.passes == 1:
            self.cols, self.off = slice(None), 0
            return
        lo = min(self.pass_ * self.cw, self.E - self.cw)
        self.cols = slice(self.pass_ * self.cw, min(self.E, (self.pass_ + 1) * self.cw))
        self.off = self.cols.start - lo
        for p in self.props:
            p.set_columns(lo)

    def next_pass(self) -> None:
        """Start the next column pass from the stream's first position."""
        self.pass_ += 1
        self.pos = self.first
        self._columns()

    # -- one chunk ---------------------------------------------------------------------------
    def _block(self, t: int) -> int:
        return t * self.nb // self.T

    def chunk(self, a: int, b: int, guard: Guard) -> None:
        """Steps a..b-1 (fewer once ``guard.requested``): primal, tangents and the sums of
        their targets, then the pair counts of the steps done; ``pos`` moves on."""
        c = self._plan(a, b)
        done = a
        for k in range(b - a):
            self._step(a + k, c, k)
            done = a + k + 1
            if guard.requested:
                break
        if self.pass_ == 0:
            self._count(c, done - a)
        if self.norms is not None and done > a:
            self._keep_norms(c, done - a)
        self.pos = done

    def _plan(self, a: int, b: int) -> _Chunk:
        task, S = self.task, self.S
        tvec = torch.arange(a, b)
        delays = (tvec.unsqueeze(1) - torch.arange(S)) % S   # n x S: delay of each slot
        src = tvec.unsqueeze(1) - delays                      # source position of each slot
        live = src >= 0
        if self.start > 0:  # warm-up steps accumulate nothing
            live &= (tvec >= self.start).unsqueeze(1)
        if self.seg_start is not None:
            live &= delays <= (tvec - self.seg_start[a:b]).unsqueeze(1)
        if self.mask is not None:
            live &= self.mask[a:b].unsqueeze(1)
        srcc = src.clamp(min=0)
        idx0 = self.bucket[srcc] * S + delays
        idx_x = [e[srcc] * S + delays for e in self.extras]
        xs = (self.emb[self.ids[a:b].to(task.device)] if self.tokens
              else self.ids[a:b].to(device=task.device, dtype=task.dtype))
        return _Chunk(tvec, delays, live, idx0, idx_x, xs, live.any(1).tolist(),
                      idx0.to(task.device), [i.to(task.device) for i in idx_x])

    def _step(self, t: int, c: _Chunk, k: int) -> None:
        """Position t (the k-th of chunk ``c``): every layer one step, the site's readout
        tangents into the short-term sums, a flush where one is due."""
        task = self.task
        x, dx = c.xs[k], None
        if self.starts is not None and t > 0 and self.starts[t]:
            for p in self.props:  # a new segment: cut the gradient paths into earlier ones
                for tan in p.tangents:
                    tan.zero_()
                if task.reset:
                    p.reset_state()
        for p in self.props:
            p.step(x, dx, t % self.S)
            x, dx = p.output, p.output_tangent()
        if c.sel[k]:
            R = self._readout()
            if self.off:
                R = R[:, :, self.off:]
            if self.nbuf is not None:
                torch.linalg.vector_norm(R, dim=(0, 2), out=self.nbuf[k])
            if self.passes == 1:
                self.st.index_add_(1, c.idx0_d[k], R)
            else:
                self.st[:, :, self.cols].index_add_(1, c.idx0_d[k], R)
            for ix in c.idx_x_d:
                (self.st_x if self.passes == 1 else self.st_x[:, :, self.cols]).index_add_(
                    1, ix[k], R)
        if (t + 1) % task.flush_every == 0 or t + 1 == self.stop or \
                self._block(t + 1) != self._block(t):
            self.flush(t)

    def _readout(self) -> Tensor:
        """Tangents of the site's values, H x S x E (H: the unit set's size)."""
        R = self.props[self.task.layer].readout(self.task.readout)
        if self.project is not None:
            R = self.project @ R
        return R.view(self.H, self.S, self.cw)

    def flush(self, t: int) -> None:
        """Move the short-term sums of targets up to t into the float64 masters."""
        H, S, E, nbk = self.H, self.S, self.E, self.C + 1
        self.master.add_(self.st)
        b = self._block(t)
        self.block_sums[b].add_(self.st.view(H, nbk, S, E).to(torch.float64).sum(1))
        if self.ci_delays:
            self.cblock_sums[b].add_(self.st.view(H, nbk, S, E).index_select(2, self.sel_d))
        self.st.zero_()
        if self.extras:
            self.master_x.add_(self.st_x)
            if self.ci_delays:
                self.cblock_sums[b].add_(self.st_x.view(H, nbk, S, E).index_select(2, self.sel_d))
            self.st_x.zero_()

    def _count(self, c: _Chunk, n: int) -> None:
        """Count the pairs of the first n targets of chunk ``c``, one op per accumulator."""
        S, nb = self.S, self.nb
        lv = c.live[:n]
        ones = torch.ones(int(lv.sum()), dtype=torch.long)
        self.counts.index_add_(0, c.idx0[:n][lv], ones)
        for ix in c.idx_x:
            self.counts_x.index_add_(0, ix[:n][lv], ones)
        blk = (c.tvec[:n] * nb) // self.T
        self.block_counts.view(-1).index_add_(0, (blk.unsqueeze(1) * S + c.delays[:n])[lv], ones)
        if self.ci_delays:
            for ix in (c.idx0, *c.idx_x):
                self.cblock_counts.view(-1).index_add_(
                    0, (blk.unsqueeze(1) * ((self.C + 1) * S) + ix[:n])[lv], ones)

    def _keep_norms(self, c: _Chunk, n: int) -> None:
        """The norms of the first n targets' counted pairs, slot order -> delay order, into
        ``norms`` (rows t - start; warm-up targets have none)."""
        a = int(c.tvec[0])
        lo = max(0, self.start - a)
        if lo >= n:
            return
        vals = self.nbuf[lo:n].to("cpu", torch.float32)
        vals = torch.where(c.live[lo:n], vals, torch.zeros((), dtype=torch.float32))
        rows = self.norms[a + lo - self.start:a + n - self.start]
        if self.passes == 1:
            rows.scatter_(1, c.delays[lo:n], vals)
        else:  # squares, added over the passes (the square root in :meth:`sums`)
            rows.scatter_add_(1, c.delays[lo:n], vals * vals)

    # -- the result --------------------------------------------------------------------------
    def sums(self, processed: int, elapsed: float) -> Sums:
        """The float64 sums as numpy arrays (:class:`Sums`), with the run's statistics."""
        H, S, E, C, nbk = self.H, self.S, self.E, self.C, self.C + 1
        m = self.master.view(H, nbk, S, E)
        cls = m[:, :C]
        if self.extras:
            cls = cls + self.master_x.view(H, nbk, S, E)[:, :C]
        cnt = self.counts.view(nbk, S)
        macs = sum(p.macs_per_step() for p in self.props)
        steps = processed  # stream positions: over all column passes, the steps / passes
        processed = processed / self.passes if self.passes > 1 else processed
        stats = {"tokens_processed": processed, "seconds": elapsed,
                 "tokens_per_second": processed / elapsed if elapsed > 0 else float("nan"),
                 "macs_per_token": macs * self.passes, "macs_per_second": macs * steps / elapsed
                 if elapsed > 0 else float("nan"), "column_passes": self.passes,
                 "nominal_flops_per_token": 2 * 4 * H * H * self.task.max_delay * E,
                 "warmup_tokens": self.start - self.first,
                 "dtype": str(self.task.dtype).replace("torch.", ""),
                 "method": "generic" if self.props[0].generic else "hand"}
        nd = len(self.ci_delays)
        norms = None
        if self.norms is not None:
            norms = np.zeros((self.T, S), dtype=np.float32)
            norms[self.start:self.stop] = (self.norms.sqrt() if self.passes > 1
                                           else self.norms).numpy()
        return Sums(sums=m.sum(1).permute(1, 0, 2).cpu().numpy(), counts=cnt.sum(0).numpy(),
                    class_sums=cls.permute(1, 2, 0, 3).cpu().numpy(),
                    class_counts=(cnt[:C] + self.counts_x.view(nbk, S)[:C]).numpy(),
                    block_sums=self.block_sums.permute(0, 2, 1, 3).cpu().numpy(),
                    block_counts=self.block_counts.numpy(), stats=stats,
                    ci_delays=self.ci_delays,
                    class_block_sums=self.cblock_sums[:, :, :C].permute(0, 2, 3, 1, 4).cpu()
                    .numpy() if nd else None,
                    class_block_counts=self.cblock_counts[:, :C].numpy() if nd else None,
                    norms=norms)


def _buckets(T: int, C: int, memberships: Sequence[Sequence[int]] | None
             ) -> tuple[Tensor, list[Tensor]]:
    """Class buckets per position: pass 0 = the first class or C ("none"); one extra pass r >= 1
    per further class of multi-class positions (class, or the dump bucket C)."""
    bucket = torch.full((T,), C, dtype=torch.long)
    extras: list[Tensor] = []
    if memberships is not None and C > 0:
        depth = max((len(m) for m in memberships), default=0)
        extras = [torch.full((T,), C, dtype=torch.long) for _ in range(max(0, depth - 1))]
        for j, m in enumerate(memberships):
            for r, c in enumerate(m):
                (bucket if r == 0 else extras[r - 1])[j] = c
    return bucket, extras


def unit_projection(layer: RecurrentLayer, readout: str, units: str, dtype: torch.dtype,
                    device: torch.device) -> Tensor | None:
    """None for ``units="all"``; else the D x R matrix P of the unit set's linear map (readout
    values r -> unit values P r; a row selection or a projection such as A h), so that the
    tangent of the unit values is P times the readout's tangent."""
    if units == "all":
        return None
    uset = layer.units(units, readout)
    ref = next(layer.parameters(), None)
    kind = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    with torch.no_grad():
        eye = torch.eye(layer.readout_size(readout), dtype=kind,
                        device=ref.device if ref is not None else None)
        return uset(eye).T.to(device=device, dtype=dtype).contiguous()
