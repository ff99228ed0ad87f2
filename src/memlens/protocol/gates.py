"""The gate equations of the layer kinds with hand-derived tangents (``TangentRule.GATES``).

With (W_ih, W_hh, b_ih, b_hh) = ``layer.dense_weights()`` in PyTorch's gate order:

LSTM:  [i f g o] = W_ih x + b_ih + W_hh h + b_hh;  i,f,o = sigmoid, g = tanh
       c' = f * c + i * g;   h' = o * tanh(c')
GRU:   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
       n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
RNN:   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (or relu)
"""

from __future__ import annotations

import torch
from torch import Tensor

State = tuple[Tensor, ...]

#: layer kinds defined by the gate equations above over ``dense_weights()``
GATE_KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def lstm_cell(gates: Tensor, c: Tensor) -> State:
    """LSTM update from pre-activations ``gates`` (B x 4H, order i f g o) and cell ``c``
    (B x H): returns (h', c'), B x H each."""
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


def gate_step(kind: str, weights: tuple[Tensor, Tensor, Tensor, Tensor], x: Tensor,
              state: State) -> State:
    """One step of a gate layer of ``kind``: x (B x I), state ((h,) or (h, c), B x H each)
    -> new state, by the equations in the module docstring."""
    w_ih, w_hh, b_ih, b_hh = weights
    h = state[0]
    if kind == "lstm":
        return lstm_cell(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, state[1])
    if kind == "gru":
        gi = x @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return ((1 - z) * n + z * h,)
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    return (torch.tanh(pre) if kind == "rnn_tanh" else torch.relu(pre),)
