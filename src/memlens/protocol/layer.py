"""The recurrent layer contract: what every analysis may ask of a layer, and nothing more.

A layer maps an input sequence x (T x B x I) to states s_t = step(x_t, s_{t-1}). State may be
any nested structure (tuple, list, dict) of tensors with the batch first; the gate layers use
a tuple of B x H tensors: ``(h, c)`` for LSTM-type layers, ``(h,)`` for GRU and Elman RNN.

Computation (unchanged from memlens 0.x):

* ``init_state(batch, device, dtype)``: s_0.
* ``step(x_t, state)``: one time step (B x I, state) -> state, written out so that analyses
  can differentiate or linearise it.
* ``forward(x, state)``: the fast path, (T x B x I) -> (output sequence T x B x H, final state).
* ``sequence_states(x, state, names)``: the named readouts at every step, {name: T x B x D}.
* ``dense_weights()``: (W_ih, W_hh, b_ih, b_hh) of the gate kinds (see :mod:`.gates`).

Declarations (what the analyses ask instead of inspecting classes):

* ``readout_specs()``: {name: :class:`~memlens.protocol.readout.Readout`} (name, size D,
  linear); ``readout(state, name)`` evaluates one (B x D). ``output_readout`` names the one fed
  to the next layer (its size is ``hidden_size``); ``memory_readout`` the one that carries the
  layer's memory (an LSTM's cell c_t; else the output).
* ``tangent_rule``: a :class:`~memlens.protocol.readout.TangentRule`.
* ``unit_sets(readout)``: {spec form: description} of the unit sets offered, and
  ``units(spec, readout)``: the :class:`~memlens.protocol.units.UnitSet` (size D and the map
  readout values -> unit values); ``unit_splits()``: named partitions of the units into sets
  compared with each other ({"groups": ["group:0", "group:1", ...]}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from memlens.core.errors import MemlensError
from memlens.protocol.gates import GATE_KINDS, State, gate_step, lstm_cell_sequence
from memlens.protocol.readout import Readout, TangentRule
from memlens.protocol.units import COMMON_UNIT_SETS, UnitSet, parse_unit_indices


class RecurrentLayer(nn.Module):
    """Base class and contract of one recurrent layer (see module docstring).

    ``kind`` is "lstm", "gru", "rnn_tanh" or "rnn_relu" for layers defined by gate equations
    over ``dense_weights()`` (the base class implements ``step``, ``init_state``,
    ``readout_specs`` and ``sequence_states`` for them); any other string otherwise
    ("custom" for :class:`~memlens.models.layers.StepLayer`).

    A layer type that offers unit sets of its own names them in ``unit_families`` and itself
    in ``unit_owner`` (GroupedLSTMLayer: ``("group", "groups")``, "a grouped LSTM"), so that
    every other layer refuses those specs with a message saying which layer type has them.
    """

    kind: str
    input_size: int
    hidden_size: int
    output_readout: str = "hidden"
    unit_families: ClassVar[tuple[str, ...]] = ()
    unit_owner: ClassVar[str] = ""
    _owners: ClassVar[dict[str, str]] = {}  # unit family or split -> layer type offering it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for family in cls.__dict__.get("unit_families", ()):
            RecurrentLayer._owners.setdefault(family, cls.unit_owner or cls.__name__)

    # -- declarations -----------------------------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tuple's entries, in order (gate kinds)."""
        return ("hidden", "cell") if self.kind == "lstm" else ("hidden",)

    def readout_specs(self) -> Mapping[str, Readout]:
        """The readouts the layer declares.

        Returns
        -------
        Mapping of str to Readout
            ``{name: Readout(name, size, linear)}``; gate kinds: "hidden" (and "cell" for
            LSTM kinds), H values each, linear (an entry of the state tuple).
        """
        return {n: Readout(n, self.hidden_size, linear=True) for n in self.state_names}

    def readout_spec(self, name: str) -> Readout:
        """The declared readout ``name``.

        Parameters
        ----------
        name : str
            A readout name of :meth:`readout_specs`.

        Returns
        -------
        Readout
            Its declaration (name, size D, linear).

        Raises
        ------
        MemlensError
            When the layer declares no such readout (the message names the choices).
        """
        specs = self.readout_specs()
        if name not in specs:
            raise MemlensError(f"unknown readout {name!r} for this {self.kind} layer: choose "
                               f"from {', '.join(specs)}")
        return specs[name]

    @property
    def memory_readout(self) -> str:
        """The readout carrying the layer's memory: the cell state c_t of an LSTM-type layer
        (as Verwimp et al.), otherwise ``output_readout``."""
        if self.kind == "lstm" and "cell" in self.readout_specs():
            return "cell"
        return self.output_readout

    @property
    def tangent_rule(self) -> TangentRule:
        """GATES for the gate kinds, WRITTEN for a layer with its own ``jvp_step``, GENERIC
        otherwise (a subclass may declare it as a class attribute instead)."""
        if self.kind in GATE_KINDS:
            return TangentRule.GATES
        if callable(getattr(self, "jvp_step", None)):
            return TangentRule.WRITTEN
        return TangentRule.GENERIC

    # thin accessors of readout_specs() (memlens 0.x names)
    @property
    def readouts(self) -> tuple[str, ...]:
        """Names of the declared readouts, in order."""
        return tuple(self.readout_specs())

    def readout_size(self, name: str) -> int:
        """Number of values D of readout ``name`` (per batch row).

        Parameters
        ----------
        name : str
            A declared readout.

        Returns
        -------
        int
            D.

        Raises
        ------
        MemlensError
            When the layer declares no such readout.
        """
        return self.readout_spec(name).size

    @property
    def readout_is_linear(self) -> bool:
        """True when every declared readout is linear in the state."""
        return all(r.linear for r in self.readout_specs().values())

    # -- unit sets --------------------------------------------------------------------------
    def unit_sets(self, readout: str | None = None) -> Mapping[str, str]:
        """The unit sets offered for a readout.

        Parameters
        ----------
        readout : str or None, optional
            The readout (default None: the output readout).

        Returns
        -------
        Mapping of str to str
            ``{spec form: description}``, e.g. ``{"all": ..., "I,J-K": ...}`` for a plain
            layer; subclasses add their own families.
        """
        return dict(COMMON_UNIT_SETS)

    def units(self, spec: str, readout: str | None = None) -> UnitSet:
        """Resolve a unit spec of a readout into a unit set.

        Subclasses handle their own families and defer the rest to this method.

        Parameters
        ----------
        spec : str
            "all", explicit indices ``"0,5,10-19"`` (ranges inclusive, each in 0..R-1), or a
            family this layer type offers (:meth:`unit_sets`).
        readout : str or None, optional
            The readout (default None: the output readout).

        Returns
        -------
        UnitSet
            Its size D and the map of readout values ... x R to unit values ... x D.

        Raises
        ------
        MemlensError
            When the readout does not exist, the spec is malformed or out of range, or it
            names a family of another layer type.
        """
        readout = self.output_readout if readout is None else readout
        size = self.readout_spec(readout).size
        if spec == "all":
            return UnitSet(spec, readout, size)
        self._refuse_foreign(spec)
        index = tuple(parse_unit_indices(spec, size))
        return UnitSet(spec, readout, len(index), index=index)

    def select_units(self, values: Tensor, spec: str, readout: str | None = None) -> Tensor:
        """The values of a unit set, from a readout's values.

        Parameters
        ----------
        values : torch.Tensor
            Readout values, ... x R.
        spec : str
            A unit spec (see :meth:`units`).
        readout : str or None, optional
            The readout (default None: the output readout).

        Returns
        -------
        torch.Tensor
            The unit values, ... x D.

        Raises
        ------
        MemlensError
            When the spec does not resolve (see :meth:`units`).
        """
        return self.units(spec, readout)(values)

    def unit_splits(self) -> Mapping[str, list[str]]:
        """Named partitions of the layer's units into unit sets that analyses compare.

        Returns
        -------
        Mapping of str to list of str
            ``{split: [unit spec, ...]}``, e.g. ``{"groups": ["group:0", "group:1"]}`` for a
            grouped LSTM; empty for a plain layer.
        """
        return {}

    def split_units(self, split: str) -> list[str]:
        """The unit specs of a partition.

        Parameters
        ----------
        split : str
            A partition of :meth:`unit_splits` ("groups", "bases"), or a plain unit spec.

        Returns
        -------
        list of str
            The partition's unit specs, or ``[split]`` for a plain unit spec.

        Raises
        ------
        MemlensError
            When ``split`` names a partition or family that another layer type offers.
        """
        splits = self.unit_splits()
        if split in splits:
            return list(splits[split])
        self._refuse_foreign(split)
        return [split]

    def _refuse_foreign(self, spec: str) -> None:
        """Refuse a unit spec of a family that another layer type offers."""
        family = spec.partition(":")[0]
        owner = RecurrentLayer._owners.get(family)
        if owner is not None and family not in type(self).unit_families:
            raise MemlensError(f"units {spec!r}: the layer is not {owner} "
                               f"({type(self).__name__})")

    # -- computation ------------------------------------------------------------------------
    def output(self, state) -> Tensor:
        """The layer's output: the next layer's input.

        Parameters
        ----------
        state : State
            The layer's state.

        Returns
        -------
        torch.Tensor
            The output readout, B x hidden_size.
        """
        return self.readout(state, self.output_readout)

    def init_state(self, batch: int, device=None, dtype=None) -> State:
        """The initial state s_0: zeros.

        Parameters
        ----------
        batch : int
            B, the number of sequences.
        device : torch.device or str or None, optional
            The device (default: that of the parameters).
        dtype : torch.dtype or None, optional
            The dtype (default: that of the parameters).

        Returns
        -------
        State
            ``(h,)`` or ``(h, c)`` for LSTM kinds, B x H each.
        """
        ref = next(self.parameters())
        z = torch.zeros(batch, self.hidden_size, device=device or ref.device,
                        dtype=dtype or ref.dtype)
        return (z, z.clone()) if self.kind == "lstm" else (z,)

    def readout(self, state: State, name: str) -> Tensor:
        """Evaluate one readout of a state.

        Parameters
        ----------
        state : State
            The layer's state.
        name : str
            A declared readout.

        Returns
        -------
        torch.Tensor
            B x readout_size(name); for gate kinds the state entry of that name.
        """
        return state[self.state_names.index(name)]

    def dense_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The dense weights of a gate-kind layer, in PyTorch's gate order.

        Returns
        -------
        tuple of torch.Tensor
            (W_ih, W_hh, b_ih, b_hh): G H x I, G H x H, G H and G H, with G = 4 gates for an
            LSTM, 3 for a GRU, 1 for an Elman RNN.

        Raises
        ------
        NotImplementedError
            In the base class; gate-kind subclasses implement it.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The fast sequence path (subclasses implement it).

        Parameters
        ----------
        x : torch.Tensor
            The input sequence, T x B x I.
        state : State or None, optional
            The initial state (default: :meth:`init_state`).

        Returns
        -------
        outputs : torch.Tensor
            The output readout at every step, T x B x H.
        state : State
            The final state.
        """
        raise NotImplementedError

    def step(self, x: Tensor, state: State) -> State:
        """One time step, s_t = step(x_t, s_{t-1}), written out so analyses can differentiate it.

        Parameters
        ----------
        x : torch.Tensor
            The input x_t, B x I.
        state : State
            The state s_{t-1}.

        Returns
        -------
        State
            The new state s_t (gate kinds: :func:`~memlens.protocol.gates.gate_step`).
        """
        return gate_step(self.kind, self.dense_weights(), x, state)

    def sequence_states(self, x: Tensor, state: State | None = None, names=None
                        ) -> tuple[dict[str, Tensor], State]:
        """Readouts at every step: ({"hidden": T x B x H[, "cell": T x B x H]}, final).

        Parameters
        ----------
        x : torch.Tensor
            The input sequence, T x B x I.
        state : State or None, optional
            The initial state (default: :meth:`init_state`).
        names : sequence of str or None, optional
            The readouts wanted (default None: all); "hidden" is always included (it is the
            next layer's input); the LSTM cell sequence costs an extra scan, so it is
            computed only when asked for.

        Returns
        -------
        values : dict of str to torch.Tensor
            ``{name: T x B x D}``.
        state : State
            The final state.
        """
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        hidden, final = self.forward(x, state)
        out = {"hidden": hidden}
        if self.kind == "lstm" and (names is None or "cell" in names):
            w_ih, w_hh, b_ih, b_hh = self.dense_weights()
            h_prev = torch.cat([state[0].unsqueeze(0), hidden[:-1]], dim=0)
            gates = x @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh
            out["cell"] = lstm_cell_sequence(gates, state[1])
        return out, final
