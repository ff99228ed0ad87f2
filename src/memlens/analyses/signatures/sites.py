"""Which states a signature decodes from: sites (layer, readout, units) resolved for
signatures.

The default readout of a memory signature is the layer's **output** (``layer.output_readout``:
what the next layer reads, "hidden" for LSTM / GRU / RNN layers): a signature asks what the
rest of the network can still read of the input, so :func:`resolve_site` resolves a site with
readout None to the output role (:meth:`memlens.protocol.Site.resolve`).

A study may name several layers (:func:`parse_layers`: ``"all"``, an index or a comma list)
and a *split* of a layer's units (:data:`SPLITS`: ``"groups"`` of a grouped LSTM, ``"bases"``
of a factorised one), which the layer itself declares (``layer.split_units``) and
:func:`study_sites` expands into one site per part.
"""

from __future__ import annotations

from typing import Any

from memlens.core.errors import MemlensError
from memlens.protocol import Site

#: the readout role of a signature's default readout (see module docstring)
DEFAULT_READOUT = "output"

# unit modes that split a layer into parts compared by a pairwise divergence:
# mode -> (unit spec prefix of one part, name of the part)
SPLITS = {"groups": ("group:", "group"), "bases": ("basis:", "basis")}


def resolve_site(encoder: Any, site: Site | None = None) -> Site:
    """The concrete site on ``encoder`` (layer 0..L-1, a declared readout, a valid unit
    spec); readout None is the layer's output (:data:`DEFAULT_READOUT`). One-line
    MemlensError for a layer, readout or unit spec the model does not have."""
    site = Site() if site is None else site
    if not isinstance(site, Site):
        raise MemlensError(f"site must be a memlens Site(layer, readout, units), got {site!r}")
    return site.resolve(encoder, DEFAULT_READOUT)


def parse_layers(spec: str | int, encoder: Any) -> list[int]:
    """``"all"`` -> every layer 0..L-1; an index or ``"0,2"`` -> those layers (negative from
    the top), sorted and unique."""
    if spec == "all":
        return list(range(encoder.num_layers))
    if isinstance(spec, int) and not isinstance(spec, bool):
        wanted = [spec]
    else:
        try:
            wanted = [int(s) for s in str(spec).split(",")]
        except ValueError:
            raise MemlensError(f"bad --layer {spec!r}: use all, a layer index or "
                               "comma-separated layer indices") from None
    return sorted({encoder.resolve_layer(i) for i in wanted})


def split_units(encoder: Any, layer: int, units: str) -> list[str]:
    """The unit specs of a split the layer declares (``"groups"``: one ``group:g`` per group;
    ``"bases"``: the factor space, then one ``basis:j`` per basis), or [units] for a plain
    unit spec (:meth:`memlens.protocol.RecurrentLayer.split_units`)."""
    try:
        return list(encoder.layers[layer].split_units(units))
    except MemlensError as exc:
        raise MemlensError(f"--units {units}: layer {layer}: {exc}") from None


def study_sites(encoder: Any, layers: list[int], readout: str | None, units: str
                ) -> list[Site]:
    """The resolved sites of a study: for each layer, one site per part of ``units`` (a split
    expands into its parts, :func:`split_units`), readout None = the layer's output."""
    return [resolve_site(encoder, Site(layer, readout, u))
            for layer in layers for u in split_units(encoder, layer, units)]


__all__ = ["DEFAULT_READOUT", "SPLITS", "parse_layers", "resolve_site", "split_units",
           "study_sites"]
