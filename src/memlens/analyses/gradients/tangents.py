"""Forward-mode tangent propagation through one recurrent layer, for many source blocks at once.

A propagator holds the primal state of one layer (vectors of size H) and, for every component of
the state, a tangent matrix of shape H x (S*E): S = K+1 ring-buffer slots, each a block of E
columns d(state)/d(x_source) for one live source position. Slot ``t mod S`` belongs to the source
at position t. At step t the slot of source t-S (dead: its delay K was accumulated at step t-1)
is reused for the new source t.

The tangent update of one step is linear in [dx; ds]. Hand-derived paths fold the per-row gate
derivatives into the weight matrices once per step (cost rows x (I+H), negligible) so that the
big product is small:

* LSTM (i f g o):  dc' = f * dc + A [dx; dh];   dh' = (o (1 - tanh(c')^2)) * dc' + B [dx; dh]
  A = diag(g i(1-i)) W_i + diag(c f(1-f)) W_f + diag(i (1-g^2)) W_g,  B = diag(tanh(c') o(1-o)) W_o
  -> one (2H x H) @ (H x S*E) product per step (plus (2H x I) @ (I x S*E) above layer 0).
* GRU (r z n):     dh' = z * dh + M [dx; dh] with
  M_x = a2 W_ir + a3 W_iz + a1 W_in,  M_h = a2 W_hr + a3 W_hz + (a1 r) W_hn,
  a1 = (1-z)(1-n^2),  a2 = a1 (W_hn h + b_hn) r(1-r),  a3 = (h-n) z(1-z)   -> one H-row product.
* Elman RNN:       dh' = diag(act'(pre)) [W_ih W_hh] [dx; dh].

On layer 0 the input tangent of every live source is zero except for the new one, whose dx is
the identity: layer 0 needs only the recurrent product, and the new block is the folded input
matrix itself. Above layer 0, dx is the hidden-state tangent of the layer below (all slots).

The generic path uses ``torch.func.jvp`` on ``layer.step`` with the tangent columns as a batch;
it works for any :class:`~memlens.protocol.RecurrentLayer` and serves as a cross-check.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from memlens.core.errors import MemlensError
from memlens.protocol import GATE_KINDS, RecurrentLayer, TangentRule


def make_propagator(layer: RecurrentLayer, slots: int, block: int, first: bool,
                    dtype: torch.dtype, device: torch.device, method: str = "auto"
                    ) -> LayerPropagator | GenericPropagator:
    """The propagator of one layer, by the layer's declared ``tangent_rule``: GATES,
    hand-derived from ``dense_weights()`` (:class:`LayerPropagator`); WRITTEN, the layer's
    own ``jvp_step`` (Mamba); GENERIC, ``torch.func.jvp`` on ``layer.step``. ``method``:
    "auto" (the declared rule), "hand" (GATES or WRITTEN; refused for GENERIC layers) or
    "generic" (``torch.func.jvp`` for every layer: a cross-check)."""
    if method not in ("auto", "hand", "generic"):
        raise MemlensError(f"unknown tangent method {method!r}: choose auto, hand or generic")
    try:
        rule = TangentRule(layer.tangent_rule)
    except ValueError:
        raise MemlensError(f"layer kind {layer.kind!r} declares an unknown tangent rule "
                           f"{layer.tangent_rule!r}: choose gates, written or generic") from None
    if rule is TangentRule.GATES and layer.kind not in GATE_KINDS:
        raise MemlensError(f"layer kind {layer.kind!r} declares the gates tangent rule, which "
                           f"covers only {', '.join(GATE_KINDS)}")
    if method == "hand" and rule is TangentRule.GENERIC:
        raise MemlensError(f"no hand-derived tangents for layer kind {layer.kind!r}")
    if method == "generic" or rule is not TangentRule.GATES:
        return GenericPropagator(layer, slots, block, first, dtype, device,
                                 use_jvp_step=rule is TangentRule.WRITTEN and method != "generic")
    return LayerPropagator(layer, slots, block, first, dtype, device)


class LayerPropagator:
    """Primal state and tangents of one LSTM/GRU/RNN layer with hand-derived tangents (see
    module docstring for shapes and formulas)."""

    def __init__(self, layer: RecurrentLayer, slots: int, block: int, first: bool,
                 dtype: torch.dtype, device: torch.device):
        self.kind = layer.kind
        self.first = first
        self.H = layer.hidden_size
        self.I = layer.input_size
        self.S, self.E = slots, block
        self.N = slots * block
        self.lo = 0  # first input column of the tangents (:meth:`set_columns`)
        self.generic = False
        self.state_names = layer.state_names
        H, N = self.H, self.N

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.state = tuple(zeros(H) for _ in self.state_names)
        self.tangents = [zeros(H, N) for _ in self.state_names]
        ref = next(layer.parameters())
        if ref.dtype != dtype:  # dense equivalents (e.g. B A of a factorised kernel) in dtype
            layer = copy.deepcopy(layer).to(dtype)
        with torch.no_grad():
            w_ih, w_hh, b_ih, b_hh = (w.detach().to(device=device, dtype=dtype).contiguous()
                                      for w in layer.dense_weights())
        self.w_ih, self.w_hh = w_ih, w_hh
        self.b_ih, self.b_hh = b_ih, b_hh
        self.b = b_ih + b_hh
        if self.kind == "lstm":
            # M = [W_ih | W_hh] per gate (4 x H x (I+H)); AB = [A; B] (2H x (I+H)) holds
            # both input and recurrent columns, so folding is 3 tensor ops per step.
            self.M = torch.cat([w_ih, w_hh], 1).view(4, H, self.I + H).contiguous()
            self.tmp3 = zeros(3, H, self.I + H)
            self.AB = zeros(2 * H, self.I + H)
            self.ABx, self.ABh = self.AB[:, :self.I], self.AB[:, self.I:]
            self.coef_in = zeros(4 * H)
            self.P = zeros(2 * H, N)
        elif self.kind == "gru":
            self.Mx = w_ih.view(3, H, self.I)
            self.Mh = w_hh.view(3, H, H)
            self.Fx = zeros(H, self.I)
            self.Fh = zeros(H, H)
            self.P = zeros(H, N)
        else:
            self.Fx = zeros(H, self.I)
            self.Fh = zeros(H, H)
            self.P = zeros(H, N)

    # -- bookkeeping ------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Restart the primal state from the layer's initial state (zeros)."""
        self.state = tuple(torch.zeros_like(v) for v in self.state)

    def set_columns(self, lo: int) -> None:
        """Carry the tangents of input columns lo..lo+E-1 (layer 0; a pass of a column-chunked
        run): a new source's block is those columns of the folded input matrix. The state and
        tangents restart (a pass runs the stream from its start)."""
        self.lo = int(lo)
        self.reset_state()
        for tan in self.tangents:
            tan.zero_()

    @property
    def output(self) -> Tensor:
        """The layer's output h (H,): the next layer's input."""
        return self.state[0]

    def output_tangent(self) -> Tensor:
        """Tangents of the output (H x S*E): the next layer's input tangents."""
        return self.tangents[0]

    def readout(self, name: str) -> Tensor:
        """Tangent matrix (H x S*E) of the named readout ("hidden" or "cell")."""
        return self.tangents[self.state_names.index(name)]

    def macs_per_step(self) -> int:
        """Multiply-adds of the tangent products this propagator executes per step."""
        rows = {"lstm": 2 * self.H}.get(self.kind, self.H)
        inner = self.H if self.first else self.H + self.I
        return rows * inner * self.N

    def flops_fold_per_step(self) -> int:
        return 4 * self.H * (self.I + self.H)

    def _slot(self, t: Tensor, slot: int) -> Tensor:
        return t.view(t.shape[0], self.S, self.E)[:, slot]

    # -- one step -------------------------------------------------------------------------
    def step(self, x: Tensor, dx: Tensor | None, slot: int) -> None:
        """Advance primal state and all tangents by one step.

        x: input vector (I,); dx: input tangents (I x S*E) from the layer below (None on
        layer 0); slot: ring slot of the new source (its tangents start here).
        """
        if self.kind == "lstm":
            self._step_lstm(x, dx, slot)
        elif self.kind == "gru":
            self._step_gru(x, dx, slot)
        else:
            self._step_rnn(x, dx, slot)

    def _step_lstm(self, x: Tensor, dx: Tensor | None, slot: int) -> None:
        H = self.H
        h, c = self.state
        pre = torch.addmv(self.b, self.w_ih, x)
        pre.addmv_(self.w_hh, h)
        act = torch.sigmoid(pre)
        g = torch.tanh(pre[2 * H:3 * H])
        act[2 * H:3 * H] = g
        i, f, _, o = act.chunk(4)
        c2 = torch.addcmul(i * g, f, c)
        tc = torch.tanh(c2)
        h2 = o * tc
        # d(act)/d(pre): sigmoid' = a (1 - a) for i, f, o; tanh' = 1 - g^2 for g
        deriv = act * (1 - act)
        deriv[2 * H:3 * H] = 1 - g * g
        mult = self.coef_in
        mult[:H], mult[H:2 * H], mult[2 * H:3 * H], mult[3 * H:] = g, c, i, tc
        coef = (deriv * mult).view(4, H, 1)  # [g i', c f', i g', tanh(c') o']
        kc = (o * (1 - tc * tc)).unsqueeze(1)
        torch.mul(self.M[:3], coef[:3], out=self.tmp3)
        torch.sum(self.tmp3, 0, out=self.AB[:H])
        torch.mul(self.M[3], coef[3], out=self.AB[H:])
        dh, dc = self.tangents
        P = self.P
        if self.first:
            torch.mm(self.ABh, dh, out=P)
            self._slot(P, slot).copy_(self.ABx[:, self.lo:self.lo + self.E])
            self._slot(dc, slot).zero_()
        else:
            self._slot(dc, slot).zero_()
            self._slot(dh, slot).zero_()
            torch.mm(self.ABx, dx, out=P)
            P.addmm_(self.ABh, dh)
        torch.addcmul(P[:H], f.unsqueeze(1), dc, out=dc)
        torch.addcmul(P[H:], kc, dc, out=dh)
        self.state = (h2, c2)

    def _step_gru(self, x: Tensor, dx: Tensor | None, slot: int) -> None:
        H = self.H
        (h,) = self.state
        gi = torch.addmv(self.b_ih, self.w_ih, x)
        gh = torch.addmv(self.b_hh, self.w_hh, h)
        r = torch.sigmoid(gi[:H] + gh[:H])
        z = torch.sigmoid(gi[H:2 * H] + gh[H:2 * H])
        hn = gh[2 * H:]
        n = torch.tanh(gi[2 * H:] + r * hn)
        h2 = (1 - z) * n + z * h
        a1 = (1 - z) * (1 - n * n)
        a2 = (a1 * hn * r * (1 - r)).unsqueeze(1)
        a3 = ((h - n) * z * (1 - z)).unsqueeze(1)
        for M, F, a_n in ((self.Mx, self.Fx, a1), (self.Mh, self.Fh, a1 * r)):
            torch.mul(M[0], a2, out=F)
            F.addcmul_(M[1], a3)
            F.addcmul_(M[2], a_n.unsqueeze(1))
        (dh,) = self.tangents
        P = self.P
        if self.first:
            torch.mm(self.Fh, dh, out=P)
            self._slot(P, slot).copy_(self.Fx[:, self.lo:self.lo + self.E])
            self._slot(dh, slot).zero_()
        else:
            self._slot(dh, slot).zero_()
            torch.mm(self.Fx, dx, out=P)
            P.addmm_(self.Fh, dh)
        torch.addcmul(P, z.unsqueeze(1), dh, out=dh)
        self.state = (h2,)

    def _step_rnn(self, x: Tensor, dx: Tensor | None, slot: int) -> None:
        (h,) = self.state
        pre = torch.addmv(self.b, self.w_ih, x)
        pre.addmv_(self.w_hh, h)
        if self.kind == "rnn_tanh":
            h2 = torch.tanh(pre)
            d = 1 - h2 * h2
        else:
            h2 = torch.relu(pre)
            d = (pre > 0).to(pre.dtype)
        d = d.unsqueeze(1)
        torch.mul(self.w_ih, d, out=self.Fx)
        torch.mul(self.w_hh, d, out=self.Fh)
        (dh,) = self.tangents
        P = self.P
        if self.first:
            torch.mm(self.Fh, dh, out=P)
            self._slot(P, slot).copy_(self.Fx[:, self.lo:self.lo + self.E])
        else:
            self._slot(dh, slot).zero_()
            torch.mm(self.Fx, dx, out=P)
            P.addmm_(self.Fh, dh)
        self.P, self.tangents = dh, [P]
        self.state = (h2,)



