"""``memlens.state_gradients``: the Python entry point of the state-gradient analysis.

The steps of one call: resolve the site (:func:`resolve_site`: the default readout of this
analysis is the layer's memory, an LSTM's cell state c_t as Verwimp et al., else the layer's
output), check the stream and the delays (:func:`check_delays`), prepare the normalisation,
classes, target mask and per-class interval delays (:func:`_prepare`), accumulate the sums
(:func:`memlens.analyses.gradients.engine.accumulate`, one shard per rank inside a
torch.distributed process group, all-reduced by :func:`_reduce`) and build the
:class:`GradientResult` (:func:`_result`).

Inside an initialised ``torch.distributed`` process group (e.g. under ``torchrun``) every rank
must make the same call: each accumulates one contiguous shard of the targets after
``engine.warmup`` warm-up positions (default :func:`memlens.runtime.distributed.default_warmup`:
max(1000, 4 max_delay)), and the sums are all-reduced, so every rank returns the same result;
the checkpoint then names per-rank files (``NAME.rank<r>.pt``) and only rank 0 shows progress.
``settings["world_size"]`` records the number of processes (1 without a process group) and
``settings["warmup"]`` the warm-up (None for one process). ``stop_after`` then counts the
positions of each rank (its warm-up included). ``options.distributed=False`` computes the whole
stream in this process even inside a process group.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from memlens.analyses.gradients import metrics, spectrum, stability
from memlens.analyses.gradients.classes import encode_memberships
from memlens.analyses.gradients.contrasts import parse_contrasts, spec_text
from memlens.analyses.gradients.engine import EngineSettings, Sums, Task, accumulate
from memlens.analyses.gradients.normalize import Normalization, embedding_normalization
from memlens.analyses.gradients.result import GradientResult
from memlens.core.errors import MemlensError, TrustWarning
from memlens.core.limits import check_memory, memory_budget
from memlens.models.encoder import RecurrentEncoder, as_encoder
from memlens.models.inputs import Stream, as_stream, sentence_starts
from memlens.protocol import Site
from memlens.runtime import distributed
from memlens.runtime.context import Context, Layout, check_model_regime, layout
from memlens.runtime.options import MAX_POSITIONS, Checkpointing, RunOptions, as_options

#: the readout role read when the site names none: the layer's memory (LSTM: the cell state)
DEFAULT_READOUT = "memory"
#: bootstrap resamples when ``options.bootstrap.resamples`` is None
DEFAULT_RESAMPLES = 200
#: delays with per-class block sums (class-wise intervals), besides K itself
DEFAULT_CI_DELAYS = (0, 1, 2, 5, 10, 20)
CI_MEMORY_LIMIT = 1e9  # bytes of per-class block sums above which they are not kept


def resolve_site(encoder: RecurrentEncoder, site: Site | None = None) -> Site:
    """The concrete site analysed: ``site`` (None: ``Site()``, the top layer) on ``encoder``,
    its readout defaulting to the layer's ``memory_readout`` (:data:`DEFAULT_READOUT`)."""
    if site is None:
        site = Site()
    if not isinstance(site, Site):
        raise MemlensError(f"site must be a memlens.Site(layer, readout, units), got {site!r}")
    return site.resolve(encoder, default=DEFAULT_READOUT)


