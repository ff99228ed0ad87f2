"""Checkpoints: weights + config + vocabulary, loaded without executing code, written atomically.

The file is a ``torch.save`` dict of plain containers and tensors, read back with
``torch.load(..., weights_only=True)``. A SHA-256 digest over config, vocabulary and every
tensor is stored beside them and checked on load, so a tampered file is refused.

Before anything is unpickled, the archive's members are checked: their declared sizes must
not add up to more than :data:`MAX_EXPANSION` times the file's size (``torch.save`` stores
members uncompressed), so a small "zip bomb" cannot make the loader allocate gigabytes. The
config's sizes are bounded (:mod:`memlens.core.limits`) and every weight's shape is compared with
the shape the config implies (computed on the ``meta`` device, allocating nothing) before the
model is built. The file itself passes the input gate first (:mod:`memlens.core.files`: a
FIFO, a device or a file larger than the memory budget is refused by ``stat``), and an archive
whose members expand beyond the memory budget (``MEMLENS_MAX_MEMORY``) is refused before
``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from typing import Any, BinaryIO

import torch
from torch import nn

from memlens.core.errors import MemlensError
from memlens.core.files import as_path, binary_limit, check_input_file, open_input, write_atomic
from memlens.core.limits import memory_budget
from memlens.core.seal import ZIP_MARK, seal_zip
from memlens.data.vocab import Vocab
from memlens.models.devices import resolve_device
from memlens.models.encoder import RecurrentEncoder
from memlens.models.layers import TorchLayer
from memlens.models.lm import LanguageModel, check_config

MAGIC = "memlens-checkpoint"
VERSION = 1
MAX_EXPANSION = 4          # declared member bytes per byte of the file
MAX_MEMBERS = 100_000


def _archive_members(fh: BinaryIO, path: str | os.PathLike, what: str
                     ) -> list[zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(fh) as zf:
            return zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemlensError(f"not a memlens {what} (cannot be read safely): {path}: not a "
                           f"torch zip archive ({reason[:200]})") from None


def check_archive(path: str | os.PathLike, what: str = "checkpoint",
                  fh: BinaryIO | None = None) -> None:
    """Refuse a torch zip archive (through the input gate: a special file, or one larger
    than :func:`~memlens.core.files.binary_limit`, is never opened) whose members declare
    more bytes than the file can hold or than the memory budget (see module docstring), or
    that is not a zip archive at all (legacy pickles are refused). ``fh``: the file already
    opened through :func:`~memlens.core.files.open_input`."""
    if fh is None:
        with open_input(path, what, binary_limit()) as opened:
            check_archive(path, what, opened)
        return
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    infos = _archive_members(fh, path, what)
    fh.seek(0)
    declared = sum(i.file_size for i in infos)
    if len(infos) > MAX_MEMBERS or declared > MAX_EXPANSION * size + (1 << 20):
        raise MemlensError(f"refusing {what} {path}: its archive declares {declared} bytes "
                           f"in {len(infos)} members for a {size}-byte file (a zip bomb?)")
    budget = memory_budget()
    if declared > budget:
        raise MemlensError(f"refusing {what} {path}: it expands to {declared / 2**30:.1f} GiB, "
                           f"more than the memory budget ({budget / 2**30:.1f} GiB; "
                           "MEMLENS_MAX_MEMORY)")


def load_checked(path: str | os.PathLike, what: str = "checkpoint",
                 map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` after the input gate and :func:`check_archive`, on
    the file opened once; any unreadable content becomes a one-line :class:`MemlensError`."""
    with open_input(path, what, binary_limit()) as fh:
        check_archive(path, what, fh)
        try:
            return torch.load(fh, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile,
                ValueError, OSError, AttributeError, TypeError, KeyError, IndexError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__
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


ENCODER = "encoder"  # config["model"] of a saved wrapped encoder (no decoder)


def encoder_config(encoder: RecurrentEncoder) -> dict[str, Any]:
    """The config that rebuilds a wrapped encoder of nn.LSTM/GRU/RNN layers (no code)."""
    kinds = []
    for i, layer in enumerate(encoder.layers):
        if not isinstance(layer, TorchLayer) or layer.batch_first:
            raise MemlensError(f"layer {i} ({type(layer).__name__}) cannot be saved as a "
                               "checkpoint (a checkpoint never holds code): analyse it with "
                               "--model FILE.py:FUNCTION instead")
        kinds.append(layer.kind)
    return {"model": ENCODER, "kinds": kinds, "input": encoder.input_kind,
            "input_size": encoder.input_size, "hidden": encoder.hidden_sizes,
            "vocab_size": encoder.vocab_size if encoder.input_kind == "tokens" else None}


def expected_parameters(config: dict[str, Any]) -> int:
    """Number of parameters the encoder of ``encoder_config`` has (nothing allocated)."""
    gates = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
    try:
        size = int(config["input_size"])
        pairs = [(gates[k], int(h)) for k, h in zip(config["kinds"], config["hidden"])]
        vocab = int(config["vocab_size"]) if config.get("input") == "tokens" else 0
    except (KeyError, TypeError, ValueError):
        raise MemlensError("bad encoder config: sizes missing or not integers") from None
    total = size * vocab
    for g, h in pairs:
        total += g * h * (size + h + 2)
        size = h
    return total


def build_encoder(config: dict[str, Any]) -> RecurrentEncoder:
    """Rebuild (untrained) the encoder that ``encoder_config`` describes, sizes checked."""
    kinds, hidden = config.get("kinds"), config.get("hidden")
    if not isinstance(kinds, list) or not isinstance(hidden, list) or not kinds or \
            len(kinds) != len(hidden) or len(kinds) > 64:
        raise MemlensError("bad encoder config: 1..64 layers, one hidden size per layer")
    sizes = [config.get("input_size"), *hidden]
    if config.get("input") == "tokens":
        sizes.append(config.get("vocab_size"))
    if any(k not in ("lstm", "gru", "rnn_tanh", "rnn_relu") for k in kinds) or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10**7 for n in sizes):
        raise MemlensError("bad encoder config: unknown layer kind or impossible size")
    if expected_parameters(config) > 2 * 10**9:
        raise MemlensError("bad encoder config: more than 2e9 parameters")
    size = config.get("input_size")
    embedding = None
    if config.get("input") == "tokens":
        embedding = nn.Embedding(int(config["vocab_size"]), int(size))
    layers = []
    for kind, h in zip(kinds, hidden):
        layers.append(TorchLayer.create(kind, int(size), int(h)))
        size = h
    return RecurrentEncoder(embedding, layers)