class _MethodCall(torch.nn.Module):
    """Calls a method of a layer through ``forward``, so that ``functional_call`` applies."""

    def __init__(self, layer: RecurrentLayer):
        super().__init__()
        self.layer = layer

    def forward(self, method: str, *args):
        return getattr(self.layer, method)(*args)


class GenericPropagator:
    """Primal state and tangents of any layer, by ``torch.func.jvp`` on ``layer.step``.

    The state may be any nested structure of tensors: it is flattened into leaves (1 x ...
    each) with one tangent tensor per leaf (N x ..., N = S*E columns riding as a batch).
    A readout's tangent is the jvp of the readout function at the new state, so readouts may
    be any differentiable function of the state (a flattened matrix memory, y = C h, ...).
    A readout declared linear (``readout_specs()[name].linear``) is applied to the tangents
    directly (its tangent is the readout of the tangents). A layer whose ``tangent_rule`` is
    WRITTEN provides ``jvp_step(x, state, dx, dstate) -> (state', dstate')``, its step and
    derivative written out (Mamba: the primal is computed once instead of once per tangent
    column, and the SSM tangent updated in place); with ``use_jvp_step`` (method "auto" or
    "hand") it replaces the jvp call of ``step``.
    """

    def __init__(self, layer: RecurrentLayer, slots: int, block: int, first: bool,
                 dtype: torch.dtype, device: torch.device, use_jvp_step: bool = False):
        self.kind = layer.kind
        self.first = first
        self.use_jvp_step = use_jvp_step
        self.generic = not use_jvp_step  # "hand" in the run's settings when written out
        self.I = layer.input_size
        self.S, self.E = slots, block
        self.N = slots * block
        # The user's layer is not copied: functional_call swaps in detached parameters of the
        # compute dtype for each call, which also reaches parameters that a StepLayer's
        # functions capture from the enclosing scope (they are the same module objects).
        self.layer = layer
        self._call = _MethodCall(layer)
        self.params = {name: t.detach().to(device=device, dtype=dtype
                                            if t.is_floating_point() else t.dtype)
                       for name, t in (*self._call.named_parameters(),
                                       *self._call.named_buffers())}
        with torch.no_grad():
            leaves, self.spec = pytree.tree_flatten(layer.init_state(1, device, dtype))
        for leaf in leaves:
            if not isinstance(leaf, Tensor) or leaf.dim() < 1 or leaf.shape[0] != 1:
                raise MemlensError(f"layer state leaves must be tensors with the batch first; "
                                   f"init_state(1) gave {type(leaf).__name__} "
                                   f"{tuple(getattr(leaf, 'shape', ()))}")
        self.state = [leaf.to(dtype) for leaf in leaves]
        self.initial = [leaf.clone() for leaf in self.state]
        self.tangents = [torch.zeros(self.N, *leaf.shape[1:], dtype=dtype, device=device)
                         for leaf in leaves]
        self.lo = 0
        self.eye = torch.eye(block, self.I, dtype=dtype, device=device)
        self.H = layer.hidden_size
        self.linear = {n: r.linear for n, r in layer.readout_specs().items()}
        self._cache: dict[str, Tensor] = {}

    def reset_state(self) -> None:
        """Restart the primal state from the layer's ``init_state`` (tangents zero, in the
        initial shapes: a state that grows, an attention block's key/value cache, restarts
        empty)."""
        self.state = [leaf.clone() for leaf in self.initial]
        self.tangents = [t if t.shape[1:] == s.shape[1:] else
                         t.new_zeros(self.N, *s.shape[1:])
                         for t, s in zip(self.tangents, self.state)]

    def set_columns(self, lo: int) -> None:
        """Carry the tangents of input columns lo..lo+E-1 (see
        :meth:`LayerPropagator.set_columns`): the new source's input tangent is those rows of
        the identity."""
        self.lo = int(lo)
        eye = torch.eye(self.I, dtype=self.eye.dtype, device=self.eye.device)
        self.eye = eye[self.lo:self.lo + self.E].contiguous()
        self.reset_state()
        self._cache = {}
        for tan in self.tangents:
            tan.zero_()

    def _unflatten(self, leaves):
        return pytree.tree_unflatten(list(leaves), self.spec)

    def _batch(self, leaves) -> list[Tensor]:
        return [leaf.expand(self.N, *leaf.shape[1:]).contiguous() for leaf in leaves]

    def call(self, method: str, *args):
        """``layer.<method>(*args)`` with the propagator's parameters (dtype, device)."""
        return torch.func.functional_call(self._call, self.params, (method, *args))

    @property
    def output(self) -> Tensor:
        """The layer's output (H,) at the current state: the next layer's input."""
        return self.call("output", self._unflatten(self.state))[0]

    def output_tangent(self) -> Tensor:
        return self.readout(self.layer.output_readout)

    def readout(self, name: str) -> Tensor:
        """Tangent matrix (D x S*E) of readout ``name`` (its jvp at the current state)."""
        if name not in self._cache and self.linear.get(name, False):
            out = self.call("readout", self._unflatten(self.tangents), name)
            self._cache[name] = out.reshape(self.N, -1).T.contiguous()
        if name not in self._cache:
            def fn(*leaves: Tensor) -> Tensor:
                return self.call("readout", self._unflatten(leaves), name)

            _, out = torch.func.jvp(fn, tuple(self._batch(self.state)), tuple(self.tangents))
            self._cache[name] = out.reshape(self.N, -1).T.contiguous()
        return self._cache[name]

    def macs_per_step(self) -> int:
        """Nominal multiply-adds per step: the jvp through a dense state update."""
        size = sum(t[0].numel() for t in self.tangents)
        return size * (size + (0 if self.first else self.I)) * self.N

    def step(self, x: Tensor, dx: Tensor | None, slot: int) -> None:
        """Advance primal state and all tangents by one step (see LayerPropagator.step)."""
        self._cache = {}
        for tan in self.tangents:  # shape-preserving view: a leaf may hold no values yet
            tan.view(self.S, self.E, *tan.shape[1:])[slot].zero_()
        if self.first:
            tx = torch.zeros(self.S, self.E, self.I, dtype=x.dtype, device=x.device)
            tx[slot] = self.eye
            tx = tx.view(self.N, self.I)
        else:
            tx = dx.T
        x1 = x.unsqueeze(0)
        if self.use_jvp_step:  # the layer's own written-out derivative
            new, out = self.call("jvp_step", x1, self._unflatten(self.state), tx,
                                 self._unflatten(self.tangents))
            self.tangents = [o.contiguous() for o in pytree.tree_flatten(out)[0]]
            self.state = [s.detach() for s in pytree.tree_flatten(new)[0]]
            return

        # step() is row-wise independent over the batch, so the N tangent columns ride as a
        # batch of N copies of the primal point: one forward-mode call instead of a vmap.
        def fn(xx: Tensor, *leaves: Tensor) -> tuple[Tensor, ...]:
            return tuple(pytree.tree_flatten(self.call("step", xx, self._unflatten(leaves)))[0])

        xb = x1.expand(self.N, -1).contiguous()
        _, out = torch.func.jvp(fn, (xb, *self._batch(self.state)), (tx, *self.tangents))
        with torch.no_grad():
            new = pytree.tree_flatten(self.call("step", x1, self._unflatten(self.state)))[0]
        self.tangents = [o.contiguous() for o in out]
        self.state = [s.detach() for s in new]
