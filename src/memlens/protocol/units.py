"""Unit sets: which values of a readout an analysis keeps.

A unit spec names a linear map from the values of one readout (... x R) to the D values
analysed (... x D). Every layer offers

* ``"all"``          every value of the readout (D = R),
* ``"0,5,10-19"``    explicit indices (ranges inclusive; D = their number),

and a layer type may add its own families (``"group:G"`` of a grouped LSTM, ``"factor"`` and
``"basis:J"`` of a factorised LSTM; see :meth:`RecurrentLayer.units`). A :class:`UnitSet` is a
spec resolved against one layer and readout: its size D and the map itself, an index selection
r[..., index] or a projection P(r) (e.g. the factor space A h).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from memlens.core.errors import MemlensError

#: the unit specs every layer offers: spec form -> description
COMMON_UNIT_SETS = {"all": "every value of the readout",
                    "I,J-K": "explicit unit indices (ranges inclusive), e.g. 0,5,10-19"}


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
                               f"group:G, factor or basis:J") from None
        for i in items:
            if not 0 <= i < size:
                raise MemlensError(f"unit {i} out of range: the layer has {size} units "
                                   f"(valid 0..{size - 1})")
            out.add(i)
    return sorted(out)


@dataclass(frozen=True, eq=False)
class UnitSet:
    """A unit spec resolved for one readout of one layer.

    ``size`` D: the values kept per position. Calling it maps readout values (... x R) to
    unit values (... x D): ``project(r)`` if given (a linear map, e.g. r -> A r), else
    ``r[..., index]`` if ``index`` is given, else r itself (``"all"``).
    """

    spec: str
    readout: str
    size: int
    index: tuple[int, ...] | None = None
    project: Callable[[Tensor], Tensor] | None = None
    _index: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.index is not None:
            object.__setattr__(self, "_index", torch.tensor(list(self.index)))

    def __call__(self, values: Tensor) -> Tensor:
        """Readout values ... x R -> the unit values ... x D."""
        if self.project is not None:
            return self.project(values)
        if self._index is None:
            return values
        return values.index_select(-1, self._index.to(values.device))