def state_gradients(model: nn.Module, inputs, max_delay: int, *, site: Site | None = None,
                    classes: Sequence | None = None, class_names: Sequence[str] | None = None,
                    method: str = "auto", context: Context | str | int | None = None,
                    direction_weighting: str = "type", options: RunOptions | None = None,
                    engine: EngineSettings | None = None,
                    contrasts: str | Sequence | None = None) -> GradientResult:
    """Exact average state gradients d r_t / d x_{t-tau}, tau = 0..max_delay, of one stream.

    For every target t and delay tau (t - tau >= 0) the Jacobian of the site's values
    G_t(tau) = d r_t / d x_{t-tau} (D x E; x = the input vector: embedding row or frame) is
    averaged per delay and per class of the *source* position t - tau:
    Gbar(tau) = mean_t G_t(tau). Metrics use Gn(tau) = Gbar(tau) D with S = D D^T the input
    covariance (embedding table rows for token models, the stream's vectors otherwise).
    Under ``torchrun`` every rank makes the same call, accumulates one shard of the targets
    and gets the same all-reduced result.

    Parameters
    ----------
    model : torch.nn.Module
        Anything the model protocol accepts (a memlens model, ``memlens.wrap(...)``).
    inputs : sequence or Corpus or Stream or torch.Tensor or numpy.ndarray
        One continuous stream from a zero state: ids, symbols, a Corpus, T x I vectors or a
        :class:`~memlens.models.inputs.Stream`.
    max_delay : int
        K, the largest delay, 0 <= K < T (and inside the windows or segments of ``context``).
    site : Site or None, optional
        :class:`~memlens.protocol.Site` (layer, readout, units); None (default): the top
        layer's memory readout (an LSTM's cell state, as the paper; otherwise its output).
    classes : sequence or None, optional
        One entry per position: None, a class name, or a list of class names (default None).
    class_names : sequence of str or None, optional
        The order of the classes (default None: sorted).
    method : str, optional
        "auto" (default: the layer's declared tangent rule), "hand" or "generic"
        (``torch.func.jvp`` on the layer's step).
    context : Context or str or int or None, optional
        The context regime (:mod:`memlens.runtime.context`): "stream" (default: every pair,
        the state carried), "segment:S" (pairs inside one S-position segment, state carried;
        needs K < S), "sentence" (state restarted at every sentence start) or
        ``"window:N[,stride=M][,targets=last]"`` (independent windows from the initial state).
    direction_weighting : str, optional
        How the class-mean embeddings behind ``result.direction(a, b)`` are averaged: "type"
        (default: each distinct id among the class's positions once, as the original's
        ``--avg_emb``) or "token" (every occurrence).
    options : RunOptions or None, optional
        device, dtype, bootstrap (resamples, default 200; blocks; seed), checkpoint (an
        interrupt or ``stop_after`` saves and raises
        :class:`~memlens.runtime.progress.Interrupted`), progress, distributed.
    engine : EngineSettings or None, optional
        Knobs of the streaming engine: chunk_size, flush_every, target_mask, on_chunk,
        class_ci_delays, warmup (default: max(1000, 4 K)).
    contrasts : str or sequence or None, optional
        Tag contrasts A-B to report: a preset ("ptb", "upos"), pairs ``"A-B,C-D"`` among the
        class names, or a sequence of them (:mod:`memlens.analyses.gradients.contrasts`).

    Returns
    -------
    GradientResult
        Means per delay and class, metrics, intervals; ``to_frame()``: a row per (delay, class).

    Raises
    ------
    MemlensError
        One line naming a bad model, stream, site, delay, class, context or option.
    """
    enc = as_encoder(model)
    opts = as_options(options)
    engine = EngineSettings() if engine is None else engine
    if not isinstance(engine, EngineSettings):
        raise MemlensError(f"engine must be an EngineSettings, got {engine!r}")
    site = resolve_site(enc, site)
    stream = as_stream(enc, inputs, "inputs", classes)
    regime = Context.parse(context)
    check_model_regime(regime, enc)
    rows = layout(regime, len(stream), sentence_starts(enc, stream)
                  if regime.kind == "sentence" else None)
    check_delays(max_delay, None, len(stream))
    segment = check_delays(max_delay, regime.length, len(stream)) \
        if regime.kind == "segment" else None
    _check_context_delays(rows, int(max_delay))
    group = distributed.current() if opts.distributed else None
    _same_length(group, len(stream))
    # an error on one rank must reach the others before they start
    with distributed.agreed(group, "before the state-gradient accumulation"):
        prep = _prepare(enc, stream, site, int(max_delay), class_names, method,
                        (rows, segment), direction_weighting, opts, engine, group)
        contrasts = _contrasts(contrasts, prep.names)  # bad pairs: one line, before it
    with distributed.agreed(group, "during the state-gradient accumulation"):
        sums = accumulate(enc, prep.values, prep.task, prep.memberships,
                          target_mask=prep.mask, checkpoint=prep.checkpoint,
                          progress=prep.progress, on_chunk=engine.on_chunk)
    if group is not None:
        _reduce(group, sums)
        if prep.checkpoint.path is not None and not opts.checkpoint.keep:
            Path(prep.checkpoint.path).unlink(missing_ok=True)
    result = _result(prep, sums, site, stream, direction_weighting, opts, group, contrasts)
    if prep.input_kind == "tokens":  # the vocabulary side of result.read_directions
        result.words = spectrum.word_table(result, enc.vocab, prep.table, stream.values,
                                           prep.positions, prep.memberships)
    return result


