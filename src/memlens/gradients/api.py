"""``memlens.state_gradients``: the Python entry point of the state-gradient analysis."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from memlens import distributed
from memlens.errors import MemlensError
from memlens.gradients import metrics
from memlens.gradients.classes import encode_memberships
from memlens.gradients.engine import accumulate
from memlens.gradients.normalize import embedding_normalization
from memlens.gradients.result import GradientResult
from memlens.limits import check_memory
from memlens.models.encoder import as_encoder
from memlens.models.inputs import as_stream
from memlens.runtime.options import resolve_dtype  # moved there; still importable here


def deprecated_alias(new_value, old_value, new: str, old: str):
    """Return ``new_value``, or ``old_value`` (with a DeprecationWarning) when only it is set."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old}= is deprecated: use {new}=", DeprecationWarning, stacklevel=3)
    if new_value is not None and new_value != old_value:
        raise MemlensError(f"give {new}= or its deprecated alias {old}=, not both")
    return old_value


def state_gradients(model: nn.Module, inputs, max_delay: int, readout: str | None = None,
                    layer: int = -1, labels: Sequence | None = None, *,
                    label_names: Sequence[str] | None = None,
                    dtype: torch.dtype | str = "float32",
                    device: str | torch.device = "cpu", method: str = "auto",
                    blocks: int = 20, bootstrap: int = 200, chunk_size: int = 256,
                    flush_every: int = 256, checkpoint: str | Path | None = None,
                    checkpoint_every: float = 300.0, resume: bool = False,
                    stop_after: int | None = None, progress: bool = False, target_mask=None,
                    on_chunk=None, class_ci_delays: Sequence[int] | None = None,
                    state: str | None = None, classes: Sequence | None = None,
                    class_names: Sequence[str] | None = None,
                    keep_checkpoint: bool = False, segment: int | None = None,
                    direction_weighting: str = "type",
                    warmup: int | None = None, distributed_run: bool = True
                    ) -> GradientResult:
    """Exact average state gradients d r_t / d x_{t-tau}, tau = 0..max_delay, of one stream.

    For every target t and delay tau (t - tau >= 0) the readout's Jacobian
    G_t(tau) = d r_t / d x_{t-tau} (D x E; x = the input vector: embedding row or frame) is
    averaged per delay and per label of the *source* position t - tau:
    Gbar(tau) = mean_t G_t(tau). Metrics use Gn(tau) = Gbar(tau) D with S = D D^T the input
    covariance (embedding table rows for token models, the stream's vectors otherwise).

    model: anything the model protocol accepts (a memlens model, ``memlens.wrap(...)``);
    inputs: one continuous stream from a zero state (ids, symbols, a Corpus, T x I vectors or
    a :class:`~memlens.models.inputs.Stream`); readout: a readout name of ``layer`` (default:
    ``RecurrentEncoder.default_readout``: an LSTM's cell state, as the paper, otherwise the
    layer's output); layer: negative counts from the top. labels: optional, one entry per
    position: None, a class name, or a list of class names (the position then counts for
    each); ``label_names`` fixes their order (default: sorted). ``bootstrap``: resamples for
    the intervals of the table and saved result. dtype: "float32" or "float64"; method:
    "auto" (hand-derived tangents where known), "hand" or "generic" (torch.func.jvp on the
    layer's step). See ``engine.accumulate`` for checkpoint / resume / stop_after /
    keep_checkpoint.
    ``class_ci_delays``: delays at which per-class block sums are kept for class-wise
    bootstrap intervals (default 0, 1, 2, 5, 10, 20 and K; skipped when they would need more
    than 1 GB). ``state=``, ``classes=`` and ``class_names=`` are deprecated aliases of
    ``readout=``, ``labels=`` and ``label_names=``.

    segment: None (default) averages every pair (t, tau) of the stream with t - tau >= 0;
    an int S averages only pairs with source and target in the same S-position segment,
    t // S == (t - tau) // S (the original implementation's pair set with ``num_steps`` = S;
    needs max_delay < S). direction_weighting: how the class-mean embeddings behind
    ``result.direction(a, b)`` are averaged: "type" (default, as the original's ``--avg_emb``:
    each distinct vocabulary id among the class's positions once) or "token" (every
    occurrence); for continuous inputs every position is its own type, so both agree. Both
    are recorded in ``result.settings``. Returns a :class:`GradientResult`.

    Inside an initialised ``torch.distributed`` process group (e.g. under ``torchrun``) every
    rank must make the same call: each accumulates one contiguous shard of the targets after
    ``warmup`` warm-up positions (default :func:`memlens.distributed.default_warmup`:
    max(1000, 4 max_delay)), and the sums are all-reduced, so every rank returns the same
    result; ``checkpoint`` then names per-rank files (``NAME.rank<r>.pt``) and only rank 0
    shows progress. ``settings["world_size"]`` records the number of processes (1 without a
    process group) and ``settings["warmup"]`` the warm-up (None for one process).
    ``stop_after`` then counts the positions of each rank (its warm-up included).
    ``distributed_run=False`` computes the whole stream in this process even inside a process
    group (e.g. on rank 0 of a training job while the other ranks do something else).
    """
    enc = as_encoder(model)
    readout = deprecated_alias(readout, state, "readout", "state")
    labels = deprecated_alias(labels, classes, "labels", "classes")
    label_names = deprecated_alias(label_names, class_names, "label_names", "class_names")
    dtype = resolve_dtype(dtype)
    L, readout = enc.check_readout(layer, readout, "gradients")
    stream = as_stream(enc, inputs, "inputs", labels)
    values = stream.values
    T = len(stream)
    if not isinstance(max_delay, (int, np.integer)) or isinstance(max_delay, bool):
        raise MemlensError(f"maximum delay must be an integer, got {max_delay!r}")
    if max_delay < 0:
        raise MemlensError(f"maximum delay must be >= 0, got {max_delay}")
    if max_delay >= T:
        raise MemlensError(f"maximum delay {max_delay} is not shorter than the stream "
                           f"({T} positions): no position has a delay of {max_delay}")
    if segment is not None:
        if not isinstance(segment, (int, np.integer)) or isinstance(segment, bool) \
                or segment < 1:
            raise MemlensError(f"segment must be a positive integer, got {segment!r}")
        if max_delay >= segment:
            raise MemlensError(f"maximum delay {max_delay} is not shorter than the segment "
                               f"({segment} positions): no pair inside a segment has a delay "
                               f"of {max_delay}")
        segment = int(segment)
    if warmup is not None and (not isinstance(warmup, (int, np.integer))
                               or isinstance(warmup, bool) or warmup < 0):
        raise MemlensError(f"warmup must be a non-negative integer, got {warmup!r}")
    group = distributed.current() if distributed_run else None
    if group is not None:  # every rank must see the same stream
        import torch.distributed as dist

        lengths = torch.tensor([T, -T], dtype=torch.int64, device=group.device)
        dist.all_reduce(lengths, op=dist.ReduceOp.MAX)
        if int(lengths[0]) != -int(lengths[1]):
            raise MemlensError(f"the {group.world} processes got streams of different lengths "
                               f"({-int(lengths[1])}..{int(lengths[0])} positions)")
    # an error on one rank must reach the others before they start
    with distributed.agreed(group, "before the state-gradient accumulation"):
        if direction_weighting not in metrics.WEIGHTINGS:
            raise MemlensError(f"unknown direction weighting {direction_weighting!r}: choose "
                               f"{' or '.join(metrics.WEIGHTINGS)}")
        if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
            raise MemlensError(f"bootstrap resamples must be a non-negative integer, got "
                               f"{bootstrap!r}")
        if blocks < 1 or chunk_size < 1 or flush_every < 1:
            raise MemlensError("blocks, chunk_size and flush_every must be positive")
        if stream.is_tokens:
            table = enc.input_table().detach().cpu().double().numpy()
            norm = embedding_normalization(table)
            positions = values.numpy()
        else:  # continuous inputs: statistics of the analysed stream's vectors
            table = values.double().numpy()
            norm = embedding_normalization(table, source="input vectors of the stream")
            positions = np.arange(T)

        memberships, names = None, []
        if stream.labels is not None:
            if label_names is None:
                found = set()
                for lab in stream.labels:
                    if lab is None:
                        continue
                    found.update([lab] if isinstance(lab, str) else lab)
                names = sorted(found)
            else:
                names = list(label_names)
            memberships = encode_memberships(names, stream.labels)
        mask = None
        if target_mask is not None:
            mask = torch.as_tensor(np.asarray(target_mask), dtype=torch.bool)
            if mask.numel() != T:
                raise MemlensError(f"target_mask has {mask.numel()} entries for {T} tokens")

        ci_delays: list[int] = []
        if names:
            wanted = class_ci_delays if class_ci_delays is not None else (0, 1, 2, 5, 10, 20,
                                                                          int(max_delay))
            ci_delays = sorted({int(d) for d in wanted if 0 <= d <= max_delay})
            H = enc.layers[L].readout_size(readout)
            need = min(blocks, T) * H * (len(names) + 1) * len(ci_delays) * enc.input_size * 8
            if need > 1e9:
                ci_delays = []
        H, E, S = enc.layers[L].readout_size(readout), enc.input_size, int(max_delay) + 1
        width = dtype.itemsize if isinstance(dtype, torch.dtype) else 4
        check_memory(H * S * E * ((len(names) + 1) * (width + 8) * 2 + min(blocks, T) * 8
                                  + (L + 1) * 2 * width), "the state-gradient accumulators")
        shard, W = None, None
        if group is not None:
            shard = group.shard(T)
            W = distributed.default_warmup(max_delay) if warmup is None else int(warmup)
            if checkpoint is not None:
                checkpoint = distributed.rank_path(checkpoint, group.rank)
            progress = progress and group.rank == 0
    with distributed.agreed(group, "during the state-gradient accumulation"):
        sums = accumulate(enc, values, int(max_delay), L, readout, memberships, len(names),
                          dtype=dtype, device=device, method=method, blocks=blocks,
                          flush_every=flush_every, chunk_size=chunk_size, checkpoint=checkpoint,
                          checkpoint_every=checkpoint_every, resume=resume,
                          stop_after=stop_after, progress=progress, target_mask=mask,
                          on_chunk=on_chunk, ci_delays=ci_delays,
                          keep_checkpoint=keep_checkpoint or group is not None,
                          segment=segment, shard=shard, warmup=W or 0)
    if group is not None:
        _reduce(group, sums)
        if checkpoint is not None and not keep_checkpoint:
            Path(checkpoint).unlink(missing_ok=True)
    class_emb = probe = None
    if names:
        class_emb = metrics.class_mean_embeddings(table, positions, memberships, len(names),
                                                  direction_weighting)
        probe = metrics.probe_accuracy(table, positions, memberships)
    settings = {"max_delay": int(max_delay), "layer": L, "readout": readout, "tokens": T,
                "input": enc.input_kind, "dtype": str(dtype).replace("torch.", ""),
                "method": sums.stats["method"], "blocks": int(min(blocks, T)),
                "bootstrap": int(bootstrap), "classes": len(names), "segment": segment,
                "direction_weighting": direction_weighting,
                "world_size": 1 if group is None else group.world, "warmup": W}
    return GradientResult(max_delay=int(max_delay), layer=L, state=readout, class_names=names,
                          raw=sums, normalization=norm, settings=settings,
                          class_embeddings=class_emb, probe=probe)


