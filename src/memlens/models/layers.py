"""Recurrent layers with one uniform interface: a fast sequence form and an exact step form.

Every layer maps an input sequence x (T x B x I) to states. The contract (what the analyses
use) is the :class:`RecurrentLayer` base class: ``input_size``, ``hidden_size`` (the size of the
``output`` readout, which is the next layer's input), ``init_state``, ``step``, declared
readouts (``readout_specs``, ``readout``), ``forward`` and ``sequence_states``. State may be
any nested structure (tuple, list, dict) of tensors with the batch first; the built-in layers use
a tuple of B x H tensors: ``(h, c)`` for LSTM-type layers, ``(h,)`` for GRU and Elman RNN layers.
:class:`StepLayer` adapts any step function (a state-space layer, a matrix memory, ...).

* ``forward(x, state)`` is the fast path (cuDNN / oneDNN ``nn.LSTM`` etc. where possible)
  returning the hidden sequence T x B x H and the final state.
* ``step(x_t, state)`` applies one time step (B x I, state) -> state with the textbook
  equations, written out so that analyses can differentiate or linearise it.
* ``sequence_states(x, state)`` returns every named readout for every time step
  ({"hidden": T x B x H, "cell": T x B x H}) using the fast path for h and a vectorised
  gate computation plus an element-wise scan for c.
* ``dense_weights()`` returns (W_ih, W_hh, b_ih, b_hh) as dense matrices in PyTorch's gate
  order (LSTM: i, f, g, o; GRU: r, z, n), which is all the state-gradient engine needs.

The contract itself (:class:`RecurrentLayer`, readout / tangent / unit-set declarations)
lives in :mod:`memlens.protocol`; the gate equations in :mod:`memlens.protocol.gates`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import torch
from torch import Tensor, nn

from memlens.core.errors import MemlensError, UserCodeError
from memlens.protocol import (
    GATE_KINDS,
    Readout,
    RecurrentLayer,
    State,
    UnitSet,
    lstm_cell,
    lstm_cell_sequence,
)
from memlens.protocol.usercode import check_state

KINDS = GATE_KINDS

__all__ = ["KINDS", "FactorizedLSTMLayer", "GroupedLSTMLayer", "RecurrentLayer", "State",
           "StepLayer", "TorchLayer", "lstm_cell", "lstm_cell_sequence"]

class TorchLayer(RecurrentLayer):
    """One layer backed by a single-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (fast path).

    ``kind`` is "lstm", "gru", "rnn_tanh" or "rnn_relu"; ``step`` uses the textbook gate
    equations over :meth:`dense_weights` (hand-derived tangents), ``forward`` the module itself
    (cuDNN / oneDNN). The module's parameters are used, not copied.

    Parameters
    ----------
    module : torch.nn.LSTM or torch.nn.GRU or torch.nn.RNN
        A single-layer, unidirectional module with bias (batch_first or not).

    Raises
    ------
    MemlensError
        For a multi-layer or bidirectional module, an LSTM with ``proj_size``, a module
        without bias, or another module type.
    """

    def __init__(self, module: nn.RNNBase):
        super().__init__()
        if module.num_layers != 1 or module.bidirectional:
            raise MemlensError("TorchLayer needs a single-layer, unidirectional module")
        if getattr(module, "proj_size", 0):
            raise MemlensError("LSTMs with proj_size are not supported")
        if not module.bias:
            raise MemlensError("recurrent modules without bias are not supported")
        self.rnn = module
        if isinstance(module, nn.LSTM):
            self.kind = "lstm"
        elif isinstance(module, nn.GRU):
            self.kind = "gru"
        elif isinstance(module, nn.RNN):
            self.kind = "rnn_tanh" if module.nonlinearity == "tanh" else "rnn_relu"
        else:
            raise MemlensError(f"unsupported recurrent module {type(module).__name__}")
        self.input_size = module.input_size
        self.hidden_size = module.hidden_size
        self.batch_first = module.batch_first

    @classmethod
    def create(cls, kind: str, input_size: int, hidden_size: int) -> TorchLayer:
        """A freshly initialised layer of a gate kind.

        Parameters
        ----------
        kind : str
            "lstm", "gru", "rnn_tanh" or "rnn_relu".
        input_size : int
            I, the input size.
        hidden_size : int
            H, the state size.

        Returns
        -------
        TorchLayer
            The layer over a new ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (PyTorch's default
            initialisation).

        Raises
        ------
        MemlensError
            For an unknown kind.
        """
        if kind == "lstm":
            return cls(nn.LSTM(input_size, hidden_size))
        if kind == "gru":
            return cls(nn.GRU(input_size, hidden_size))
        if kind in ("rnn_tanh", "rnn_relu"):
            return cls(nn.RNN(input_size, hidden_size, nonlinearity=kind[4:]))
        raise MemlensError(f"unknown layer kind {kind!r}")

    def dense_weights(self):
        """The module's weights, in PyTorch's gate order (LSTM: i, f, g, o; GRU: r, z, n).

        Returns
        -------
        tuple of torch.Tensor
            (W_ih, W_hh, b_ih, b_hh): G H x I, G H x H, G H, G H (G = 4, 3 or 1), the
            module's own parameters.
        """
        r = self.rnn
        return r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run a sequence through the module (the fast path).

        Parameters
        ----------
        x : torch.Tensor
            The input sequence, T x B x I (time-first, whatever the module's batch_first).
        state : State or None, optional
            The initial state ``(h,)`` or ``(h, c)``, B x H each (default: zeros).

        Returns
        -------
        outputs : torch.Tensor
            The hidden states, T x B x H.
        state : State
            The final state.
        """
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        hx = (state[0].unsqueeze(0), state[1].unsqueeze(0)) if self.kind == "lstm" \
            else state[0].unsqueeze(0)
        if self.batch_first:
            out, hn = self.rnn(x.transpose(0, 1), hx)
            out = out.transpose(0, 1)
        else:
            out, hn = self.rnn(x, hx)
        final = (hn[0][0], hn[1][0]) if self.kind == "lstm" else (hn[0],)
        return out, final


