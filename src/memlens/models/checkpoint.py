"""Checkpoints: weights + config + vocabulary, loaded without executing code, written atomically.

The file is a ``torch.save`` dict of plain containers and tensors, read back with
``torch.load(..., weights_only=True)``. A SHA-256 digest over config, vocabulary and every
tensor is stored beside them and checked on load, so a tampered file is refused.

Before anything is unpickled, the archive's members are checked: their declared sizes must
not add up to more than :data:`MAX_EXPANSION` times the file's size (``torch.save`` stores
members uncompressed), so a small "zip bomb" cannot make the loader allocate gigabytes. The
config's sizes are bounded (:mod:`memlens.limits`) and every weight's shape is compared with
the shape the config implies (computed on the ``meta`` device, allocating nothing) before the
model is built.
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
from memlens.models.lm import LanguageModel, check_config

MAGIC = "memlens-checkpoint"
VERSION = 1
MAX_EXPANSION = 4          # declared member bytes per byte of the file
MAX_MEMBERS = 100_000


def check_archive(path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Refuse a torch zip archive whose members declare more bytes than the file can hold
    (see module docstring) or that is not a zip archive at all (legacy pickles are refused)."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemlensError(f"not a memlens {what} (cannot be read safely): {path}: not a "
                           f"torch zip archive ({reason[:200]})") from None
    declared = sum(i.file_size for i in infos)
    if len(infos) > MAX_MEMBERS or declared > MAX_EXPANSION * size + (1 << 20):
        raise MemlensError(f"refusing {what} {path}: its archive declares {declared} bytes "
                           f"in {len(infos)} members for a {size}-byte file (a zip bomb?)")


def load_checked(path: str | os.PathLike, what: str = "checkpoint",
                 map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` after :func:`check_archive`; any unreadable content
    becomes a one-line :class:`MemlensError`."""
    check_archive(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, TypeError, KeyError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemlensError(f"not a memlens {what} (cannot be read safely): {path}: "
                           f"{reason[:200]}") from None


def check_shapes(config: dict, vocab_size: int, state: dict) -> None:
    """Refuse a state dict whose tensor names or shapes differ from what ``config`` implies
    (the expected shapes come from a model on the ``meta`` device: nothing is allocated)."""
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise MemlensError("the state_dict is not a mapping of names to tensors")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in
                    LanguageModel(config, vocab_size).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if set(got) != set(expected):
        diff = sorted(set(got) ^ set(expected))
        raise MemlensError(f"weights do not match the config (tensor {diff[0]!r} missing or "
                           "unexpected)")
    for k, shape in expected.items():
        if got[k] != shape:
            raise MemlensError(f"weights do not match the config: {k} has shape {got[k]}, the "
                               f"config implies {shape}")


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
    payload = load_checked(path)
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
        if not isinstance(config, dict):
            raise MemlensError("config is not a mapping")
        check_config({**config, "vocab_size": len(vocab)})  # bounds before any allocation
        check_shapes(config, len(vocab), state)
        model = LanguageModel(config, len(vocab))
        model.load_state_dict(state)
    except MemlensError as exc:
        if str(exc).startswith("checkpoint integrity"):
            raise
        raise MemlensError(f"checkpoint does not describe a valid memlens model: {path}: "
                           f"{exc}") from None
    except Exception as exc:
        raise MemlensError(f"checkpoint does not describe a valid memlens model: {path}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    model.vocab = vocab
    model.extra = payload.get("extra", {})
    return model.to(device).eval()
