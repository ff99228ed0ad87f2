"""Signatures under a context regime (:mod:`memlens.runtime.context`).

Under ``stream`` the states are those of one continuous pass and the label of lag k at
position t is the symbol at t - k (:func:`~memlens.analyses.signatures.signature.lag_targets`).
Under the other regimes the rows of the :class:`~memlens.runtime.context.Layout` are read:

* ``segment:S``: the states of the continuous pass (the state is carried), but a lag k at row
  r counts only when r - k lies in r's segment;
* ``sentence`` and ``window:N``: every segment (sentence, window) runs by itself from the
  model's initial state (:func:`~memlens.models.states.extract_segment_states`), so the state
  at row r has seen only its segment, and lags stay inside it; ``targets=last`` keeps only
  the last row of each window.

Rows without any target are dropped before the decoders see them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from memlens.models.encoder import RecurrentEncoder
from memlens.models.inputs import Stream, sentence_starts
from memlens.models.states import extract_segment_states, extract_states
from memlens.protocol import Site
from memlens.runtime.context import Context, Layout, layout


def stream_layout(encoder: RecurrentEncoder, stream: Stream, context: Context,
                  what: str) -> Layout:
    """The layout of ``context`` over ``stream`` (sentence starts from the stream)."""
    starts = sentence_starts(encoder, stream) if context.kind == "sentence" else None
    return layout(context, len(stream), starts, what)


def regime_states(encoder: RecurrentEncoder, values: torch.Tensor, rows: Layout,
                  sites: Sequence[Site]) -> dict[Site, np.ndarray]:
    """{site: T' x D} states at the rows of ``rows``: segments from the initial state when the
    regime resets, else the states of the continuous pass (one per stream position)."""
    if rows.reset:
        return extract_segment_states(encoder, values[torch.from_numpy(rows.positions)],
                                      rows.starts, sites)
    return extract_states(encoder, values, sites)


def regime_targets(rows: Layout, classes: np.ndarray, max_delay: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(T'' x (K+1) lag targets, the T' bool mask of the rows kept): the rows' lag targets
    inside their segments (-1: none), rows with no target dropped."""
    y = rows.lag_targets(classes, max_delay)
    keep = (y >= 0).any(1)
    return y[keep], keep


def kept(states, keep: np.ndarray) -> np.ndarray:
    """The kept rows of a T' x D state array (all of them without a copy when all kept)."""
    return states if keep.all() else np.asarray(states)[keep]


__all__ = ["kept", "regime_states", "regime_targets", "stream_layout"]
