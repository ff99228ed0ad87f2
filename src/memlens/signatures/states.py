"""State extraction: stream a token sequence through a recurrent encoder, keep chosen states.

A *view* names which numbers of the state are analysed: (layer, readout, units). ``units`` is

* ``"all"``          every unit of the readout (H values),
* ``"0,5,10-19"``    explicit unit indices (ranges inclusive),
* ``"group:G"``      the units of group G of a grouped LSTM layer (H/G values),
* ``"factor"``       the rank-r factor space A h of a factorised LSTM layer (r values; hidden only).

The corpus is streamed in chunks of ``chunk`` steps; the final state of a chunk is the initial
state of the next, so s_t depends on the prefix before t. Long corpora are cut into B parallel
contiguous segments (one batch column each, B = ``streams``, so recurrent steps cost N/B
sequential steps instead of N); segment b > 0 starts reading ``warmup`` tokens before its
first position and those warm-up states are discarded, so every kept state has seen at least
``warmup`` tokens of true history (or the whole prefix). With streams=1 the result is the
exact single-stream state sequence. Only the readouts asked for are computed (the LSTM cell
sequence needs an extra scan).
Collected states (N x D float32 per view) live in RAM, or in a memory-mapped temporary file
when N * D * 4 bytes exceed ``memmap_bytes`` (the file is deleted when the array is freed).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from memlens.errors import MemlensError
from memlens.models.encoder import RecurrentEncoder
from memlens.models.layers import FactorizedLSTMLayer, GroupedLSTMLayer

MEMMAP_BYTES = 256 * 2**20


@dataclass(frozen=True)
class View:
    """Which state numbers to analyse: a layer (resolved, 0-based), a readout and a unit spec."""

    layer: int
    readout: str = "hidden"
    units: str = "all"

    @property
    def label(self) -> str:
        return f"layer{self.layer}/{self.readout}/{self.units}"


def parse_unit_indices(spec: str, size: int) -> list[int]:
    """Parse ``"0,5,10-19"`` into sorted unique unit indices, each in 0..size-1."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise MemlensError(f"bad unit spec {spec!r}: empty item")
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if hi < lo:
                    raise ValueError
                items = range(lo, hi + 1)
            else:
                items = [int(part)]
        except ValueError:
            raise MemlensError(f"bad unit spec {spec!r}: use all, indices like 0,5,10-19, "
                               f"group:G or factor") from None
        for i in items:
            if not 0 <= i < size:
                raise MemlensError(f"unit {i} out of range: the layer has {size} units "
                                   f"(valid 0..{size - 1})")
            out.add(i)
    return sorted(out)


def check_view(encoder: RecurrentEncoder, layer: int, readout: str | None, units: str) -> View:
    """Validate (layer, readout, units) against the encoder; return a resolved :class:`View`
    (readout None: the protocol's default for signatures)."""
    layer, readout = encoder.check_readout(layer, readout, "signatures")
    unit_dim(encoder, View(layer, readout, units))
    return View(layer, readout, units)


def unit_dim(encoder: RecurrentEncoder, view: View) -> int:
    """Number of state values D of a view (raises MemlensError for an invalid unit spec)."""
    lay = encoder.layers[view.layer]
    spec = view.units
    if spec == "all":
        return lay.readout_size(view.readout)
    if spec.startswith("group:"):
        if not isinstance(lay, GroupedLSTMLayer):
            raise MemlensError(f"units {spec!r}: layer {view.layer} is not a grouped LSTM "
                               f"({type(lay).__name__})")
        try:
            g = int(spec.split(":", 1)[1])
        except ValueError:
            raise MemlensError(f"bad unit spec {spec!r}: expected group:G with an integer G"
                               ) from None
        return len(lay.group_units(g))
    if spec == "factor":
        if not isinstance(lay, FactorizedLSTMLayer):
            raise MemlensError(f"units 'factor': layer {view.layer} is not a factorised LSTM "
                               f"({type(lay).__name__})")
        if view.readout != "hidden":
            raise MemlensError("units 'factor': the factor space is defined for the hidden "
                               "readout only")
        return lay.rank
    return len(parse_unit_indices(spec, lay.readout_size(view.readout)))


def _selector(encoder: RecurrentEncoder, view: View):
    """A function mapping a readout tensor (... x H) to the view's values (... x D)."""
    lay = encoder.layers[view.layer]
    spec = view.units
    if spec == "all":
        return lambda s: s
    if spec == "factor":
        return lay.factor_space
    if spec.startswith("group:"):
        idx = torch.tensor(lay.group_units(int(spec.split(":", 1)[1])))
    else:
        idx = torch.tensor(parse_unit_indices(spec, lay.readout_size(view.readout)))
    return lambda s: s.index_select(-1, idx.to(s.device))


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
                   views: Sequence[View], chunk: int = 2048, streams: int = 32,
                   warmup: int = 256, memmap_bytes: int = MEMMAP_BYTES
                   ) -> dict[View, np.ndarray]:
    """States of every view at every position of the input stream ``ids`` (length N: token
    ids, or N x I input vectors for continuous-input models).

    Returns {view: N x D float32 array}; row t is the state after reading input t. The
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
    selectors = {v: _selector(encoder, v) for v in views}
    out = {v: allocate(n, unit_dim(encoder, v), memmap_bytes) for v in views}
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