def _reduce(group: distributed.Group, sums) -> None:
    """Replace the rank-local sums, counts and block sums by their sums over the ranks."""
    names = ("sums", "counts", "class_sums", "class_counts", "block_sums", "block_counts",
             "class_block_sums", "class_block_counts")
    reduced = distributed.all_reduce_arrays(group, [getattr(sums, n) for n in names])
    for n, v in zip(names, reduced):
        setattr(sums, n, v)
    st = sums.stats
    local = [float(st["tokens_processed"]), float(st["seconds"]), float(st["warmup_tokens"])]
    tot, = distributed.all_reduce_arrays(group, [np.array(local)])
    slow, = distributed.all_reduce_arrays(group, [np.array([st["seconds"]]) *
                                                  np.eye(group.world)[group.rank]])
    seconds = float(slow.max())
    st.update({"tokens_processed": int(tot[0]), "warmup_tokens": int(tot[2]),
               "seconds": seconds, "processes": group.world,
               "tokens_per_second": (tot[0] - tot[2]) / seconds if seconds > 0 else float("nan"),
               "tokens_per_second_per_process": tot[0] / tot[1] if tot[1] > 0
               else float("nan")})
    if seconds > 0:
        st["macs_per_second"] = st["macs_per_token"] * tot[0] / seconds
