"""What a recurrent layer declares about its readouts and its tangents.

A *readout* is a named function of a layer's state, r = f(s), with D values per batch row
(B x D). The analyses read states only through readouts: state gradients d r_t / d x_{t-tau}
(D x I per delay), memory signatures decode x_{t-k} from r_t, ablation feeds the output
readout to the next layer.

A *tangent rule* says how the analyses push forward-mode tangents ds / dx through one step
s' = step(x, s) of the layer:

* ``GATES``: hand-derived from ``dense_weights()`` (W_ih, W_hh, b_ih, b_hh) for the gate
  equations of the kinds "lstm", "gru", "rnn_tanh", "rnn_relu" (memlens.gradients.tangents).
* ``WRITTEN``: the layer's own ``jvp_step(x, state, dx, dstate) -> (state', dstate')``.
* ``GENERIC``: ``torch.func.jvp`` on ``layer.step`` (any differentiable step).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Readout:
    """One declared readout of a layer: ``name``, ``size`` D (values per batch row) and
    ``linear``: True when r = f(s) is linear in the state s, so that the tangent of the
    readout is the readout of the tangent, dr = f(ds) (the generic tangent path then skips a
    jvp through f)."""

    name: str
    size: int
    linear: bool = False


class TangentRule(str, Enum):
    """How the analyses differentiate one step of a layer (see module docstring)."""

    GATES = "gates"
    WRITTEN = "written"
    GENERIC = "generic"
