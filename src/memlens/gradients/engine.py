"""The streaming engine: exact sums of state gradients per delay and class, in one forward pass.

The corpus is one continuous stream x_0 .. x_{T-1} from a zero initial state (batch 1). For every
target position t and delay tau = 0..K with t - tau >= 0 the engine adds the H x E block
G_t(tau) = d s_t / d x_{t-tau} to

* a class accumulator, chosen by the class(es) of the *source* token t - tau
  (pass 0: the first class of the source, or a "no class" bucket; further passes add the
  second, third, ... class of multi-class sources, e.g. lexicon words with several tags);
* a per-block accumulator of the overall sum (blocks of targets, for the bootstrap).

The overall sum is the sum over the pass-0 buckets, so it costs nothing extra.

Pair set: by default every (t, tau) with t - tau >= 0, tau <= K. With ``segment=S_seg`` only
pairs whose source and target lie in the same segment of S_seg tokens (segments start at
stream positions 0, S_seg, 2 S_seg, ...): t // S_seg == (t - tau) // S_seg, i.e.
tau <= t mod S_seg. This is the original implementation's pair set (truncated BPTT over
segments of ``num_steps`` tokens, batch 1, carried state; it runs once per ``time_step`` and
averages over all of them, so every target of every segment is used). It costs nothing: at
each segment start all tangents are zeroed (the gradient of later states with respect to
earlier segments is cut, exactly as truncated BPTT does), so excluded slots add exact zeros,
and the excluded pairs are left out of the counts. The primal state is carried on, as in the
original; d s_t / d x_{t-tau} of an included pair is the same as on the full stream.

Layout: accumulators are H x (buckets * S) x E with S = K + 1, so the readout tangent matrix
(H x S*E, viewed H x S x E) is added with one ``index_add_`` per step (index = bucket * S +
delay of each ring slot). Short-term accumulators in the compute dtype are flushed into float64
master sums every ``flush_every`` steps and at block boundaries; flush points are absolute
stream positions, so the result is bit-identical however the work is split into chunks or
interrupted and resumed. Memory is O(K * buckets * H * E), independent of the corpus length.

Shards (``shard=(start, stop)``, ``warmup=W``; used by :mod:`memlens.distributed`): only
targets start <= t < stop are accumulated, but the stream is processed from
w0 = max(0, start - W): the W warm-up steps run the primal and all tangents from a zero state and
accumulate nothing, so a target near the shard start still sees its sources before the start
(delays reach back up to K across the boundary) and the pair set and counts are exactly the
single stream's. A pair whose source lies before w0 (only when W < K) is counted with a zero
gradient. The primal state at ``start`` and the tangents of sources >= w0 are exact once W
exceeds the model's effective memory (a contracting recurrence forgets its zero start).
Ring slots, segment starts, blocks and flush points are absolute stream positions (plus one
flush at the shard end), so the shards' sums add up to the single stream's.

Checkpoints (``checkpoint=path``) hold primal states, live tangents, all accumulators, the
position and a SHA-256 digest of all of them; SIGINT / SIGTERM during a run save one and raise
:class:`GradientsInterrupted`. A finished run saves a final one (position T) and, with
``keep_checkpoint``, leaves it for the caller to delete once the results are safely written.
On resume every tensor's shape and dtype, the position (0..T) and the digest are checked.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from memlens.errors import MemlensError
from memlens.gradients.tangents import make_propagator
from memlens.io import atomic_path
from memlens.models.encoder import RecurrentEncoder

CHECKPOINT_FORMAT = "memlens-gradients-partial"


class GradientsInterrupted(KeyboardInterrupt):
    """Raised after an interrupt (or ``stop_after``) once the checkpoint has been saved."""

    def __init__(self, checkpoint: str, position: int, total: int):
        super().__init__(f"interrupted at token {position}/{total}; progress saved to "
                         f"{checkpoint}; rerun with --resume to continue")
        self.checkpoint, self.position, self.total = checkpoint, position, total


@dataclass
class Sums:
    """Raw sums from the engine (float64 numpy arrays; S = K + 1 delays, C classes).

    sums: S x H x E (overall); counts: S. class_sums: C x S x H x E; class_counts: C x S.
    block_sums: B x S x H x E and block_counts: B x S (overall sums per block of targets).
    class_block_sums: B x C x D x H x E at the delays ``ci_delays`` (D of them) and
    class_block_counts: B x C x S, for class-wise bootstrap intervals (empty when disabled).
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


