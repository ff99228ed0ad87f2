"""Recurrent layers with one uniform interface: a fast sequence form and an exact step form.

Every layer maps an input sequence x (T x B x I) to states. The contract (what the analyses
use) is the :class:`RecurrentLayer` base class: ``input_size``, ``hidden_size`` (the size of the
``output`` readout, which is the next layer's input), ``init_state``, ``step``, named
``readouts`` with ``readout_size``/``readout``, ``forward`` and ``sequence_states``. State may be
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

LSTM:  [i f g o] = W_ih x + b_ih + W_hh h + b_hh;  i,f,o = sigmoid, g = tanh
       c' = f * c + i * g;   h' = o * tanh(c')
GRU:   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
       n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
RNN:   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (or relu)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memlens.errors import MemlensError

State = tuple[Tensor, ...]

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def lstm_cell(gates: Tensor, c: Tensor) -> State:
    """LSTM update from pre-activations ``gates`` (B x 4H, order i f g o) and cell ``c``."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def lstm_cell_sequence(gates: Tensor, c0: Tensor) -> Tensor:
    """All cell states of an LSTM given all pre-activations ``gates`` (T x B x 4H) and c0.

    The gates are computed in one matrix product beforehand; only this scan is sequential.
    Returns T x B x H.
    """
    i, f, g, o = gates.chunk(4, dim=-1)
    forget = torch.sigmoid(f)
    write = torch.sigmoid(i) * torch.tanh(g)
    cells = torch.empty_like(write)
    c = c0
    for t in range(gates.shape[0]):
        c = forget[t] * c + write[t]
        cells[t] = c
    return cells


class RecurrentLayer(nn.Module):
    """Base class: one recurrent layer (see module docstring for the contract).

    ``kind`` is "lstm", "gru", "rnn_tanh" or "rnn_relu" for layers defined by gate equations
    over ``dense_weights()`` (these get hand-derived tangents), "custom" otherwise.
    ``output_readout`` names the readout that feeds the next layer ("hidden").
    """

    kind: str
    input_size: int
    hidden_size: int
    output_readout: str = "hidden"

    @property
    def readouts(self) -> tuple[str, ...]:
        return ("hidden", "cell") if self.kind == "lstm" else ("hidden",)

    def readout_size(self, name: str) -> int:
        """Number of values of readout ``name`` (per batch row)."""
        return self.hidden_size

    def output(self, state) -> Tensor:
        """The layer's output (B x hidden_size): the next layer's input."""
        return self.readout(state, self.output_readout)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("hidden", "cell") if self.kind == "lstm" else ("hidden",)

    def init_state(self, batch: int, device=None, dtype=None) -> State:
        ref = next(self.parameters())
        z = torch.zeros(batch, self.hidden_size, device=device or ref.device,
                        dtype=dtype or ref.dtype)
        return (z, z.clone()) if self.kind == "lstm" else (z,)

    def readout(self, state: State, name: str) -> Tensor:
        """Readout ``name`` of ``state``: B x readout_size(name)."""
        return state[self.state_names.index(name)]

    # -- to be provided by subclasses -------------------------------------------------------
    def dense_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    # -- generic implementations from dense weights ------------------------------------------
    def step(self, x: Tensor, state: State) -> State:
        """One time step: x (B x I), state -> new state, by the equations in the docstring."""
        w_ih, w_hh, b_ih, b_hh = self.dense_weights()
        h = state[0]
        if self.kind == "lstm":
            return lstm_cell(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, state[1])
        if self.kind == "gru":
            gi = x @ w_ih.T + b_ih
            gh = h @ w_hh.T + b_hh
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return ((1 - z) * n + z * h,)
        pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        return (torch.tanh(pre) if self.kind == "rnn_tanh" else torch.relu(pre),)

    def sequence_states(self, x: Tensor, state: State | None = None, names=None
                        ) -> tuple[dict[str, Tensor], State]:
        """Readouts at every step: ({"hidden": T x B x H[, "cell": T x B x H]}, final).

        ``names``: the readouts wanted (default all); "hidden" is always included (it is the
        next layer's input); the LSTM cell sequence costs an extra scan, so it is computed only
        when asked for.
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


class TorchLayer(RecurrentLayer):
    """One layer backed by a single-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (fast path)."""

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
        if kind == "lstm":
            return cls(nn.LSTM(input_size, hidden_size))
        if kind == "gru":
            return cls(nn.GRU(input_size, hidden_size))
        if kind in ("rnn_tanh", "rnn_relu"):
            return cls(nn.RNN(input_size, hidden_size, nonlinearity=kind[4:]))
        raise MemlensError(f"unknown layer kind {kind!r}")

    def dense_weights(self):
        r = self.rnn
        return r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
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
                 output: str | None = None, module: nn.Module | None = None):
        super().__init__()
        if not callable(step) or not callable(init_state):
            raise MemlensError("StepLayer needs callable step and init_state functions")
        if not readouts or not all(callable(f) for f in readouts.values()):
            raise MemlensError("StepLayer needs at least one readout: {name: fn(state)}")
        self._step, self._init = step, init_state
        self._readouts = dict(readouts)
        self.output_readout = output or next(iter(self._readouts))
        if self.output_readout not in self._readouts:
            raise MemlensError(f"output readout {self.output_readout!r} is not among the "
                               f"readouts {', '.join(self._readouts)}")
        self.module = module if module is not None else nn.Module()
        self.input_size = int(input_size)
        self._sizes: dict[str, int] = {}
        with torch.no_grad():
            probe = self.init_state(1)
            for name in self._readouts:
                r = self.readout(probe, name)
                if r.dim() != 2 or r.shape[0] != 1:
                    raise MemlensError(f"readout {name!r} must return a B x D tensor, got "
                                       f"shape {tuple(r.shape)} for B=1")
                self._sizes[name] = r.shape[1]
        self.hidden_size = self._sizes[self.output_readout]

    @property
    def readouts(self) -> tuple[str, ...]:
        return tuple(self._readouts)

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.readouts

    def readout_size(self, name: str) -> int:
        return self._sizes[name]

    def _reference(self) -> Tensor | None:
        return next(self.module.parameters(), None)

    def init_state(self, batch: int, device=None, dtype=None):
        ref = self._reference()
        device = device or (ref.device if ref is not None else "cpu")
        dtype = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
        return self._init(batch, device, dtype)

    def readout(self, state, name: str) -> Tensor:
        return self._readouts[name](state)

    def step(self, x: Tensor, state):
        return self._step(x, state)

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, object]:
        seqs, state = self.sequence_states(x, state, (self.output_readout,))
        return seqs[self.output_readout], state

    def sequence_states(self, x: Tensor, state=None, names=None) -> tuple[dict[str, Tensor],
                                                                         object]:
        """Readouts ``names`` (default: all) at every step by looping ``step``: T x B x D."""
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        names = tuple(dict.fromkeys(names or self.readouts))  # a name asked twice: once
        out: dict[str, list[Tensor]] = {n: [] for n in names}
        for t in range(x.shape[0]):
            state = self.step(x[t], state)
            for n in names:
                out[n].append(self.readout(state, n))
        return {n: torch.stack(v) for n, v in out.items()}, state