def save_checkpoint(path: str | os.PathLike, model: LanguageModel | RecurrentEncoder,
                    extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (with its vocabulary) to ``path`` atomically.

    The file holds the config, the vocabulary, the weights (on cpu) and ``extra``, with a
    SHA-256 digest that :func:`load_checkpoint` checks; it is written to a temporary file and
    renamed, so an error leaves no partial file.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file to write.
    model : LanguageModel or RecurrentEncoder
        A memlens language model (with its ``vocab``), or a wrapped encoder
        (:func:`~memlens.models.encoder.wrap`) of nn.LSTM/GRU/RNN layers with any vocabulary
        (a user's vocabulary needs no ``<unk>``, ``<eos>`` first; a continuous-input encoder
        needs none).
    extra : dict or None, optional
        Plain data saved with the model (e.g. training history), read back as
        ``model.extra`` (default None: empty).

    Raises
    ------
    MemlensError
        When ``model`` is of another type, a token model has no vocabulary, or the path is
        invalid.
    """
    path = as_path(path, "path")
    if not isinstance(model, (LanguageModel, RecurrentEncoder)):
        raise MemlensError("save_checkpoint needs a memlens LanguageModel or a wrapped encoder "
                           f"(memlens.wrap(embedding, rnn, vocab=...)), got "
                           f"{type(model).__name__}")
    if isinstance(model, RecurrentEncoder):
        config = encoder_config(model)
        vocab_obj = model.vocab
        if vocab_obj is None and model.input_kind == "tokens":
            raise MemlensError("cannot save a token model without a vocabulary: wrap(..., "
                               "vocab=[symbols in id order])")
    else:
        vocab_obj = model.vocab
        if vocab_obj is None:
            raise MemlensError("cannot save a model without a vocabulary")
        config = dict(model.config)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    vocab = vocab_obj.to_dict() if vocab_obj is not None else {}
    payload = {"format": MAGIC, "version": VERSION, "config": config, "vocab": vocab,
               "state_dict": state, "extra": extra or {},
               "sha256": _digest(config, vocab, state), "seal": ZIP_MARK}
    write_atomic(path, lambda p: (torch.save(payload, p), seal_zip(p)))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> LanguageModel:
    """Load a memlens checkpoint; refuse foreign, corrupt or tampered files with a clear error.

    The file is never unpickled: its contents are checked before any object is built, then
    its digest, then the config's bounds and the weights' shapes before allocation.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_checkpoint` (or ``memlens train``).
    device : str or torch.device, optional
        Where to put the model: "cpu" (default), "cuda", "cuda:N" or "auto".

    Returns
    -------
    LanguageModel or RecurrentEncoder
        The model in eval mode, with ``.vocab``, ``.extra`` and (language models)
        ``.config``; a saved wrapped encoder comes back as a :class:`RecurrentEncoder`.

    Raises
    ------
    MemlensError
        When the file is missing, too large, not a memlens checkpoint, of another version,
        tampered or corrupt, or does not describe a valid model.
    """
    path = as_path(path, "path")
    device = resolve_device(device, "device", allow_none=False)
    check_input_file(path, "checkpoint", binary_limit())  # missing, special, huge: one line
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
        if isinstance(config, dict) and config.get("model") == ENCODER:
            if not isinstance(state, dict) or sum(
                    t.numel() for t in state.values()) != expected_parameters(config):
                raise MemlensError("weights do not match the encoder config")
            model = build_encoder(config)  # sizes checked before allocation
            model.load_state_dict(state)
            if vocab_d:
                model.set_vocab(Vocab.from_dict(vocab_d))
            model.extra = payload.get("extra", {})
            return model.to(device).eval()
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