class _StopFlag:
    """Set by SIGINT/SIGTERM while a checkpointed run is active (main thread only)."""

    def __init__(self, enabled: bool):
        self.flag = False
        self.old: dict[int, object] = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):  # noqa: ARG002
        self.flag = True

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return False


def _tensors(payload: dict) -> list[tuple[str, Tensor]]:
    """The tensors of a checkpoint payload in a fixed order, with their names."""
    out = []
    for key in sorted(payload):
        v = payload[key]
        if isinstance(v, Tensor):
            out.append((key, v))
        elif key in ("states", "tangents"):
            out += [(f"{key}[{i}][{j}]", t) for i, group in enumerate(v)
                    for j, t in enumerate(group)]
    return out


def _payload_digest(payload: dict) -> str:
    """SHA-256 over the fingerprint, the position and every tensor (name, shape, dtype, bytes)."""
    h = hashlib.sha256()
    h.update(f"{payload.get('fingerprint')}|{payload.get('position')}".encode())
    for name, t in _tensors(payload):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_partial(ck: object, expected: dict, path: str | Path, total: int,
                   first: int = 0) -> int:
    """Validate a loaded checkpoint against freshly allocated ``expected`` tensors; return
    its position. Any mismatch is a one-line :class:`MemlensError`."""
    def bad(why: str) -> MemlensError:
        return MemlensError(f"checkpoint {path} is damaged or was edited ({why}): delete it or "
                            "run without --resume")

    if not isinstance(ck, dict):
        raise bad("not a mapping")
    pos = ck.get("position")
    if isinstance(pos, bool) or not isinstance(pos, int) or not first <= pos <= total:
        raise bad(f"position {pos!r} outside {first}..{total}")
    for key in ("states", "tangents"):
        got, want = ck.get(key), expected[key]
        if not isinstance(got, list) or len(got) != len(want) or any(
                not isinstance(g, list) or len(g) != len(w) for g, w in zip(got, want)):
            raise bad(f"{key} do not match the model's layers")
    names = dict(_tensors(expected))
    found = dict(_tensors(ck))
    if set(found) != set(names):
        raise bad("tensors missing or unexpected")
    for name, want in names.items():
        got = found[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise bad(f"{name} has shape {tuple(got.shape)} {got.dtype}, expected "
                      f"{tuple(want.shape)} {want.dtype}")
    if ck.get("digest") != _payload_digest(ck):
        raise bad("digest mismatch")
    return pos


def _fingerprint(encoder: RecurrentEncoder, ids: Tensor, arrays: Sequence[Tensor],
                 settings: dict) -> str:
    h = hashlib.sha256()
    h.update(repr(sorted(settings.items())).encode())
    for t in (ids, *arrays):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for name, p in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().double().contiguous().numpy().tobytes())
    return h.hexdigest()


