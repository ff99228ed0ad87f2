"""What the CLI's ``--model`` names: a memlens checkpoint, or the user's own Python builder.

* ``PATH.pt``: a memlens checkpoint (weights + config + vocabulary; loaded with
  ``torch.load(weights_only=True)``: a checkpoint never executes code).
* ``hf:DIR``: a Hugging Face Mamba / RWKV / xLSTM causal LM (a directory or a name that
  ``from_pretrained`` resolves; needs ``pip install 'memlens[hf]'``), through
  :func:`memlens.models.hf.from_hf`, with its own tokenizer: corpora are tokenised with it
  (:meth:`LoadedModel.read_corpus`).
* ``FILE.py:FUNCTION``: memlens imports the user's file and calls ``FUNCTION()``, which returns
  a model the protocol accepts (``memlens.wrap(...)``, a :class:`RecurrentEncoder`, or an
  object with an ``.encoder``). This runs the user's own code, because they named it.

``--vocab FILE`` (one symbol per line in id order, optionally ``symbol<TAB>count``) gives the
model a vocabulary, so that symbols are shown as words and ``freq:``/``words:``/``lexicon:``
classes work.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memlens.core.errors import MemlensError, UserCodeError
from memlens.core.files import as_path
from memlens.data.corpus import Corpus, load_corpus
from memlens.data.vocab import Vocab
from memlens.models.devices import resolve_device
from memlens.models.encoder import RecurrentEncoder, as_encoder
from memlens.protocol.usercode import register_user_file

SPEC_HELP = ("a memlens checkpoint (.pt), FILE.py:FUNCTION returning a wrapped model, or "
             "hf:DIR (a Hugging Face Mamba/RWKV/xLSTM causal LM)")


@dataclass
class LoadedModel:
    """A model named on the command line: the model, its protocol view and a description."""

    model: nn.Module
    encoder: RecurrentEncoder
    unit: str
    info: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab(self) -> Vocab | None:
        return self.encoder.vocab

    @property
    def arch(self) -> str:
        return str(self.info.get("arch", "model"))

    def read_corpus(self, path: str | os.PathLike, format: str = "text") -> Corpus:
        """Read a corpus for this model: in its unit, and through its own tokenizer for a
        Hugging Face model (a :class:`~memlens.models.hf.SubwordCorpus`: word tags on the
        first sub-token of each word)."""
        corpus = load_corpus(path, format, self.unit)
        tokenizer = self.encoder.tokenizer
        if tokenizer is None:
            return corpus
        from memlens.models.hf import tokenize_corpus

        return tokenize_corpus(corpus, tokenizer, self.encoder.vocab)


def is_python_spec(spec: str) -> bool:
    path, sep, func = str(spec).rpartition(":")
    return bool(sep) and path.endswith(".py") and func.isidentifier()


def _call_builder(spec: str) -> Any:
    path_s, _, func = str(spec).rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise MemlensError(f"model file not found: {path}")
    from memlens.core.files import check_input_file

    check_input_file(path, "model file (FILE.py)")  # the input gate: special, /proc, huge
    name = f"memlens_user_model_{abs(hash(str(path.resolve())))}"
    register_user_file(path)  # an error raised later in this code is the user's
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise MemlensError(f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.resolve().parent))  # the user's file may import siblings
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
    except MemlensError:
        raise
    except (Exception, SystemExit) as exc:
        raise UserCodeError.raised(f"file {path} (imported)", exc) from None
    builder = getattr(module, func, None)
    if not callable(builder):
        raise MemlensError(f"{path} defines no function {func!r}")
    try:
        return builder()
    except MemlensError:
        raise
    except (Exception, SystemExit) as exc:
        raise UserCodeError.raised(f"{path.name}:{func}()", exc) from None


def describe(encoder: RecurrentEncoder, path: str) -> dict[str, Any]:
    """model info for result.json: path, architecture, layers, sizes, input kind."""
    kinds = sorted({layer.kind for layer in encoder.layers})
    return {"path": str(path), "arch": "+".join(kinds), "layers": encoder.num_layers,
            "input": encoder.input_kind, "emb": encoder.input_size,
            "hidden": encoder.hidden_sizes[-1],
            "vocab_size": encoder.vocab_size if encoder.input_kind == "tokens" else None}


def load_model(spec: str | os.PathLike, vocab: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", unit: str | None = None) -> LoadedModel:
    """Load what ``--model`` names (see module docstring); attach ``--vocab`` if given.

    ``unit`` ("word"/"char") is how corpora are read for this model: a checkpoint records it;
    a user's model defaults to "word".
    """
    from memlens.models.checkpoint import load_checkpoint

    as_path(spec, "model spec")
    spec = os.fspath(spec)  # a str keeps its spelling ("hf:NAME", "FILE.py:FUNCTION")
    if vocab is not None:
        as_path(vocab, "vocab")
    device = resolve_device(device, "device", allow_none=False)
    if spec.startswith("hf:"):
        return _load_hf(spec, vocab, device, unit)
    if is_python_spec(spec):
        built = _call_builder(spec)
        try:
            encoder = as_encoder(built)
        except MemlensError:
            raise MemlensError(f"{spec} returned {type(built).__name__}, not a model memlens "
                               "can analyse: return memlens.wrap(embedding, rnn, vocab=...) "
                               "or a RecurrentEncoder") from None
        model: nn.Module = built
        info = describe(encoder, spec)
        extra: dict[str, Any] = {}
        model_unit = unit or "word"
    else:
        if spec.endswith(".py"):
            raise MemlensError(f"--model {spec}: name the function too, as FILE.py:FUNCTION")
        model = load_checkpoint(spec, "cpu")
        encoder = as_encoder(model)
        cfg = getattr(model, "config", {}) or {}
        info = {"path": spec, **{k: cfg[k] for k in ("arch", "layers", "emb", "hidden", "unit")
                                 if k in cfg}} if "arch" in cfg else describe(encoder, spec)
        extra = dict(getattr(model, "extra", {}) or {})
        model_unit = unit or cfg.get("unit") or "word"
    if vocab is not None:
        if encoder.input_kind != "tokens":
            raise MemlensError("--vocab: this model reads continuous vectors, not tokens")
        v = Vocab.read(vocab)
        encoder.set_vocab(v)
        if hasattr(model, "vocab") and model is not encoder:
            model.vocab = v
    model = model.to(device).eval()
    info["unit"] = model_unit
    return LoadedModel(model, encoder, model_unit, info, extra)


def _load_hf(spec: str, vocab, device, unit) -> LoadedModel:
    """``hf:DIR``: a Hugging Face recurrent causal LM with its own tokenizer (see
    :func:`memlens.models.hf.from_hf`)."""
    from memlens.models.hf import from_hf

    if not spec[3:]:
        raise MemlensError("--model hf: needs a directory or a model name (hf:DIR)")
    if unit == "char":
        raise MemlensError("a Hugging Face model reads text through its own tokenizer: "
                           "--unit char does not apply")
    encoder = from_hf(spec[3:])
    if vocab is not None:
        encoder.set_vocab(Vocab.read(vocab))
        encoder.set_tokenizer(None)  # the user's symbols, as given
    info = describe(encoder, spec)
    info["arch"] = f"hf-{encoder.model_type}"
    info["blocks"] = [lay.kind for lay in encoder.layers]  # e.g. mamba2, attention (hybrids)
    info["weights_dtype"] = encoder.weights_dtype  # as stored; analysed in float32 or float64
    encoder = encoder.to(device).eval()
    return LoadedModel(encoder, encoder, "word", info, {})
