"""What several sub-commands share: the model options and reading input-vector files."""

from __future__ import annotations

import numpy as np

from memlens.errors import MemlensError


def add_model_arguments(p) -> None:
    """--model, --vocab and --unit: the same on every command that analyses a model."""
    from memlens.models.loading import SPEC_HELP

    p.add_argument("--model", required=True, help=SPEC_HELP)
    p.add_argument("--vocab", help="the model's symbols, one per line in id order (optionally "
                   "symbol<TAB>count); needed for your own token models")
    p.add_argument("--unit", choices=["word", "char"], help="read corpora as words or "
                   "characters (default: the checkpoint's unit; word for your own models)")


def load_vectors(path: str, size: int, max_rows: int | None = None):
    """T x I input vectors from a .npy file (never unpickled)."""
    if not str(path).endswith(".npy"):
        raise MemlensError(f"this model reads continuous vectors: --corpus must be a .npy file "
                           f"of T x {size} floats, got {path}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise MemlensError(f"cannot read input vectors {path}: {str(exc)[:200]}") from None
    if arr.ndim != 2 or arr.shape[1] != size or arr.dtype.kind != "f":
        raise MemlensError(f"{path}: expected a T x {size} float array, got {arr.dtype} "
                           f"{arr.shape}")
    return np.array(arr[:max_rows] if max_rows else arr, dtype=np.float64)
