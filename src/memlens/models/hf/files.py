"""The files of an ``hf:DIR`` model, checked before transformers reads any of them.

:func:`check_hf_dir` is the input gate of a Hugging Face model directory:

* a missing directory is "no such directory" (not transformers' "Repo id must be in the
  form ..."); a path that is not a directory is refused;
* every file transformers reads (``config.json``, ``*.safetensors``, the shard index, the
  tokenizer files) passes :func:`memlens.core.files.check_input_file`: a FIFO, a device, a
  ``/proc`` file or a file larger than the input limit is refused by ``stat``;
* the weights must be safetensors: pickle-only weights (``pytorch_model.bin``, ``*.pt``,
  ``*.ckpt``) are refused (memlens never unpickles); every safetensors header is read and
  checked (:func:`read_safetensors_header`: a truncated or garbage file is one line);
* the parameters the config implies (its sizes: hidden, layers, vocabulary, intermediate,
  state sizes) are counted on the ``meta`` device, allocating nothing, and refused when they
  would not fit in the memory budget (float32) or when the weight files hold fewer values
  than that (a truncated or foreign checkpoint), before the model is built.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

from memlens.core.errors import MemlensError
from memlens.core.files import binary_limit, check_input_file, open_input, read_json
from memlens.core.limits import check_memory
from memlens.core.optional import require

TEXT_FILES = ("config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model",
              "model.safetensors.index.json", "chat_template.jinja", "chat_template.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".h5", ".msgpack")
MAX_HEADER = 100 << 20           # the safetensors library's own bound on a header
MAX_HF_LAYERS = 4096             # a config with more layers is refused before it is built
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1,
               "F8_E5M2": 1, "F8_E8M0": 1}
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "num_blocks")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_repo_id(spec: str) -> bool:
    """True for ``name`` or ``org/name`` (what the Hugging Face hub could resolve)."""
    return bool(_REPO_ID.match(spec)) and ".." not in spec and "--" not in spec \
        and not spec.endswith(".")


def resolve_hf_spec(spec: str) -> Path | None:
    """The local directory ``spec`` names, None for a hub name with no local directory, or a
    one-line error for a missing directory or a path that is not a directory."""
    p = Path(spec)
    if p.is_dir():
        return p
    if p.exists() or p.is_symlink():
        raise MemlensError(f"hf:{spec}: not a directory (hf:DIR names a Hugging Face model "
                           "directory)")
    if looks_like_repo_id(spec):
        return None
    raise MemlensError(f"hf:{spec}: no such directory")


def read_safetensors_header(path: Path, what: str) -> dict[str, tuple[str, list[int]]]:
    """{tensor name: (dtype, shape)} of a safetensors file, every entry checked against the
    file's size (a truncated file, a garbage header, an unknown dtype or offsets outside the
    data are one-line errors); nothing but the header is read."""
    with open_input(path, what, binary_limit()) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise MemlensError(f"{what} {path} is truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise MemlensError(f"{what} {path} is not a safetensors file (its header length "
                               f"{n} exceeds the file)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MemlensError(f"{what} {path} is not a safetensors file (garbage header)"
                           ) from None
    if not isinstance(header, dict):
        raise MemlensError(f"{what} {path} is not a safetensors file (garbage header)")
    data = size - 8 - n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        out[name] = _check_entry(path, what, name, entry, data)
    return out


def _check_entry(path: Path, what: str, name: str, entry: Any, data: int
                 ) -> tuple[str, list[int]]:
    """(dtype, shape) of one header entry, or a one-line error."""
    ok = isinstance(entry, dict) and entry.get("dtype") in DTYPE_BYTES
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2 \
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in [*shape, *offsets])
    if not ok:
        raise MemlensError(f"{what} {path}: tensor {name[:60]!r} has a malformed header entry")
    begin, end = offsets
    if not begin <= end <= data:
        raise MemlensError(f"{what} {path} is truncated or corrupt: tensor {name[:60]!r} lies "
                           f"beyond its {data} data bytes")
    if math.prod(shape) * DTYPE_BYTES[entry["dtype"]] != end - begin:
        raise MemlensError(f"{what} {path}: tensor {name[:60]!r} of shape {shape} does not "
                           f"fill its {end - begin} bytes")
    return entry["dtype"], shape


def _weight_files(root: Path, spec: str) -> list[Path]:
    """The safetensors files of ``root`` (a sharded model's shards from its index); pickle-
    only weights and a directory without weights are refused."""
    index = root / "model.safetensors.index.json"
    if index.exists() or index.is_symlink():
        doc = read_json(index, f"hf:{spec} weight index")
        names = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(names, dict) or not all(
                isinstance(v, str) and "/" not in v and v.endswith(".safetensors")
                for v in names.values()):
            raise MemlensError(f"hf:{spec}: malformed weight index {index}")
        return [root / f for f in sorted(set(names.values()))]
    files = sorted(root.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(f.name for f in root.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise MemlensError(f"hf:{spec}: the weights are pickle files ({pickles[0]}), which "
                           "memlens never loads (they can run code): save the model with "
                           "safetensors (model.save_pretrained(dir) does by default)")
    raise MemlensError(f"hf:{spec}: no weights (model.safetensors) in the directory")


def check_hf_dir(root: Path, spec: str) -> tuple[dict, int]:
    """Gate every file of the model directory ``root`` (module docstring); returns (the
    config as read, the number of values the weight files hold)."""
    config_file = root / "config.json"
    config = read_json(config_file, f"hf:{spec} config")
    if not isinstance(config, dict):
        raise MemlensError(f"hf:{spec}: config.json is not a JSON object")
    for name in TEXT_FILES:
        f = root / name
        if f.exists() or f.is_symlink():
            check_input_file(f, f"hf:{spec} {name}")
    values = 0
    for f in _weight_files(root, spec):
        header = read_safetensors_header(f, f"hf:{spec} weights")
        values += sum(math.prod(shape) for _, shape in header.values())
    return config, values


SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                      "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0"}


def stored_dtype(root: Path, spec: str) -> str:
    """The floating dtype(s) the weight files of ``root`` store, from their headers:
    "bfloat16", "float32", or several joined by "+" ("bfloat16+float32")."""
    found = set()
    for f in _weight_files(root, spec):
        for dtype, _ in read_safetensors_header(f, f"hf:{spec} weights").values():
            if dtype in SAFETENSORS_DTYPES:
                found.add(SAFETENSORS_DTYPES[dtype])
    return "+".join(sorted(found)) or "float32"


def check_config_size(config: Any, spec: str, weight_values: int | None = None) -> int:
    """The parameter count a transformers ``config`` implies, counted on the ``meta`` device
    (nothing allocated) after its layer count is bounded; refused (one line) when the model
    would not fit in the memory budget as float32 or when the weight files hold fewer values
    (``weight_values``) than that. Returns the count."""
    import torch

    transformers = require("transformers")
    for key in LAYER_KEYS:
        layers = getattr(config, key, None)
        if isinstance(layers, int) and not 0 <= layers <= MAX_HF_LAYERS:
            raise MemlensError(f"hf:{spec}: config {key}={layers} is outside 0..{MAX_HF_LAYERS}")
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        count = sum(p.numel() for p in model.parameters())
    except Exception as exc:  # noqa: BLE001 - transformers' own checks of a config
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
            type(exc).__name__
        raise MemlensError(f"hf:{spec}: the config does not describe a model that can be "
                           f"built: {why}") from None
    check_memory(4 * count, f"the model hf:{spec} ({count:,} parameters in float32)")
    if weight_values is not None and weight_values < count:
        raise MemlensError(f"hf:{spec}: the weight files hold {weight_values:,} values, fewer "
                           f"than the {count:,} parameters the config implies (truncated, or "
                           "the weights of another model)")
    return count


__all__ = ["check_config_size", "check_hf_dir", "looks_like_repo_id", "read_safetensors_header",
           "resolve_hf_spec", "stored_dtype"]