def check_delays(max_delay: int, segment: int | None, T: int) -> int | None:
    """Check ``max_delay`` (0 <= K < T) and ``segment`` (None, or an int S > K); return
    ``segment`` as an int (or None)."""
    if not isinstance(max_delay, (int, np.integer)) or isinstance(max_delay, bool):
        raise MemlensError(f"maximum delay must be an integer, got {max_delay!r}")
    if max_delay < 0:
        raise MemlensError(f"maximum delay must be >= 0, got {max_delay}")
    if max_delay >= T:
        raise MemlensError(f"maximum delay {max_delay} is not shorter than the stream "
                           f"({T} positions): no position has a delay of {max_delay}")
    if segment is None:
        return None
    if (not isinstance(segment, (int, np.integer)) or isinstance(segment, bool) or segment < 1
            or segment > MAX_POSITIONS):
        raise MemlensError(f"segment must be a positive integer (at most 2**62), got "
                           f"{segment!r}")
    if max_delay >= segment:
        raise MemlensError(f"maximum delay {max_delay} is not shorter than the segment "
                           f"({segment} positions): no pair inside a segment has a delay "
                           f"of {max_delay}")
    return int(segment)


def _check_context_delays(rows: Layout, max_delay: int) -> None:
    """A regime that cuts the stream (windows, sentences) must leave a pair at delay K."""
    if rows.starts is None or rows.context.kind == "segment":
        return
    longest = int(rows.offsets().max()) if len(rows) else -1
    if longest < max_delay:
        raise MemlensError(f"maximum delay {max_delay} is not shorter than the longest "
                           f"{'window' if rows.context.kind == 'window' else 'sentence'} "
                           f"({longest + 1} positions) of context {rows.context}: no pair "
                           f"has a delay of {max_delay}")


def _same_length(group: distributed.Group | None, T: int) -> None:
    """Inside a process group every rank must see a stream of the same length."""
    if group is None:
        return
    import torch.distributed as dist

    lengths = torch.tensor([T, -T], dtype=torch.int64, device=group.device)
    dist.all_reduce(lengths, op=dist.ReduceOp.MAX)
    if int(lengths[0]) != -int(lengths[1]):
        raise MemlensError(f"the {group.world} processes got streams of different lengths "
                           f"({-int(lengths[1])}..{int(lengths[0])} positions)")


@dataclass
class _Prepared:
    """What :func:`_prepare` works out before the accumulation."""

    task: Task
    table: np.ndarray          # V x E embedding table, or the T x I input vectors
    norm: Normalization
    positions: np.ndarray      # row of ``table`` of each position
    memberships: list[list[int]] | None
    names: list[str]
    mask: torch.Tensor | None
    checkpoint: Checkpointing  # per-rank path inside a process group
    progress: bool
    warmup: int | None
    input_kind: str            # "tokens" or "vectors"
    values: torch.Tensor       # what the engine reads: the stream, or its rows under a regime
    context: str               # the regime's spelling


