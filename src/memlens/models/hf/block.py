"""What every Hugging Face family adapter shares: the block layer, the head, the numerics.

:class:`HFBlockLayer` puts one block of a recurrent causal LM behind the layer contract
(:class:`~memlens.protocol.RecurrentLayer`): the state is a dict {component: B x ...}, every
component is a linear readout (flattened to B x D), ``step`` is the block's forward for one
token written out in plain PyTorch. :class:`HFHead` is the next-token head (final norm, LM
head, optional soft cap) used by context ablation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from memlens.core.optional import require
from memlens.protocol import Readout, RecurrentLayer

HFState = dict[str, Tensor]


def _require_transformers():
    return require("transformers")


def _rms(x: Tensor, weight: Tensor | None, eps: float, bias: Tensor | None = None) -> Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight (+ bias)."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """cap * tanh(x / cap) (identity for cap None)."""
    return x if cap is None else cap * torch.tanh(x / cap)


class HFBlockLayer(RecurrentLayer):
    """One block of a Hugging Face recurrent LM behind the layer contract.

    ``block`` is the model's own block module (registered here, so parameters are shared, not
    copied); ``step(x, state)`` (x: B x H) is the block's forward for one token; the state is a
    dict {component: B x ...}; ``readout(state, name)`` flattens a component to B x D.
    Subclasses define ``components`` (name -> shape without batch; one readout each, see
    ``readout_specs``), ``step`` and, where the state does not start at zero, ``init_state``.
    """

    kind = "custom"
    output_readout = "hidden"

    def __init__(self, block: nn.Module, hidden_size: int, index: int):
        super().__init__()
        self.block = block
        self.input_size = self.hidden_size = int(hidden_size)
        self.index = index

    components: dict[str, tuple[int, ...]]

    def readout_specs(self) -> Mapping[str, Readout]:
        """One readout per state component, flattened (D = prod(shape)); linear (a flatten),
        so a readout's tangent is the readout of the state's tangents."""
        return {n: Readout(n, math.prod(shape), linear=True)
                for n, shape in self.components.items()}

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.readouts

    def readout(self, state: HFState, name: str) -> Tensor:
        return state[name].flatten(1)

    def _zeros(self, batch: int, device, dtype) -> HFState:
        ref = next(self.parameters())
        device = device or ref.device
        dtype = dtype or ref.dtype
        return {n: torch.zeros(batch, *shape, device=device, dtype=dtype)
                for n, shape in self.components.items()}

    def init_state(self, batch: int, device=None, dtype=None) -> HFState:
        return self._zeros(batch, device, dtype)

    def own_output(self, output: Tensor) -> Tensor:
        """This layer's ``hidden`` from the block module's own forward output (B x T x H; see
        :mod:`.own_forward`): the output itself, unless the model transforms it between
        blocks (RWKV's rescaling)."""
        return output

    def forward(self, x: Tensor, state: HFState | None = None) -> tuple[Tensor, HFState]:
        seqs, state = self.sequence_states(x, state, (self.output_readout,))
        return seqs[self.output_readout], state

    def sequence_states(self, x: Tensor, state: HFState | None = None,
                        names: Sequence[str] | None = None
                        ) -> tuple[dict[str, Tensor], HFState]:
        """Readouts ``names`` (default all) at every step of x (T x B x H): T x B x D each."""
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        names = tuple(dict.fromkeys(names or self.readouts))
        out: dict[str, list[Tensor]] = {n: [] for n in names}
        for t in range(x.shape[0]):
            state = self.step(x[t], state)
            for n in names:
                out[n].append(self.readout(state, n))
        return {n: torch.stack(v) for n, v in out.items()}, state


def _value_and_slope(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """fn(x) and its elementwise derivative fn'(x), for an elementwise ``fn`` (autograd of
    sum fn(x))."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        value = fn(leaf)
        (slope,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), slope


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    return require("transformers.activations").ACT2FN[name]


class HFHead(nn.Module):
    """The next-token head of a Hugging Face LM: final norm, LM head, optional logit soft cap
    (B x H top-block outputs -> B x V logits)."""

    def __init__(self, norm: nn.Module, lm_head: nn.Module, soft_cap: float | None = None):
        super().__init__()
        self.norm, self.lm_head, self.soft_cap = norm, lm_head, soft_cap

    def forward(self, h: Tensor) -> Tensor:
        return _soft_cap(self.lm_head(self.norm(h)), self.soft_cap)

