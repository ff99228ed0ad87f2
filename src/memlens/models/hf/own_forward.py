"""Block outputs through the model's own (chunked, whole-sequence) forward.

State extraction in the adapter steps every block one token at a time (``step``: the state
after every prefix, every component). For the block outputs alone (readout ``hidden``) of
sequences that start from the model's initial state (the windows and sentences of a context
regime, :func:`memlens.models.states.extract_segment_states`), the model's own forward gives
the same numbers in one call per batch: its chunked scans (Mamba-2, gated DeltaNet), its
whole-sequence projections and convolutions, its causal attention. :class:`OwnForward` runs
the base model on token ids with ``use_cache=False`` and reads every block's output with a
forward hook on the block module the adapter wraps (the oracle of the family tests; RWKV's
rescaling between blocks applied by the layer's ``own_output``), stopping
the forward after the highest block asked for.

The two paths agree to float32 rounding (the model's chunked algorithms sum in another
order): tests/test_hf_own_forward.py checks every registered family on its tiny config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from memlens.models.hf.block import HFBlockLayer


class _Enough(Exception):
    """Raised by the hook of the highest block asked for: the rest of the forward is skipped."""


class OwnForward:
    """``own(ids, layers)``: {layer: T x B x H} block outputs of the sequences ids (T x B
    token ids), each from the model's initial state, by the model's own forward.

    Parameters
    ----------
    backbone : torch.nn.Module
        The base model (``MambaModel``, ``BambaModel``, ...), called as
        ``backbone(input_ids=B x T, use_cache=False)``.
    layers : sequence of HFBlockLayer
        The adapter's layers, in order: layer i's ``hidden`` is
        ``layers[i].own_output(o)`` of its block module's forward output o (its first element
        when a tuple).

    Not an ``nn.Module``: the parameters are the model's, already the encoder's through its
    layers (nothing is registered twice).
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[HFBlockLayer]):
        self.backbone = backbone
        self.layers = list(layers)

    @torch.no_grad()
    def __call__(self, ids: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        wanted = sorted(set(int(i) for i in layers))
        top = wanted[-1]
        out: dict[int, Tensor] = {}

        def hook(index: int):
            def read(_module, _inputs, output):
                value = output[0] if isinstance(output, tuple) else output
                # B x T x H -> T x B x H
                out[index] = self.layers[index].own_output(value).transpose(0, 1)
                if index == top:
                    raise _Enough
            return read

        handles = [self.layers[i].block.register_forward_hook(hook(i)) for i in wanted]
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            self.backbone(input_ids=ids.transpose(0, 1), use_cache=False)
        except _Enough:
            pass
        finally:
            for h in handles:
                h.remove()
            self.backbone.train(was_training)
        return out
