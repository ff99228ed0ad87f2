"""Loading a Hugging Face recurrent LM and turning it into a :class:`RecurrentEncoder`.

:func:`load_hf` reads a directory (or a name ``from_pretrained`` resolves): config first (the
model type must be registered, :mod:`.registry`), then the weights and the tokenizer.
:func:`from_hf` asks the family adapter for the layers and the head, takes the input embeddings
and builds the vocabulary from the tokenizer (:func:`hf_symbols`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memlens.core.errors import MemlensError
from memlens.data.vocab import Vocab
from memlens.models.encoder import RecurrentEncoder
from memlens.models.hf.block import _require_transformers
from memlens.models.hf.files import (
    TOKENIZER_FILES,
    check_config_size,
    check_hf_dir,
    resolve_hf_spec,
    stored_dtype,
)
from memlens.models.hf.own_forward import OwnForward
from memlens.models.hf.registry import FAMILIES, family_of, model_type_of, unsupported


def hf_symbols(tokenizer, size: int) -> list[str]:
    """One distinct display symbol per embedding row: the decoded token; the raw token where
    two ids decode alike; ``<id:N>`` for rows beyond the tokenizer."""
    symbols: list[str] = []
    seen: set[str] = set()
    n = len(tokenizer) if tokenizer is not None else 0
    for i in range(size):
        cands = []
        if i < n:
            try:
                cands.append(tokenizer.decode([i]))
            except Exception:  # noqa: BLE001 - a tokenizer without this id: fall through
                pass
            raw = tokenizer.convert_ids_to_tokens(i)
            if raw is not None:
                cands.append(str(raw))
        cands.append(f"<id:{i}>")
        sym = next(c for c in cands if c and c not in seen)
        seen.add(sym)
        symbols.append(sym)
    return symbols


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def upcast_low_precision(model: nn.Module) -> str:
    """Upcast a model's float16 / bfloat16 parameters and buffers to float32, in place
    (exact: every low-precision value is a float32 value). Returns the dtype(s) the model had
    ("bfloat16", "float32", "bfloat16+float32", ...)."""
    dtypes = {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()}
    if dtypes & set(LOW_PRECISION):
        model.float()
    return "+".join(sorted(str(d).removeprefix("torch.") for d in dtypes)) or "float32"


def from_hf(model_or_dir: nn.Module | str | os.PathLike, tokenizer: Any = None,
            log: Callable[[str], None] = _stderr) -> RecurrentEncoder:
    """A Hugging Face recurrent causal LM of a registered family as a :class:`RecurrentEncoder`.

    The families (Mamba, RWKV, xLSTM, ...) are those of :mod:`memlens.models.hf.registry`.
    Parameters are the model's own (shared, not copied). Needs the optional ``transformers``
    package (``pip install 'memlens[hf]'``).

    Parameters
    ----------
    model_or_dir : torch.nn.Module or str or os.PathLike
        A loaded ``MambaForCausalLM`` / ``RwkvForCausalLM`` / ``xLSTMForCausalLM`` (or its
        base model, without a head), or a directory or name that ``from_pretrained``
        resolves (weights via ``AutoModelForCausalLM``, tokenizer via ``AutoTokenizer`` from
        the same place when it has one).
    tokenizer : object, optional
        A tokenizer to use instead (default None); it gives the vocabulary: the symbols are
        the decoded tokens.
    log : callable, optional
        Where the one-line precision notice goes (default: stderr). Low-precision weights
        (float16, bfloat16; a directory's as its safetensors headers store them) are
        analysed in float32: a loaded model is upcast in place (exact), a directory is read
        into float32; ``log`` gets one line saying so, and the encoder's ``weights_dtype``
        records the stored dtype.

    Returns
    -------
    RecurrentEncoder
        An encoder in eval mode whose layers are one :class:`HFBlockLayer` per block
        (readouts: ``"hidden"``, the default, plus the state components; see
        :mod:`memlens.models.hf`), with ``head`` (final norm + LM head) for context
        ablation, ``tokenizer`` and ``model_type`` attached.

    Raises
    ------
    MemlensError
        For any other architecture (a transformer, a bidirectional encoder; the message
        names what is supported), input embeddings that are not an ``nn.Embedding``, or a
        model or directory that cannot be loaded.
    """
    if isinstance(model_or_dir, (str, os.PathLike)):
        model, tok, stored = _load(model_or_dir)
        tokenizer = tokenizer if tokenizer is not None else tok
        what = f"hf:{model_or_dir}"
    elif isinstance(model_or_dir, nn.Module):
        model = model_or_dir
        family_of(model)  # an unsupported model is refused before it is touched
        stored, what = upcast_low_precision(model), type(model).__name__
    else:
        raise MemlensError(f"from_hf() needs a transformers model or a directory, got "
                           f"{type(model_or_dir).__name__}")
    model.eval()
    family = family_of(model)
    backbone, layers, head = family.parts(model)
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise MemlensError(f"the model's input embeddings are a {type(emb).__name__}, not an "
                           "nn.Embedding")
    vocab = None
    if tokenizer is not None:
        vocab = Vocab.from_symbols(hf_symbols(tokenizer, emb.num_embeddings), unk=None)
    enc = RecurrentEncoder(emb, layers, vocab=vocab, head=head).eval()
    enc.set_tokenizer(tokenizer)
    enc.model_type = model_type_of(model)
    enc.weights_dtype = stored
    if family.own_forward:
        enc.own_forward = OwnForward(backbone, layers)
    loaded = isinstance(model_or_dir, nn.Module)  # a float64 model stays float64
    if "float16" in stored or (stored != "float32" and not loaded):
        how = "upcast in place" if loaded else "read as float32"
        log(f"memlens: note: {what} has {stored} weights: analysed in float32 ({how}; the "
            f"numbers are those of the {stored} values)")
    return enc


def _read_config(transformers, spec: str, local: bool):
    try:
        return transformers.AutoConfig.from_pretrained(spec)
    except Exception as exc:  # noqa: BLE001 - transformers' errors of a bad config
        if not local:  # a name that is no directory here and that the hub did not resolve
            raise MemlensError(f"hf:{spec}: no such directory (nor a model the Hugging Face "
                               f"hub resolves: {_first_line(exc)})") from None
        raise MemlensError(f"hf:{spec}: cannot read a transformers config: "
                           f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def load_hf(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """(model, tokenizer or None) from a directory or a name ``from_pretrained`` resolves.

    A directory's files pass the input gate first (:mod:`memlens.models.hf.files`: special
    and huge files, pickle-only, truncated or garbage weights are refused); the config's
    architecture and the size it implies are checked before any weights are read; the
    weights are read from safetensors only (never unpickled), into float32."""
    model, tokenizer, _ = _load(path)
    return model, tokenizer


def _load(path: str | os.PathLike) -> tuple[nn.Module, Any, str]:
    """:func:`load_hf` and the floating dtype(s) the weights were stored in."""
    transformers = _require_transformers()
    transformers.utils.logging.disable_progress_bar()  # no bars or warnings among memlens'
    transformers.utils.logging.set_verbosity_error()  # own lines (errors stay one line)
    spec = str(path)
    root = resolve_hf_spec(spec)
    values, stored = None, "float32"
    if root is not None:
        _, values = check_hf_dir(root, spec)
        stored = stored_dtype(root, spec)
    config = _read_config(transformers, spec, root is not None)
    mt = getattr(config, "model_type", "?")
    if mt not in FAMILIES:
        archs = ",".join(getattr(config, "architectures", None) or []) or mt
        raise unsupported(f"hf:{spec}: {mt} ({archs})")
    check_config_size(config, spec, values)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            spec, config=config, dtype=torch.float32, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - transformers' and safetensors' load errors
        raise MemlensError(f"hf:{spec}: cannot load the model: {_first_line(exc)}") from None
    tokenizer = None
    if root is None or any((root / f).exists() for f in TOKENIZER_FILES):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(spec)
        except Exception as exc:  # noqa: BLE001 - a broken tokenizer file
            if root is not None:
                raise MemlensError(f"hf:{spec}: cannot read the tokenizer: "
                                   f"{_first_line(exc)}") from None
            tokenizer = None
    if root is None:  # a hub model: the dtype its config says its weights are stored in
        stored = str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    return model, tokenizer, stored
