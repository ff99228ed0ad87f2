"""Checkpoints: weights + config + vocabulary, loaded without executing code, written atomically.

The file is a ``torch.save`` dict of plain containers and tensors, read back with
``torch.load(..., weights_only=True)``. A SHA-256 digest over config, vocabulary and every
tensor is stored beside them and checked on load, so a tampered file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from typing import Any

import torch

from memlens.data.vocab import Vocab
from memlens.errors import MemlensError
from memlens.io import write_atomic
from memlens.models.lm import LanguageModel

MAGIC = "memlens-checkpoint"
VERSION = 1


def _digest(config: dict, vocab: dict, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps(vocab, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: LanguageModel,
                    extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (with its ``vocab``) to ``path`` atomically."""
    if model.vocab is None:
        raise MemlensError("cannot save a model without a vocabulary")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    config = dict(model.config)
    vocab = model.vocab.to_dict()
    payload = {"format": MAGIC, "version": VERSION, "config": config, "vocab": vocab,
               "state_dict": state, "extra": extra or {},
               "sha256": _digest(config, vocab, state)}
    write_atomic(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> LanguageModel:
    """Load a memlens checkpoint; refuse foreign, corrupt or tampered files with a clear error.

    The returned model is in eval mode and has ``.vocab``, ``.config`` and ``.extra``.
    """
    if not os.path.exists(path):
        raise MemlensError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise MemlensError(f"checkpoint path is a directory: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, TypeError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemlensError(f"not a memlens checkpoint (cannot be read safely): {path}: "
                           f"{reason[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != MAGIC:
        raise MemlensError(f"not a memlens checkpoint: {path}")
    if payload.get("version") != VERSION:
        raise MemlensError(f"unsupported memlens checkpoint version {payload.get('version')!r}: "
                           f"{path}")
    try:
        config, vocab_d, state = payload["config"], payload["vocab"], payload["state_dict"]
        if _digest(config, vocab_d, state) != payload["sha256"]:
            raise MemlensError(f"checkpoint integrity check failed (tampered or corrupt): {path}")
        vocab = Vocab.from_dict(vocab_d)
        model = LanguageModel(config, len(vocab))
        model.load_state_dict(state)
    except MemlensError:
        raise
    except Exception as exc:
        raise MemlensError(f"checkpoint does not describe a valid memlens model: {path}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    model.vocab = vocab
    model.extra = payload.get("extra", {})
    return model.to(device).eval()
