"""The declared layer protocol: what a recurrent layer tells the analyses about itself.

* :class:`Readout` (name, size, linear): a named function of the state.
* :class:`TangentRule` ("gates" | "written" | "generic"): how tangents cross one step.
* :class:`UnitSet`: a unit spec of one readout resolved to a size and a map.
* :class:`Site` (layer, readout, units): which numbers of a model's state are analysed.
* :class:`RecurrentLayer`: the abstract layer contract (:mod:`memlens.protocol.layer`).
"""

from memlens.protocol.gates import GATE_KINDS, State, lstm_cell, lstm_cell_sequence
from memlens.protocol.layer import RecurrentLayer
from memlens.protocol.readout import Readout, TangentRule
from memlens.protocol.site import ROLES, Site, role_readout
from memlens.protocol.units import COMMON_UNIT_SETS, UnitSet, parse_unit_indices

__all__ = ["COMMON_UNIT_SETS", "GATE_KINDS", "ROLES", "Readout", "RecurrentLayer", "Site",
           "State", "TangentRule", "UnitSet", "lstm_cell", "lstm_cell_sequence",
           "parse_unit_indices", "role_readout"]