def accumulate(encoder: RecurrentEncoder, ids: Tensor, max_delay: int, layer: int, readout: str,
               memberships: Sequence[Sequence[int]] | None = None, n_classes: int = 0, *,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
               method: str = "auto", blocks: int = 20, flush_every: int = 256,
               chunk_size: int = 256, checkpoint: str | Path | None = None,
               checkpoint_every: float = 300.0, resume: bool = False,
               stop_after: int | None = None, progress: bool = False,
               target_mask: Tensor | None = None, ci_delays: Sequence[int] = (),
               on_chunk: Callable[[int], None] | None = None,
               keep_checkpoint: bool = False, segment: int | None = None,
               shard: tuple[int, int] | None = None, warmup: int = 0) -> Sums:
    """Exact sums of d s_t / d x_{t-tau} over the stream ``ids`` (see module docstring).

    ``ids``: 1-D token ids (x_t = embedding row) or T x I input vectors (x_t = the row).

    ``memberships[j]`` lists the class indices (0..n_classes-1) of token j (may be empty).
    ``target_mask`` (bool, length T) restricts the targets t that are accumulated (used by the
    benchmark to compare against a per-position algorithm). ``stop_after`` processes at most
    that many tokens in this call, then saves the checkpoint and raises GradientsInterrupted.
    ``on_chunk(position)`` is called after every chunk. With ``keep_checkpoint`` a finished
    run leaves its final checkpoint (position T; resuming from it skips the accumulation) for
    the caller to delete; otherwise it is deleted here. ``segment``: keep only pairs inside one
    segment of that many tokens (module docstring). ``shard=(start, stop)`` accumulates only
    targets start <= t < stop after ``warmup`` steps from a zero state (module docstring).
    Arguments are assumed validated.
    """
    device = torch.device(device)
    tokens = ids.dim() == 1
    ids = ids.to("cpu", torch.long) if tokens else ids.to("cpu")
    T, K = ids.shape[0], max_delay
    S, C = K + 1, n_classes
    L = layer
    E = encoder.input_size
    H = encoder.layers[L].readout_size(readout)
    nb = max(1, min(blocks, T))
    start, stop = (0, T) if shard is None else (int(shard[0]), int(shard[1]))
    first = max(0, start - max(0, int(warmup))) if start < stop else start
    # class buckets: pass 0 = first class or C ("none"); extra passes r >= 1 -> class or dump C
    bucket = torch.full((T,), C, dtype=torch.long)
    extras: list[Tensor] = []
    if memberships is not None and C > 0:
        depth = max((len(m) for m in memberships), default=0)
        extras = [torch.full((T,), C, dtype=torch.long) for _ in range(max(0, depth - 1))]
        for j, m in enumerate(memberships):
            for r, c in enumerate(m):
                (bucket if r == 0 else extras[r - 1])[j] = c
    mask = None if target_mask is None else target_mask.to("cpu", torch.bool).reshape(-1)

    props = [make_propagator(encoder.layers[k], S, E, k == 0, dtype, device, method)
             for k in range(L + 1)]
    emb = encoder.embedding.weight.detach().to(device=device, dtype=dtype) if tokens else None
    nbk = C + 1
    st = torch.zeros(H, nbk * S, E, dtype=dtype, device=device)
    master = torch.zeros(H, nbk * S, E, dtype=torch.float64, device=device)
    st_x = torch.zeros_like(st) if extras else None
    master_x = torch.zeros_like(master) if extras else None
    block_sums = torch.zeros(nb, H, S, E, dtype=torch.float64, device=device)
    counts = torch.zeros(nbk * S, dtype=torch.long)
    counts_x = torch.zeros(nbk * S, dtype=torch.long)
    block_counts = torch.zeros(nb, S, dtype=torch.long)
    ci_delays = sorted({int(d) for d in ci_delays if 0 <= d <= K}) if C else []
    nd = len(ci_delays)
    sel_d = torch.tensor(ci_delays, dtype=torch.long, device=device)
    cblock_sums = torch.zeros(nb, H, nbk, nd, E, dtype=torch.float64, device=device)
    cblock_counts = torch.zeros(nb, nbk, S, dtype=torch.long)
    settings = {"K": K, "layer": L, "readout": readout, "dtype": str(dtype), "method": method,
                "blocks": nb, "flush_every": flush_every, "classes": C,
                "ci_delays": tuple(ci_delays)}
    if segment is not None:  # absent key for None keeps earlier checkpoints valid
        settings["segment"] = int(segment)
    if shard is not None:
        settings["shard"] = (start, stop, first)
    fp = _fingerprint(encoder, ids, [bucket, *extras] + ([mask] if mask is not None else []),
                      settings) if checkpoint is not None else ""
    pos = first

    def payload() -> dict:
        return {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "position": pos,
                "states": [list(p.state) for p in props],
                "tangents": [list(p.tangents) for p in props],
                "st": st, "master": master, "st_x": st_x if extras else None,
                "master_x": master_x if extras else None, "block_sums": block_sums,
                "counts": counts, "counts_x": counts_x, "block_counts": block_counts,
                "cblock_sums": cblock_sums, "cblock_counts": cblock_counts}

    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise MemlensError(f"nothing to resume: no checkpoint at {checkpoint}")
        from memlens.models.checkpoint import load_checked

        ck = load_checked(checkpoint, "state-gradient checkpoint", device)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or \
                ck.get("fingerprint") != fp:
            raise MemlensError(f"checkpoint {checkpoint} was made with a different model, "
                               "corpus or settings: delete it or run without --resume")
        pos = _check_partial(ck, payload(), checkpoint, stop, first)
        for p, state, tans in zip(props, ck["states"], ck["tangents"]):
            p.state = tuple(state)
            p.tangents = list(tans)
        st.copy_(ck["st"])
        master.copy_(ck["master"])
        if extras:
            st_x.copy_(ck["st_x"])
            master_x.copy_(ck["master_x"])
        block_sums.copy_(ck["block_sums"])
        counts.copy_(ck["counts"])
        counts_x.copy_(ck["counts_x"])
        block_counts.copy_(ck["block_counts"])
        cblock_sums.copy_(ck["cblock_sums"])
        cblock_counts.copy_(ck["cblock_counts"])

    def save() -> None:
        data = payload()
        data["digest"] = _payload_digest(data)
        with atomic_path(checkpoint) as tmp:
            torch.save(data, tmp)

    def block_of(t: int) -> int:
        return t * nb // T

    def flush(t: int) -> None:
        """Move the short-term sums of targets up to t into the float64 masters."""
        master.add_(st)
        b = block_of(t)
        block_sums[b].add_(st.view(H, nbk, S, E).to(torch.float64).sum(1))
        if nd:
            cblock_sums[b].add_(st.view(H, nbk, S, E).index_select(2, sel_d))
        st.zero_()
        if extras:
            master_x.add_(st_x)
            if nd:
                cblock_sums[b].add_(st_x.view(H, nbk, S, E).index_select(2, sel_d))
            st_x.zero_()

    macs = sum(p.macs_per_step() for p in props)
    start_pos, started, last_save = pos, time.perf_counter(), time.perf_counter()
    end = stop if stop_after is None else min(stop, pos + max(0, stop_after))
    arange_s = torch.arange(S)
    bar = tqdm(total=stop - first, initial=pos - first, unit="tok", desc="state gradients",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    stopped = False
    with _StopFlag(checkpoint is not None) as halt, torch.no_grad():
        while pos < end and not stopped:
            a, b = pos, min(end, (pos // chunk_size + 1) * chunk_size)
            tvec = torch.arange(a, b)
            delays = (tvec.unsqueeze(1) - arange_s) % S          # n x S: delay of each slot
            src = tvec.unsqueeze(1) - delays                      # source position of each slot
            live = src >= 0
            if start > 0:  # warm-up steps accumulate nothing
                live &= (tvec >= start).unsqueeze(1)
            if segment is not None:
                live &= delays <= (tvec % segment).unsqueeze(1)
            if mask is not None:
                live &= mask[a:b].unsqueeze(1)
            srcc = src.clamp(min=0)
            idx0 = bucket[srcc] * S + delays
            idx_x = [e[srcc] * S + delays for e in extras]
            xs = emb[ids[a:b].to(device)] if tokens else \
                ids[a:b].to(device=device, dtype=dtype)
            sel = live.any(1).tolist()
            idx0_d = idx0.to(device)
            idx_x_d = [i.to(device) for i in idx_x]
            done = a
            for k in range(b - a):
                t = a + k
                slot = t % S
                x, dx = xs[k], None
                if segment is not None and t % segment == 0:
                    for p in props:  # cut the gradient paths into earlier segments
                        for tan in p.tangents:
                            tan.zero_()
                for p in props:
                    p.step(x, dx, slot)
                    x, dx = p.output, p.output_tangent()
                if sel[k]:
                    R = props[L].readout(readout).view(H, S, E)
                    st.index_add_(1, idx0_d[k], R)
                    for ix in idx_x_d:
                        st_x.index_add_(1, ix[k], R)
                if (t + 1) % flush_every == 0 or t + 1 == stop or \
                        block_of(t + 1) != block_of(t):
                    flush(t)
                done = t + 1
                if halt.flag:
                    stopped = True
                    break
            n = done - a  # count the pairs of the steps actually done, one op per chunk
            lv = live[:n]
            ones = torch.ones(int(lv.sum()), dtype=torch.long)
            counts.index_add_(0, idx0[:n][lv], ones)
            for ix in idx_x:
                counts_x.index_add_(0, ix[:n][lv], ones)
            blk = (tvec[:n] * nb) // T
            block_counts.view(-1).index_add_(0, (blk.unsqueeze(1) * S + delays[:n])[lv], ones)
            if nd:
                for ix in (idx0, *idx_x):
                    cblock_counts.view(-1).index_add_(
                        0, (blk.unsqueeze(1) * (nbk * S) + ix[:n])[lv], ones)
            bar.update(done - pos)
            pos = done
            if on_chunk is not None:
                on_chunk(pos)
            if checkpoint is not None and pos < stop and not stopped and \
                    time.perf_counter() - last_save > checkpoint_every:
                save()
                last_save = time.perf_counter()
    bar.close()
    elapsed = time.perf_counter() - started
    if pos < stop:
        if checkpoint is None:
            raise KeyboardInterrupt
        save()
        raise GradientsInterrupted(str(checkpoint), pos, T)
    if checkpoint is not None:
        if keep_checkpoint:
            if pos > start_pos:  # keep the finished sums until the caller has its results
                save()
        else:
            Path(checkpoint).unlink(missing_ok=True)

    m = master.view(H, nbk, S, E)
    sums = m.sum(1).permute(1, 0, 2).cpu().numpy()
    cls = m[:, :C]
    if extras:
        cls = cls + master_x.view(H, nbk, S, E)[:, :C]
    class_sums = cls.permute(1, 2, 0, 3).cpu().numpy()
    cnt = counts.view(nbk, S)
    class_counts = (cnt[:C] + counts_x.view(nbk, S)[:C]).numpy()
    processed = pos - start_pos
    stats = {"tokens_processed": processed, "seconds": elapsed,
             "tokens_per_second": processed / elapsed if elapsed > 0 else float("nan"),
             "macs_per_token": macs, "macs_per_second": macs * processed / elapsed
             if elapsed > 0 else float("nan"),
             "nominal_flops_per_token": 2 * 4 * H * H * K * E,
             "warmup_tokens": start - first,
             "dtype": str(dtype).replace("torch.", ""),
             "method": "generic" if props[0].generic else "hand"}
    return Sums(sums=sums, counts=cnt.sum(0).numpy(), class_sums=class_sums,
                class_counts=class_counts, block_sums=block_sums.permute(0, 2, 1, 3).cpu().numpy(),
                block_counts=block_counts.numpy(), stats=stats, ci_delays=ci_delays,
                class_block_sums=cblock_sums[:, :, :C].permute(0, 2, 3, 1, 4).cpu().numpy()
                if nd else None,
                class_block_counts=cblock_counts[:, :C].numpy() if nd else None)
