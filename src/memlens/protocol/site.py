"""Sites: which numbers of a model's state an analysis reads, (layer, readout, units).

``Site(layer=-1, readout=None, units="all")`` names a layer (an index, negative from the top),
one of its readouts (None: the analysis' default) and a unit spec of that readout (see
:mod:`memlens.protocol.units`). :meth:`Site.resolve` checks it against an encoder (anything
with ``layers`` and ``resolve_layer(i) -> 0..L-1``, i.e. a
:class:`~memlens.models.encoder.RecurrentEncoder`) and returns the concrete site: layer
0..L-1, a readout name, a valid unit spec.

The default readout is the analysis' choice, given as a *role* the layer declares:
``"output"`` (``layer.output_readout``: signatures) or ``"memory"`` (``layer.memory_readout``,
an LSTM's cell state: state gradients), or a function layer -> readout name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memlens.core.errors import MemlensError
from memlens.protocol.units import UnitSet

ROLES = {"output": lambda layer: layer.output_readout,
         "memory": lambda layer: layer.memory_readout}


def role_readout(layer: Any, default: str | Callable[[Any], str]) -> str:
    """The readout a layer declares for ``default``: a role ("output", "memory") or a
    function layer -> readout name."""
    if callable(default):
        return default(layer)
    if default not in ROLES:
        raise MemlensError(f"unknown readout role {default!r}: choose from {', '.join(ROLES)}")
    return ROLES[default](layer)


@dataclass(frozen=True)
class Site:
    """(layer, readout, units) of a model's state (see module docstring)."""

    layer: int = -1
    readout: str | None = None
    units: str = "all"

    @property
    def label(self) -> str:
        """``"layer{L}/{readout}/{units}"``."""
        return f"layer{self.layer}/{self.readout}/{self.units}"

    def resolve(self, encoder: Any, default: str | Callable[[Any], str] = "output") -> Site:
        """The concrete site on ``encoder``: layer in 0..L-1, readout (None: the layer's
        ``default`` role, see module docstring) checked against the layer's declared
        readouts, unit spec checked against the readout. Raises a one-line MemlensError."""
        layer = encoder.resolve_layer(self.layer)
        lay = encoder.layers[layer]
        readout = role_readout(lay, default) if self.readout is None else self.readout
        names = lay.readout_specs()
        if readout not in names:
            raise MemlensError(f"unknown readout {readout!r} for layer {layer} "
                               f"({lay.kind}): choose from {', '.join(names)}")
        site = Site(layer, readout, self.units)
        site.unit_set(encoder)
        return site

    def unit_set(self, encoder: Any) -> UnitSet:
        """The :class:`UnitSet` of a resolved site (size D, the map readout -> units)."""
        lay = encoder.layers[self.layer]
        try:
            return lay.units(self.units, self.readout)
        except MemlensError as exc:
            raise MemlensError(f"layer {self.layer}: {exc}") from None

    def size(self, encoder: Any) -> int:
        """D: the number of values of a resolved site."""
        return self.unit_set(encoder).size
