"""State extraction: stream an input sequence through a recurrent encoder, keep chosen states.

A :class:`~memlens.protocol.Site` (layer, readout, units) names which numbers of the state are
analysed; ``units`` is a unit spec the layer declares (:meth:`RecurrentLayer.units
<memlens.protocol.RecurrentLayer.units>`): every layer offers

* ``"all"``          every unit of the readout (H values),
* ``"0,5,10-19"``    explicit unit indices (ranges inclusive),

a grouped LSTM layer adds ``"group:G"`` (the H/G units of group G) and a factorised one
``"factor"`` (the rank-r factor space A h; hidden only) and ``"basis:J"`` (the coefficient
(A h)_J = a_J . h; 1 value; hidden only; J in 0..r-1).

Bases of a factorised kernel: with W_hh = B A (A = ``factor_in``, r x H; B = ``factor_out``,
4H x r) the recurrent input to the gates is W_hh h = sum_j (A h)_j b_j, b_j the j-th column of
B. Basis j reaches the next step only through the scalar (A h)_j (the projection of h on the
j-th row a_j of A), so that coefficient is the part of the state that basis j carries, and the
signature of basis j decodes x[t-k] from (A h_t)_j alone. The bases are those of the trained
parameterisation (B A = (B M^-1)(M A) for any invertible M gives other bases of the same
kernel; the whole factor space does not depend on M).

The corpus is streamed in chunks of ``chunk`` steps; the final state of a chunk is the initial
state of the next, so s_t depends on the prefix before t. Long corpora are cut into B parallel
contiguous segments (one batch column each, B = ``streams``, so recurrent steps cost N/B
sequential steps instead of N); segment b > 0 starts reading ``warmup`` tokens before its
first position and those warm-up states are discarded, so every kept state has seen at least
``warmup`` tokens of true history (or the whole prefix). With streams=1 the result is the
exact single-stream state sequence. Only the readouts asked for are computed (the LSTM cell
sequence needs an extra scan).
Collected states (N x D float32 per site) live in RAM, or in a memory-mapped temporary file
when N * D * 4 bytes exceed ``memmap_bytes`` (the file is deleted when the array is freed).

States that are not vectors of a recurrent layer, the context window of an n-gram model, are
:class:`IndexStates`: N x m indices into a D-dimensional one-hot space.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from memlens.core.errors import MemlensError
from memlens.models.encoder import RecurrentEncoder
from memlens.protocol import Site, UnitSet, parse_unit_indices

MEMMAP_BYTES = 256 * 2**20
OWN_FORWARD_TOKENS = 4096  # tokens per call of a model's own forward (extract_segment_states)

__all__ = ["MEMMAP_BYTES", "IndexStates", "Site", "View", "allocate", "check_view",
           "expand_units", "extract_segment_states", "extract_states", "parse_unit_indices",
           "unit_dim", "unit_set"]


def View(layer: int, readout: str = "hidden", units: str = "all") -> Site:
    """A :class:`~memlens.protocol.Site` with memlens 0.x's defaults (readout "hidden").

    Transitional name: ``View(0) == Site(0, "hidden", "all")``."""
    return Site(layer, readout, units)


@dataclass
class IndexStates:
    """One-hot states stored as indices: ``idx`` (N x m int64) into ``dim`` features."""

    idx: np.ndarray
    dim: int

    def __len__(self) -> int:
        return self.idx.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.idx.shape[0], self.dim)


def check_view(encoder: RecurrentEncoder, layer: int, readout: str | None, units: str) -> Site:
    """Validate (layer, readout, units) against the encoder; return the resolved
    :class:`~memlens.protocol.Site` (readout None: the layer's output readout, the default
    of signatures)."""
    return Site(layer, readout, units).resolve(encoder, "output")


def unit_set(encoder: RecurrentEncoder, site: Site) -> UnitSet:
    """The :class:`~memlens.protocol.UnitSet` of a resolved site (raises MemlensError for an
    invalid unit spec)."""
    return site.unit_set(encoder)


def unit_dim(encoder: RecurrentEncoder, site: Site) -> int:
    """Number of state values D of a site (raises MemlensError for an invalid unit spec)."""
    return unit_set(encoder, site).size


def expand_units(encoder: RecurrentEncoder, layer: int, units: str) -> list[str]:
    """A partition the layer declares (``"groups"``: one ``group:g`` per group of a grouped
    layer; ``"bases"``: the factor space, then one ``basis:j`` per basis of a factorised
    layer), or [units] for a plain unit spec."""
    try:
        return encoder.layers[layer].split_units(units)
    except MemlensError as exc:
        raise MemlensError(f"layer {layer}: {exc}") from None


def allocate(n: int, d: int, memmap_bytes: int = MEMMAP_BYTES) -> np.ndarray:
    """An N x D float32 array in RAM, or memory-mapped to an anonymous temp file if large."""
    if n * d * 4 <= memmap_bytes:
        return np.empty((n, d), dtype=np.float32)
    fh = tempfile.TemporaryFile(prefix="memlens-states-")
    fh.truncate(n * d * 4)
    arr = np.memmap(fh, dtype=np.float32, mode="w+", shape=(n, d))
    arr._memlens_file = fh  # keep the file open as long as the array lives
    return arr


@torch.no_grad()
def extract_states(encoder: RecurrentEncoder, ids: torch.Tensor | np.ndarray,
                   views: Sequence[Site], chunk: int = 2048, streams: int = 32,
                   warmup: int = 256, memmap_bytes: int = MEMMAP_BYTES
                   ) -> dict[Site, np.ndarray]:
    """States of every view at every position of the input stream ``ids`` (length N: token
    ids, or N x I input vectors for continuous-input models).

    ``views``: resolved :class:`~memlens.protocol.Site` objects (``check_view``). Returns
    {view: N x D float32 array}; row t is the state after reading input t. The
    number of parallel segments is reduced so that each is at least 4 x ``warmup`` long
    (short streams are processed as one exact sequence).
    """
    ref = next(encoder.parameters(), torch.empty(0))
    if encoder.input_kind == "tokens":
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(-1)
    else:
        ids = torch.as_tensor(np.asarray(ids)).to(ref.dtype)
    n = ids.shape[0]
    if n == 0:
        raise MemlensError("cannot extract states from an empty input stream")
    if encoder.input_kind == "tokens" and (int(ids.max()) >= encoder.vocab_size
                                           or int(ids.min()) < 0):
        raise MemlensError(f"token ids must be in 0..{encoder.vocab_size - 1} for this model")
    was_training = encoder.training
    encoder.eval()
    device = ref.device
    needed = {(v.layer, v.readout) for v in views}
    selectors = {v: unit_set(encoder, v) for v in views}
    out = {v: allocate(n, selectors[v].size, memmap_bytes) for v in views}
    b = max(1, min(streams, n // max(1, 4 * warmup)))
    seg = -(-n // b)                                   # ceil(n / b)
    starts = [max(0, j * seg - warmup) for j in range(b)]
    keep_from = [j * seg - starts[j] for j in range(b)]  # offset of the first kept state
    length = seg + (warmup if b > 1 else 0)
    padded = torch.cat([ids, torch.zeros(length + warmup, *ids.shape[1:], dtype=ids.dtype)])
    grid = torch.stack([padded[s:s + length] for s in starts], dim=1)  # length x B (x I)
    state = encoder.init_state(b, device)
    try:
        for lo in range(0, length, chunk):
            x = grid[lo:lo + chunk].to(device)
            seqs, state = encoder.states(x, state, readouts=needed)
            for v in views:
                vals = selectors[v](seqs[(v.layer, v.readout)]).float().cpu().numpy()
                for j in range(b):
                    a = max(lo, keep_from[j])                  # first kept step in this chunk
                    e = min(lo + x.shape[0], keep_from[j] + seg)
                    first = j * seg + (a - keep_from[j])
                    e = min(e, a + (n - first))
                    if e > a:
                        out[v][first:first + e - a] = vals[a - lo:e - lo, j]
    finally:
        encoder.train(was_training)
    return out


def own_forward(encoder: RecurrentEncoder, needed: set[tuple[int, str]]):
    """The encoder's ``own_forward`` (block outputs through the wrapped model's own forward,
    :mod:`memlens.models.hf.own_forward`) when it can give every (layer, readout) of
    ``needed``: token inputs, block outputs only; None otherwise (step by step)."""
    own = getattr(encoder, "own_forward", None)
    if own is None or encoder.input_kind != "tokens":
        return None
    if any(name != encoder.layers[i].output_readout for i, name in needed):
        return None
    return own


@torch.no_grad()
def extract_segment_states(encoder: RecurrentEncoder, values: torch.Tensor | np.ndarray,
                           starts: np.ndarray, views: Sequence[Site], batch: int = 256,
                           memmap_bytes: int = MEMMAP_BYTES) -> dict[Site, np.ndarray]:
    """States of every view at every row of ``values`` (N token ids, or N x I vectors) read as
    independent segments, each from the encoder's initial state: a segment begins at every
    row where ``starts`` (N bool) is True (row 0 always begins one). Row r's state has seen
    exactly the rows of its segment up to r (windows and sentences of a context regime,
    :mod:`memlens.runtime.context`).

    Segments run as the columns of batches of ``batch`` (sorted by length, padded at the end:
    padding comes after every kept step, so it changes no state). Returns {view: N x D
    float32}, rows in the order of ``values``."""
    ref = next(encoder.parameters(), torch.empty(0))
    tokens = encoder.input_kind == "tokens"
    x_all = (torch.as_tensor(np.asarray(values), dtype=torch.long).reshape(-1) if tokens
             else torch.as_tensor(np.asarray(values)).to(ref.dtype))
    n = x_all.shape[0]
    if n == 0:
        raise MemlensError("cannot extract states from an empty input stream")
    first = np.nonzero(np.asarray(starts, dtype=bool).reshape(-1))[0]
    first = np.unique(np.concatenate([[0], first])).astype(np.int64)
    lengths = np.diff(np.concatenate([first, [n]]))
    order = np.argsort(-lengths, kind="stable")
    needed = {(encoder.resolve_layer(v.layer), v.readout) for v in views}
    selectors = {v: unit_set(encoder, v) for v in views}
    out = {v: allocate(n, selectors[v].size, memmap_bytes) for v in views}
    own = own_forward(encoder, needed)
    was_training = encoder.training
    encoder.eval()
    try:
        lo = 0
        while lo < len(order):
            width = int(lengths[order[lo]])
            # the model's own forward holds whole-sequence intermediates (e.g. Mamba's
            # B x T x d_inner x d_state scan inputs): at most OWN_FORWARD_TOKENS per call
            size = batch if own is None else max(1, min(batch, OWN_FORWARD_TOKENS // width))
            group = order[lo:lo + size]
            lo += size
            rows = first[group][None, :] + np.arange(width)[:, None]   # width x B
            valid = np.arange(width)[:, None] < lengths[group][None, :]
            x = x_all[torch.from_numpy(np.where(valid, rows, 0))].to(ref.device)
            if own is not None:
                blocks = own(x, [layer for layer, _ in needed])
                seqs = {(layer, name): blocks[layer] for layer, name in needed}
            else:
                seqs, _ = encoder.states(x, encoder.init_state(len(group), ref.device),
                                         readouts=needed)
            for v in views:
                key = (encoder.resolve_layer(v.layer), v.readout)
                vals = selectors[v](seqs[key]).float().cpu().numpy()
                out[v][rows[valid]] = vals[valid]
    finally:
        encoder.train(was_training)
    return out