def _prepare(enc: RecurrentEncoder, stream: Stream, site: Site, max_delay: int,
             class_names: Sequence[str] | None, method: str,
             regime: tuple[Layout, int | None], weighting: str, opts: RunOptions,
             engine: EngineSettings, group: distributed.Group | None) -> _Prepared:
    """Validate the rest, then the normalisation, classes, target mask, interval delays,
    memory check, shard and per-rank checkpoint of the run. ``regime``: the layout of the
    context regime and the segment length of ``segment:S`` (else None)."""
    rows, segment = regime
    if weighting not in metrics.WEIGHTINGS:
        raise MemlensError(f"unknown direction weighting {weighting!r}: choose "
                           f"{' or '.join(metrics.WEIGHTINGS)}")
    if method not in ("auto", "hand", "generic"):
        raise MemlensError(f"unknown tangent method {method!r}: choose auto, hand or generic")
    engine.check()
    dtype = opts.torch_dtype()
    table, norm, positions = _normalization(enc, stream)
    norm.warn(stacklevel=4)  # one TrustWarning line when normalised within the input span
    memberships, names = _memberships(stream, class_names)
    mask = _target_mask(engine.target_mask, len(stream))
    values = stream.values
    starts = None if rows.starts is None else torch.from_numpy(rows.starts)
    if rows.reset:  # windows, sentences: rows of the stream
        index = torch.from_numpy(rows.positions)
        values, positions = stream.values[index], positions[rows.positions]
        memberships = None if memberships is None else [memberships[p] for p in rows.positions]
        mask = None if mask is None else mask[index]
        if rows.targets is not None:
            wanted = torch.from_numpy(rows.targets)
            mask = wanted if mask is None else mask & wanted
    T = len(values)
    H = site.size(enc)
    blocks = opts.bootstrap.blocks
    ci_delays = _ci_delays(engine.class_ci_delays, max_delay, names, H, enc.input_size,
                           min(blocks, T))
    check_memory(H * (max_delay + 1) * enc.input_size * (
        (len(names) + 1) * (dtype.itemsize + 8) * 2 + min(blocks, T) * 8
        + (site.layer + 1) * 2 * dtype.itemsize), "the state-gradient accumulators")
    resamples, nb = opts.bootstrap.count(DEFAULT_RESAMPLES), min(blocks, T)
    check_memory(8.0 * resamples * (2 * nb + (max_delay + 1) * (len(names) + 1) * 4),
                 f"the bootstrap ({resamples} resamples x {nb} blocks x {max_delay + 1} delays)")
    shard, warmup, checkpoint, progress = None, None, opts.checkpoint, opts.progress
    if group is not None:
        shard = group.shard(T)
        warmup = distributed.default_warmup(max_delay) if engine.warmup is None \
            else int(engine.warmup)
        if checkpoint.path is not None:
            checkpoint = replace(checkpoint, path=distributed.rank_path(checkpoint.path,
                                                                        group.rank))
        checkpoint = replace(checkpoint, keep=True)  # deleted after the all-reduce
        progress = progress and group.rank == 0
    columns = _column_width(enc, site.layer, max_delay, dtype, engine.columns)
    task = Task(max_delay=max_delay, layer=site.layer, readout=site.readout, units=site.units,
                n_classes=len(names), method=method, dtype=dtype, device=opts.device_for(enc),
                blocks=blocks, flush_every=int(engine.flush_every),
                chunk_size=int(engine.chunk_size), ci_delays=tuple(ci_delays),
                segment=segment, shard=shard, warmup=warmup or 0, starts=starts,
                reset=rows.reset, columns=columns)
    return _Prepared(task, table, norm, positions, memberships, names, mask, checkpoint,
                     progress, warmup, enc.input_kind, values, str(rows.context))


def _normalization(enc: RecurrentEncoder, stream: Stream
                   ) -> tuple[np.ndarray, Normalization, np.ndarray]:
    """(table, normalisation, row of each position): the embedding table for token streams,
    the stream's own vectors for continuous inputs."""
    if stream.is_tokens:
        table = enc.input_table().detach().cpu().double().numpy()
        return table, embedding_normalization(table), stream.values.numpy()
    table = stream.values.double().numpy()
    return (table, embedding_normalization(table, source="input vectors of the stream"),
            np.arange(len(stream)))


def _memberships(stream: Stream, class_names: Sequence[str] | None
                 ) -> tuple[list[list[int]] | None, list[str]]:
    """Class indices per position and the class names (``class_names``, or every class that
    occurs, sorted); (None, []) without classes."""
    if stream.labels is None:
        return None, []
    if class_names is None:
        found: set[str] = set()
        for lab in stream.labels:
            if lab is not None:
                found.update([lab] if isinstance(lab, str) else lab)
        names = sorted(found)
    else:
        names = list(class_names)
    return encode_memberships(names, stream.labels), names


def _target_mask(target_mask, T: int) -> torch.Tensor | None:
    if target_mask is None:
        return None
    mask = torch.as_tensor(np.asarray(target_mask), dtype=torch.bool)
    if mask.numel() != T:
        raise MemlensError(f"target_mask has {mask.numel()} entries for {T} tokens")
    return mask