class FactorizedLSTMLayer(RecurrentLayer):
    """F-LSTM (Kuchaiev & Ginsburg 2017): recurrent kernel of rank r, W_hh = B A.

    A: r x H (``factor_in``), B: 4H x r (``factor_out``). The input kernel W_ih stays full.
    The r-dimensional factor space of a state is A h.
    """

    kind = "lstm"
    unit_families = ("factor", "basis", "bases")
    unit_owner = "a factorised LSTM"

    def __init__(self, input_size: int, hidden_size: int, rank: int):
        super().__init__()
        if not 1 <= rank <= hidden_size:
            raise MemlensError(f"factorised LSTM rank must be in 1..{hidden_size}, got {rank}")
        self.input_size, self.hidden_size, self.rank = input_size, hidden_size, rank
        self.input_proj = nn.Linear(input_size, 4 * hidden_size)
        self.factor_in = nn.Linear(hidden_size, rank, bias=False)
        self.factor_out = nn.Linear(rank, 4 * hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def dense_weights(self):
        return (self.input_proj.weight, self.factor_out.weight @ self.factor_in.weight,
                self.input_proj.bias, self.factor_out.bias)

    def factor_space(self, h: Tensor) -> Tensor:
        """Project hidden states (... x H) to the rank-r factor space (... x r)."""
        return self.factor_in(h)

    # -- unit sets: the factor space and its bases (hidden readout only) -------------------
    def unit_sets(self, readout: str | None = None) -> Mapping[str, str]:
        sets = dict(super().unit_sets(readout))
        if (readout or self.output_readout) == "hidden":
            sets["factor"] = f"the rank-{self.rank} factor space A h ({self.rank} values)"
            sets["basis:J"] = (f"basis J of the factor space: (A h)_J = a_J . h (1 value; "
                               f"J in 0..{self.rank - 1})")
        return sets

    def units(self, spec: str, readout: str | None = None) -> UnitSet:
        """``"factor"``: A h (r values); ``"basis:J"``: (A h)_J (1 value); both of the hidden
        readout only. Other specs: :meth:`RecurrentLayer.units`.

        With W_hh = B A, basis j reaches the next step only through the scalar (A h)_j, so
        that coefficient is the part of the state that basis j carries."""
        if spec != "factor" and not spec.startswith("basis:"):
            return super().units(spec, readout)
        readout = self.output_readout if readout is None else readout
        self.readout_spec(readout)
        if readout != "hidden":
            raise MemlensError(f"units {spec!r}: the factor space is defined for the hidden "
                               "readout only")
        if spec == "factor":
            return UnitSet(spec, readout, self.rank, project=self.factor_space)
        j = self.basis_index(spec)
        return UnitSet(spec, readout, 1, project=lambda s: self.factor_space(s)[..., j:j + 1])

    def basis_index(self, spec: str) -> int:
        """J of a ``basis:J`` spec, checked against the rank."""
        try:
            j = int(spec.split(":", 1)[1])
        except ValueError:
            raise MemlensError(f"bad unit spec {spec!r}: expected basis:J with an integer J"
                               ) from None
        if not 0 <= j < self.rank:
            raise MemlensError(f"basis {j} out of range: the layer has rank {self.rank} "
                               f"(valid 0..{self.rank - 1})")
        return j

    def unit_splits(self) -> Mapping[str, list[str]]:
        """``"bases"``: the whole factor space, then each basis J = 0..r-1."""
        return {"bases": ["factor"] + [f"basis:{j}" for j in range(self.rank)]}

    def step(self, x: Tensor, state: State) -> State:
        gates = self.input_proj(x) + self.factor_out(self.factor_in(state[0]))
        return lstm_cell(gates, state[1])

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        inputs = self.input_proj(x)  # all time steps in one product
        h, c = state
        outs = []
        for t in range(x.shape[0]):
            h, c = lstm_cell(inputs[t] + self.factor_out(self.factor_in(h)), c)
            outs.append(h)
        return torch.stack(outs), (h, c)


class GroupedLSTMLayer(RecurrentLayer):
    """G-LSTM (Kuchaiev & Ginsburg 2017): G independent LSTMs on slices of input and state.

    Group g reads input features [g*I/G, (g+1)*I/G) and owns hidden units
    [g*H/G, (g+1)*H/G); its kernels are the diagonal blocks of block-diagonal W_ih, W_hh.
    """

    kind = "lstm"
    unit_families = ("group", "groups")
    unit_owner = "a grouped LSTM"

    def __init__(self, input_size: int, hidden_size: int, groups: int):
        super().__init__()
        if groups < 1 or input_size % groups or hidden_size % groups:
            raise MemlensError(
                f"grouped LSTM needs input size {input_size} and hidden size {hidden_size} "
                f"divisible by the number of groups {groups}")
        self.input_size, self.hidden_size, self.groups = input_size, hidden_size, groups
        self.cells = nn.ModuleList(
            nn.LSTM(input_size // groups, hidden_size // groups) for _ in range(groups))

    def group_units(self, g: int) -> list[int]:
        """Indices of the hidden units owned by group ``g``."""
        if not 0 <= g < self.groups:
            raise MemlensError(f"group {g} out of range: the layer has {self.groups} groups")
        size = self.hidden_size // self.groups
        return list(range(g * size, (g + 1) * size))

    # -- unit sets: the units of one group -----------------------------------------------
    def unit_sets(self, readout: str | None = None) -> Mapping[str, str]:
        sets = dict(super().unit_sets(readout))
        sets["group:G"] = (f"the {self.hidden_size // self.groups} units of group G "
                           f"(G in 0..{self.groups - 1})")
        return sets

    def units(self, spec: str, readout: str | None = None) -> UnitSet:
        """``"group:G"``: the H/G units of group G (hidden or cell). Other specs:
        :meth:`RecurrentLayer.units`."""
        if not spec.startswith("group:"):
            return super().units(spec, readout)
        readout = self.output_readout if readout is None else readout
        self.readout_spec(readout)
        try:
            g = int(spec.split(":", 1)[1])
        except ValueError:
            raise MemlensError(f"bad unit spec {spec!r}: expected group:G with an integer G"
                               ) from None
        index = tuple(self.group_units(g))
        return UnitSet(spec, readout, len(index), index=index)

    def unit_splits(self) -> Mapping[str, list[str]]:
        """``"groups"``: one unit set per group."""
        return {"groups": [f"group:{g}" for g in range(self.groups)]}

    def dense_weights(self):
        gh = self.hidden_size // self.groups

        def gate_block_diag(name: str) -> Tensor:
            mats = [getattr(c, name) for c in self.cells]
            return torch.cat([torch.block_diag(*[m[k * gh:(k + 1) * gh] for m in mats])
                              for k in range(4)])

        def gate_concat(name: str) -> Tensor:
            vecs = [getattr(c, name) for c in self.cells]
            return torch.cat([v[k * gh:(k + 1) * gh] for k in range(4) for v in vecs])

        return (gate_block_diag("weight_ih_l0"), gate_block_diag("weight_hh_l0"),
                gate_concat("bias_ih_l0"), gate_concat("bias_hh_l0"))

    def step(self, x: Tensor, state: State) -> State:
        xs = x.chunk(self.groups, dim=-1)
        hs = state[0].chunk(self.groups, dim=-1)
        cs = state[1].chunk(self.groups, dim=-1)
        new = [lstm_cell(xg @ m.weight_ih_l0.T + m.bias_ih_l0 + hg @ m.weight_hh_l0.T
                         + m.bias_hh_l0, cg)
               for m, xg, hg, cg in zip(self.cells, xs, hs, cs)]
        return torch.cat([n[0] for n in new], -1), torch.cat([n[1] for n in new], -1)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        xs = x.chunk(self.groups, dim=-1)
        hs = state[0].chunk(self.groups, dim=-1)
        cs = state[1].chunk(self.groups, dim=-1)
        outs, hn, cn = [], [], []
        for m, xg, hg, cg in zip(self.cells, xs, hs, cs):
            o, (h1, c1) = m(xg, (hg.unsqueeze(0).contiguous(), cg.unsqueeze(0).contiguous()))
            outs.append(o)
            hn.append(h1[0])
            cn.append(c1[0])
        return torch.cat(outs, -1), (torch.cat(hn, -1), torch.cat(cn, -1))


class StepLayer(RecurrentLayer):
    """Any recurrent step function behind the layer contract: custom cells, state-space layers,
    matrix memories. Tangents go through ``torch.func.jvp`` on ``step`` (exact, generic).

    * ``step(x, state) -> state``: x is B x ``input_size``; state any nested structure (tuple,
      list, dict) of tensors whose first dimension is the batch. Rows must be independent.
    * ``init_state(batch, device, dtype) -> state``: the state before the first input.
    * ``readouts``: {name: fn(state) -> B x D tensor}, any (differentiable) function of the
      state, e.g. ``lambda s: s[0].flatten(1)`` for a d x n matrix memory or ``lambda s:
      s[0] @ C.T`` for y = C h. ``output`` names the readout fed to the next layer (default:
      the first).
    * ``module``: the ``nn.Module`` owning the parameters the functions use, so that ``.to()``,
      ``state_dict()`` and the random-initialisation control see them.
    * ``linear``: names of readouts that are linear in the state (``lambda s: s[0].flatten(1)``,
      y = C h): their tangents skip a jvp (:class:`~memlens.protocol.Readout`).

    Parameters
    ----------
    step : callable
        ``step(x, state) -> state``, x B x ``input_size``; the new state must have the
        tensors and shapes of the one given (checked on the first step).
    init_state : callable
        ``init_state(batch, device, dtype) -> state``.
    input_size : int
        I, the size of the input vectors.
    readouts : dict of str to callable
        ``{name: fn(state) -> B x D tensor}``, at least one; the sizes D are probed on
        ``init_state(1)``.
    output : str or None, optional
        The readout fed to the next layer (default None: the first of ``readouts``); its
        size is ``hidden_size``.
    module : torch.nn.Module or None, optional
        The module owning the parameters the functions use (default None: none).
    linear : collection of str, optional
        Names of the readouts linear in the state (default: none).

    Raises
    ------
    MemlensError
        When ``step`` or ``init_state`` is not callable, there is no readout, ``output`` or
        a ``linear`` name is not a readout, or a readout does not return a B x D tensor; an
        exception raised by the user's functions is reported as a
        :class:`~memlens.core.errors.UserCodeError` (a MemlensError).

    Example (a diagonal linear state-space layer, state d x n, readout y = C h)::

        ssm = nn.ParameterDict({"a": nn.Parameter(torch.rand(d, n)), ...})
        layer = StepLayer(step=lambda x, s: (ssm["a"] * s[0] + x[:, :, None] * ssm["b"],),
                          init_state=lambda b, device, dtype: (torch.zeros(b, d, n,
                                                               device=device, dtype=dtype),),
                          input_size=d, readouts={"y": lambda s: (s[0] * ssm["c"]).sum(-1),
                                                  "state": lambda s: s[0].flatten(1)},
                          module=ssm)
    """

    kind = "custom"

    def __init__(self, step, init_state, input_size: int, readouts: dict,
                 output: str | None = None, module: nn.Module | None = None,
                 linear: Collection[str] = ()):
        super().__init__()
        if not callable(step) or not callable(init_state):
            raise MemlensError("StepLayer needs callable step and init_state functions")
        if not readouts or not all(callable(f) for f in readouts.values()):
            raise MemlensError("StepLayer needs at least one readout: {name: fn(state)}")
        self._step, self._init = step, init_state
        self._checked = False  # has a step's new state been checked against its input
        self._readouts = dict(readouts)
        self.output_readout = output or next(iter(self._readouts))
        if self.output_readout not in self._readouts:
            raise MemlensError(f"output readout {self.output_readout!r} is not among the "
                               f"readouts {', '.join(self._readouts)}")
        self.module = module if module is not None else nn.Module()
        self.input_size = int(input_size)
        unknown = sorted(set(linear) - set(self._readouts))
        if unknown:
            raise MemlensError(f"linear= names unknown readouts: {', '.join(unknown)}")
        self._specs: dict[str, Readout] = {}
        with torch.no_grad():
            probe = self.init_state(1)
            for name in self._readouts:
                r = self.readout(probe, name)
                if r.dim() != 2 or r.shape[0] != 1:
                    raise MemlensError(f"readout {name!r} must return a B x D tensor, got "
                                       f"shape {tuple(r.shape)} for B=1")
                self._specs[name] = Readout(name, r.shape[1], name in linear)
        self.hidden_size = self._specs[self.output_readout].size

    def readout_specs(self) -> Mapping[str, Readout]:
        """The readouts given, with the sizes probed on ``init_state(1)``.

        Returns
        -------
        Mapping of str to Readout
            ``{name: Readout(name, D, linear)}`` in the order given.
        """
        return self._specs

    @property
    def state_names(self) -> tuple[str, ...]:
        """The readout names (a custom state has no named entries)."""
        return self.readouts

    def _reference(self) -> Tensor | None:
        return next(self.module.parameters(), None)

    def init_state(self, batch: int, device=None, dtype=None):
        """The state before the first input, from the user's ``init_state``.

        Parameters
        ----------
        batch : int
            B, the number of sequences.
        device : torch.device or str or None, optional
            The device (default: that of ``module``'s first parameter, else cpu).
        dtype : torch.dtype or None, optional
            The dtype (default: that of ``module``'s first parameter, else torch's default).

        Returns
        -------
        State
            Whatever the user's function returns: a nested structure of tensors, batch first.

        Raises
        ------
        UserCodeError
            When the user's function raises.
        """
        ref = self._reference()
        device = device or (ref.device if ref is not None else "cpu")
        dtype = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
        try:  # the user's own code: its errors are reported as theirs (issue 21)
            return self._init(batch, device, dtype)
        except (MemlensError, MemoryError):
            raise
        except Exception as exc:
            raise UserCodeError.raised("init_state", exc) from exc

    def readout(self, state, name: str) -> Tensor:
        """Evaluate the user's readout function ``name`` on ``state``.

        Parameters
        ----------
        state : State
            The layer's state.
        name : str
            One of the readouts given.

        Returns
        -------
        torch.Tensor
            B x D.

        Raises
        ------
        UserCodeError
            When the user's function raises.
        """
        try:
            return self._readouts[name](state)
        except (MemlensError, MemoryError):
            raise
        except Exception as exc:
            raise UserCodeError.raised(f"readout {name!r}", exc) from exc

    def step(self, x: Tensor, state):
        """One time step through the user's ``step``.

        Parameters
        ----------
        x : torch.Tensor
            The input x_t, B x I.
        state : State
            The state s_{t-1}.

        Returns
        -------
        State
            The new state s_t.

        Raises
        ------
        UserCodeError
            When the user's function raises, or (first step) returns a state with other
            tensors or shapes than it was given.
        """
        try:
            new = self._step(x, state)
        except (MemlensError, MemoryError):
            raise
        except Exception as exc:
            raise UserCodeError.raised("step", exc) from exc
        if not self._checked:  # the first step: the state keeps its tensors and shapes
            check_state(new, state, "step")
            self._checked = True
        return new

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, object]:
        """Run a sequence by looping :meth:`step` (there is no faster path).

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
        seqs, state = self.sequence_states(x, state, (self.output_readout,))
        return seqs[self.output_readout], state

    def sequence_states(self, x: Tensor, state=None, names=None) -> tuple[dict[str, Tensor],
                                                                         object]:
        """Readouts at every step, by looping :meth:`step`.

        Parameters
        ----------
        x : torch.Tensor
            The input sequence, T x B x I.
        state : State or None, optional
            The initial state (default: :meth:`init_state`).
        names : sequence of str or None, optional
            The readouts wanted (default None: all).

        Returns
        -------
        values : dict of str to torch.Tensor
            ``{name: T x B x D}``.
        state : State
            The final state.
        """
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        names = tuple(dict.fromkeys(names or self.readouts))  # a name asked twice: once
        out: dict[str, list[Tensor]] = {n: [] for n in names}
        for t in range(x.shape[0]):
            state = self.step(x[t], state)
            for n in names:
                out[n].append(self.readout(state, n))
        return {n: torch.stack(v) for n, v in out.items()}, state
