"""``memlens.state_gradients``: the Python entry point of the state-gradient analysis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from memlens.errors import MemlensError
from memlens.gradients import metrics
from memlens.gradients.classes import encode_memberships
from memlens.gradients.engine import accumulate
from memlens.gradients.normalize import embedding_normalization
from memlens.gradients.result import GradientResult
from memlens.limits import check_memory
from memlens.models.encoder import as_encoder

STATES = ("cell", "hidden")


def _as_ids(tokens) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        ids = tokens.detach().cpu()
    else:
        try:
            ids = torch.as_tensor(np.asarray(tokens))
        except (TypeError, ValueError):
            raise MemlensError("tokens must be a 1-D sequence of integer ids") from None
    if ids.dim() != 1:
        raise MemlensError(f"tokens must be 1-D (one continuous stream), got shape "
                           f"{tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise MemlensError(f"tokens must be integer ids, got {ids.dtype}")
    return ids.long()


def state_gradients(model: nn.Module, tokens, max_delay: int, state: str = "cell",
                    layer: int = -1, classes: Sequence | None = None, *,
                    class_names: Sequence[str] | None = None, dtype: torch.dtype | str = "float32",
                    device: str | torch.device = "cpu", method: str = "auto",
                    blocks: int = 20, chunk_size: int = 256, flush_every: int = 256,
                    checkpoint: str | Path | None = None, checkpoint_every: float = 300.0,
                    resume: bool = False, stop_after: int | None = None,
                    progress: bool = False, target_mask=None, on_chunk=None,
                    class_ci_delays: Sequence[int] | None = None,
                    keep_checkpoint: bool = False) -> GradientResult:
    """Exact average state gradients d s_t / d x_{t-tau}, tau = 0..max_delay, of one stream.

    model: a memlens model or ``memlens.wrap(embedding, rnn)``; tokens: 1-D ids (one
    continuous stream from a zero state); state: "cell" or "hidden" (GRU/RNN: "hidden"; an
    LSTM's "cell" is the default); layer: readout layer (negative counts from the top).
    classes: optional, one entry per token: None, a class name, or a list of class names (the
    token then counts for each); ``class_names`` fixes their order (default: sorted).
    dtype: "float32" or "float64"; method: "auto" (hand-derived tangents where known),
    "hand" or "generic" (torch.func.jvp on the layer's step). See ``engine.accumulate`` for
    checkpoint / resume / stop_after / keep_checkpoint. ``class_ci_delays``: delays at which
    per-class block sums are kept for class-wise bootstrap intervals (default 0, 1, 2, 5, 10,
    20 and K; skipped when they would need more than 1 GB). Returns a
    :class:`GradientResult`.
    """
    enc = as_encoder(model)
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise MemlensError(f"unknown dtype {dtype!r}: choose float32 or float64")
        dtype = getattr(torch, dtype)
    if state == "cell" and enc.layers[enc.resolve_layer(layer)].kind != "lstm":
        raise MemlensError(f"unknown readout 'cell' for layer {enc.resolve_layer(layer)} "
                           f"({enc.layers[enc.resolve_layer(layer)].kind}): choose from hidden")
    L, state = enc.check_readout(layer, state)
    ids = _as_ids(tokens)
    T = ids.numel()
    if not isinstance(max_delay, (int, np.integer)) or isinstance(max_delay, bool):
        raise MemlensError(f"maximum delay must be an integer, got {max_delay!r}")
    if max_delay < 0:
        raise MemlensError(f"maximum delay must be >= 0, got {max_delay}")
    if T == 0:
        raise MemlensError("the token stream is empty")
    if max_delay >= T:
        raise MemlensError(f"maximum delay {max_delay} is not shorter than the stream "
                           f"({T} tokens): no position has a delay of {max_delay}")
    V = enc.vocab_size
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= V:
        bad = lo if lo < 0 else hi
        raise MemlensError(f"token id {bad} is outside the model's vocabulary (0..{V - 1}): "
                           "model and corpus vocabularies do not match")
    if blocks < 1 or chunk_size < 1 or flush_every < 1:
        raise MemlensError("blocks, chunk_size and flush_every must be positive")
    table = enc.embedding.weight.detach().cpu().double().numpy()
    norm = embedding_normalization(table)

    memberships, names = None, []
    if classes is not None:
        if len(classes) != T:
            raise MemlensError(f"classes has {len(classes)} entries for {T} tokens")
        if class_names is None:
            found = set()
            for lab in classes:
                if lab is None:
                    continue
                found.update([lab] if isinstance(lab, str) else lab)
            names = sorted(found)
        else:
            names = list(class_names)
        memberships = encode_memberships(names, classes)
    mask = None
    if target_mask is not None:
        mask = torch.as_tensor(np.asarray(target_mask), dtype=torch.bool)
        if mask.numel() != T:
            raise MemlensError(f"target_mask has {mask.numel()} entries for {T} tokens")

    ci_delays: list[int] = []
    if names:
        wanted = class_ci_delays if class_ci_delays is not None else (0, 1, 2, 5, 10, 20,
                                                                      int(max_delay))
        ci_delays = sorted({int(d) for d in wanted if 0 <= d <= max_delay})
        H = enc.layers[L].hidden_size
        need = min(blocks, T) * H * (len(names) + 1) * len(ci_delays) * enc.emb_size * 8
        if need > 1e9:
            ci_delays = []
    H, E, S = enc.layers[L].hidden_size, enc.emb_size, int(max_delay) + 1
    width = dtype.itemsize if isinstance(dtype, torch.dtype) else 4
    check_memory(H * S * E * ((len(names) + 1) * (width + 8) * 2 + min(blocks, T) * 8
                              + (L + 1) * 2 * width), "the state-gradient accumulators")
    sums = accumulate(enc, ids, int(max_delay), L, state, memberships, len(names), dtype=dtype,
                      device=device, method=method, blocks=blocks, flush_every=flush_every,
                      chunk_size=chunk_size, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume, stop_after=stop_after,
                      progress=progress, target_mask=mask, on_chunk=on_chunk,
                      ci_delays=ci_delays, keep_checkpoint=keep_checkpoint)
    class_emb = probe = None
    if names:
        np_ids = ids.numpy()
        class_emb = metrics.class_mean_embeddings(table, np_ids, memberships, len(names))
        probe = metrics.probe_accuracy(table, np_ids, memberships)
    settings = {"max_delay": int(max_delay), "layer": L, "state": state, "tokens": T,
                "dtype": str(dtype).replace("torch.", ""), "method": sums.stats["method"],
                "blocks": int(min(blocks, T)), "classes": len(names)}
    return GradientResult(max_delay=int(max_delay), layer=L, state=state, class_names=names,
                          raw=sums, normalization=norm, settings=settings,
                          class_embeddings=class_emb, probe=probe)