def _ci_delays(wanted: Sequence[int] | None, max_delay: int, names: list[str], H: int, E: int,
               blocks: int) -> list[int]:
    """The delays with per-class block sums: ``wanted`` (default :data:`DEFAULT_CI_DELAYS`
    and K) within 0..K; none without classes.

    The sums take ``blocks * H * (C + 1) * E * 8`` bytes per delay. Delays asked for by name
    that do not fit in :data:`CI_MEMORY_LIMIT` are refused (one-line MemlensError); of the
    default delays, the smallest that fit are kept and one :class:`TrustWarning` names the
    delays left without per-class intervals."""
    if not names:
        return []
    default = wanted is None
    wanted = (*DEFAULT_CI_DELAYS, max_delay) if default else wanted
    delays = sorted({int(d) for d in wanted if 0 <= d <= max_delay})
    per_delay = blocks * H * (len(names) + 1) * E * 8
    fit = int(CI_MEMORY_LIMIT // per_delay) if per_delay else len(delays)
    if fit >= len(delays):
        return delays
    need = f"{per_delay * len(delays) / 2**30:.1f} GiB"
    hint = ("fewer classes, a smaller state (--units) or fewer bootstrap blocks keep more; "
            f"limit {CI_MEMORY_LIMIT / 1e9:g} GB")
    if not default:
        raise MemlensError(f"per-class intervals at delays {delays} would need {need} of block "
                           f"sums: {hint}")
    kept, left = delays[:fit], delays[fit:]
    warnings.warn(f"per-class intervals only at delays {kept or 'none'}, not at {left}: all "
                  f"{len(delays)} would need {need} of block sums ({hint})", TrustWarning,
                  stacklevel=3)
    return kept


def _column_width(enc: RecurrentEncoder, layer: int, max_delay: int, dtype: torch.dtype,
                  wanted: int | None) -> int | None:
    """Input columns per pass over the stream (None: all E in one pass).

    The tangents of one input column take about (K + 1) x (state values of layers 0..layer)
    x 4 x itemsize bytes (the tangents, the step's product buffer and the jvp's batched
    copies). ``wanted`` None: all E columns when they fit in a quarter of
    :func:`~memlens.core.limits.memory_budget`, else the most that fit (at least 1)."""
    E = enc.input_size
    values = sum(_state_values(enc.layers[k]) for k in range(layer + 1))
    per_column = (max_delay + 1) * values * 4 * dtype.itemsize
    if wanted is None:
        budget = memory_budget() / 4
        width = E if per_column * E <= budget else max(1, int(budget // per_column))
    else:
        width = min(int(wanted), E)
    check_memory(per_column * width, f"the tangents of {width} input column(s) per pass "
                 "(fewer with columns= / --columns)")
    return None if width >= E else width


def _state_values(layer) -> int:
    """Values of one layer's state (batch 1): the leaves of ``init_state(1)``."""
    from torch.utils import _pytree as pytree

    with torch.no_grad():
        leaves = pytree.tree_flatten(layer.init_state(1))[0]
    return sum(int(leaf[0].numel()) for leaf in leaves if isinstance(leaf, torch.Tensor))


def _contrasts(contrasts, names: list[str]):
    """``contrasts`` (None: none) as recorded in ``settings["contrasts"]``, once checked
    against the class names (:func:`~memlens.analyses.gradients.contrasts.parse_contrasts`)."""
    if contrasts is None:
        return None
    parse_contrasts(contrasts, names)
    return spec_text(contrasts)


def _result(prep: _Prepared, sums: Sums, site: Site, stream: Stream, weighting: str,
            opts: RunOptions, group: distributed.Group | None, contrasts=None
            ) -> GradientResult:
    """The :class:`GradientResult`: sums, normalisation, class embeddings, probe, settings."""
    class_emb = probe = None
    names, task = prep.names, prep.task
    if names:
        class_emb = metrics.class_mean_embeddings(prep.table, prep.positions, prep.memberships,
                                                  len(names), weighting)
        probe = metrics.probe_accuracy(prep.table, prep.positions, prep.memberships)
    T = len(prep.values)
    boot = opts.bootstrap
    settings = {"max_delay": task.max_delay, "layer": site.layer, "readout": site.readout,
                "units": site.units, "tokens": T, "input": prep.input_kind,
                "dtype": str(task.dtype).replace("torch.", ""),
                "method": sums.stats["method"], "blocks": int(min(boot.blocks, T)),
                "bootstrap": int(boot.count(DEFAULT_RESAMPLES)), "seed": int(boot.seed),
                "classes": len(names), "segment": task.segment, "context": prep.context,
                "direction_weighting": weighting,
                "world_size": 1 if group is None else group.world, "warmup": prep.warmup,
                **prep.norm.settings()}  # input_rank, constant_inputs, ...
    if contrasts is not None:  # the tag contrasts saved with the result
        settings["contrasts"] = contrasts
    return stability.attach(GradientResult(  # the stability diagnostic; warns when flagged
        max_delay=task.max_delay, layer=site.layer, readout=site.readout, class_names=names,
        raw=sums, normalization=prep.norm, settings=settings, class_embeddings=class_emb,
        probe=probe))


def _reduce(group: distributed.Group, sums: Sums) -> None:
    """Replace the rank-local sums, counts and block sums by their sums over the ranks."""
    names = ("sums", "counts", "class_sums", "class_counts", "block_sums", "block_counts",
             "class_block_sums", "class_block_counts", "norms")
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
