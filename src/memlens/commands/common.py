"""What several sub-commands share: the model options, reading input-vector files, and the
output directory of a run that may be sharded over torchrun processes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from memlens.errors import MemlensError

T = TypeVar("T")


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


_QUIET = [False]  # set by sharded_output on ranks other than 0


def train_into(out: str, overwrite: bool, resume: bool, fit: Callable[[], T]) -> T:
    """Run ``fit()``, a training that writes the checkpoint OUT and keeps its per-epoch state
    in :func:`memlens.training.progress_path` (OUT), with OUT claimed as memlens output (refused
    if it is not one, unless ``overwrite``); an interrupt names the saved state and says how to
    continue (``memlens train`` and ``memlens train-asr``)."""
    from memlens.io import claim_output
    from memlens.training import progress_path

    with claim_output(out, overwrite, resume, directory=False) as path:
        try:
            return fit()
        except KeyboardInterrupt:
            partial = progress_path(path)
            if partial.exists():
                raise KeyboardInterrupt(f"interrupted; finished epochs are saved in {partial}; "
                                        "rerun with --resume to continue") from None
            raise


def log(msg: str) -> None:
    """A message on stderr, from rank 0 only inside :func:`sharded_output`."""
    if not _QUIET[0]:
        print(msg, file=sys.stderr)


@contextlib.contextmanager
def sharded_output(out: str, overwrite: bool, resume: bool, device: torch.device
                   ) -> Iterator[tuple[Path, torch.device, object]]:
    """Claim ``--out`` for a command that shards its work under torchrun.

    Yields (out, device, group): without torchrun, ``io.claim_output`` as every command uses it
    and group None. Under torchrun it initialises the process group (gloo on CPU, NCCL on
    GPU; ``device`` becomes cuda:LOCAL_RANK), only rank 0 claims OUT (the others learn its
    path, and stop with a one-line error when rank 0 could not claim it), and the group is
    destroyed on the way out. Inside, :func:`log` is silent on ranks other than 0.
    """
    from memlens import distributed
    from memlens.io import claim_output

    created = distributed.launched() and distributed.current() is None
    device = distributed.init_from_env(device)
    group = distributed.current()
    try:
        with contextlib.ExitStack() as stack:
            claimed, err = None, None
            if group is None or group.rank == 0:
                try:
                    claimed = stack.enter_context(claim_output(out, overwrite, resume))
                except BaseException as exc:
                    if group is None:
                        raise
                    err = exc
            if group is not None:
                distributed.agree(group, err, "checking --out")
                if err is not None:
                    raise err
                claimed = Path(distributed.broadcast_object(group, str(claimed)))
            _QUIET[0] = group is not None and group.rank != 0
            yield claimed, device, group
    finally:
        _QUIET[0] = False
        if created:
            distributed.finish()
