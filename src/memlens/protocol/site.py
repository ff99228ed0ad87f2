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
    """Which numbers of a model's state an analysis reads: (layer, readout, units).

    Parameters
    ----------
    layer : int, optional
        The layer, an index, negative from the top (default -1: the top layer).
    readout : str or None, optional
        One of the layer's readouts ("hidden", "cell", a custom layer's names); None
        (default): the analysis' default role (the output readout for signatures, the memory
        readout, an LSTM's cell state, for state gradients).
    units : str, optional
        A unit spec of that readout: "all" (default), indices ``"0,5,10-19"`` (ranges
        inclusive), or a family of the layer type (``"group:G"``, ``"factor"``,
        ``"basis:J"``).
    """

    layer: int = -1
    readout: str | None = None
    units: str = "all"

    @property
    def label(self) -> str:
        """``"layer{L}/{readout}/{units}"``."""
        return f"layer{self.layer}/{self.readout}/{self.units}"

    def resolve(self, encoder: Any, default: str | Callable[[Any], str] = "output") -> Site:
        """The concrete site on an encoder.

        Parameters
        ----------
        encoder : RecurrentEncoder
            The model (anything with ``layers`` and ``resolve_layer``).
        default : str or callable, optional
            The readout used when ``readout`` is None: a role the layer declares, "output"
            (default, ``layer.output_readout``) or "memory" (``layer.memory_readout``), or a
            function layer -> readout name.

        Returns
        -------
        Site
            The site with the layer in 0..L-1, a readout name the layer declares and a unit
            spec valid for it.

        Raises
        ------
        MemlensError
            When the layer does not exist, the readout is not declared, the role is unknown,
            or the unit spec does not resolve.
        """
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
        """The unit set of a resolved site.

        Parameters
        ----------
        encoder : RecurrentEncoder
            The model the site was resolved on (:meth:`resolve`).

        Returns
        -------
        UnitSet
            Its size D and the map of readout values ... x R to unit values ... x D.

        Raises
        ------
        MemlensError
            When the unit spec does not resolve on that layer.
        """
        lay = encoder.layers[self.layer]
        try:
            return lay.units(self.units, self.readout)
        except MemlensError as exc:
            raise MemlensError(f"layer {self.layer}: {exc}") from None

    def size(self, encoder: Any) -> int:
        """The number of values D of a resolved site.

        Parameters
        ----------
        encoder : RecurrentEncoder
            The model the site was resolved on (:meth:`resolve`).

        Returns
        -------
        int
            D, the size of its unit set.
        """
        return self.unit_set(encoder).size
