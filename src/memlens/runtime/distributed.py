"""Sharded runs over ``torch.distributed``: one contiguous shard of the stream per process.

``torchrun --nproc-per-node N -m memlens gradients ...`` (or any call of
:func:`memlens.state_gradients` inside an initialised process group) cuts the stream of T
positions into N contiguous shards [T r / N, T (r+1) / N). Each rank warms its state up on the
W positions before its shard start (primal and tangents, nothing accumulated), accumulates the
targets of its shard, and the sums, counts, bootstrap block sums and class block sums are
all-reduced (gloo on CPU, NCCL on GPU). The pair set and the counts are exactly the single
stream's; the sums agree with it once W exceeds the model's effective memory (the default,
:func:`default_warmup`, is max(1000, 4 K) positions).

Errors: every collective step is preceded by an agreement (an all-reduced flag), so an error or
an interrupt on one rank makes the others stop with a one-line error instead of waiting.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memlens.core.errors import MemlensError
from memlens.core.limits import MAX_PROCESSES, env_int
from memlens.models.states import extract_states

OK, INTERRUPTED, FAILED = 0, 1, 2


def default_warmup(max_delay: int) -> int:
    """The default warm-up W of a shard: max(1000, 4 K) positions (docs/scaling.md)."""
    return max(1000, 4 * int(max_delay))


@dataclass(frozen=True)
class Group:
    """The default process group as memlens uses it: this process's rank, the number of
    processes and the device on which collective tensors live (cuda for NCCL)."""

    rank: int
    world: int
    device: torch.device

    def shard(self, total: int) -> tuple[int, int]:
        """This rank's contiguous shard [start, stop) of ``total`` positions."""
        return total * self.rank // self.world, total * (self.rank + 1) // self.world


def current() -> Group | None:
    """The initialised default process group, or None when this is a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    return Group(dist.get_rank(), dist.get_world_size(), device)


def launched() -> bool:
    """True when this process was started by torchrun (WORLD_SIZE in the environment)."""
    return "WORLD_SIZE" in os.environ


def world_size_env() -> int:
    """WORLD_SIZE as torchrun sets it (1 when unset), or a one-line error naming it."""
    if os.environ.get("WORLD_SIZE") is not None and not os.environ["WORLD_SIZE"].strip():
        raise MemlensError("the environment variable WORLD_SIZE is empty: unset it, or set "
                           f"it to the number of processes (1..{MAX_PROCESSES})")
    return env_int("WORLD_SIZE", 1, 1, MAX_PROCESSES)


def check_env() -> tuple[int, int, int]:
    """(WORLD_SIZE, RANK, LOCAL_RANK) of a torchrun launch, each checked (one line naming
    the variable instead of a traceback from torch.distributed): 1 <= WORLD_SIZE <= 65536,
    0 <= RANK, LOCAL_RANK < WORLD_SIZE; MASTER_PORT (when set) a port, MEMLENS_DIST_TIMEOUT
    (when set) a positive number of seconds."""
    world = world_size_env()
    ranks = []
    for name in ("RANK", "LOCAL_RANK"):
        raw = os.environ.get(name)
        if raw is not None and not raw.strip():
            raise MemlensError(f"the environment variable {name} is empty: set it to this "
                               f"process's rank (0..{world - 1})")
        ranks.append(env_int(name, 0, 0, world - 1))
    if os.environ.get("MASTER_PORT") is not None:
        env_int("MASTER_PORT", 0, 1, 65535)
    dist_timeout()
    return world, ranks[0], ranks[1]


def dist_timeout() -> float:
    """MEMLENS_DIST_TIMEOUT seconds (default a week) of the collective operations."""
    raw = os.environ.get("MEMLENS_DIST_TIMEOUT")
    if raw is None or not raw.strip():
        return float(7 * 24 * 3600)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1e9):
        raise MemlensError("the environment variable MEMLENS_DIST_TIMEOUT must be a positive "
                           f"number of seconds (at most 1e9), got {raw!r:.60}")
    return value


def init_from_env(device: torch.device, timeout_s: float | None = None) -> torch.device:
    """Under torchrun: initialise the default process group (NCCL for a cuda device, gloo
    otherwise) and return this rank's device (``cuda:LOCAL_RANK``); else return ``device``."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return device
    _, _, local_rank = check_env()
    if not dist.is_available():
        raise MemlensError("torchrun was used but this torch has no torch.distributed")
    if timeout_s is None:
        timeout_s = dist_timeout()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return device


def finish(timeout_s: float = 30.0) -> None:
    """Leave together, then destroy the default process group if one is initialised.

    A rank that tears down its gloo connections while a peer still uses them can make the peer
    abort at exit ("terminate called without an active exception", SIGABRT; seen once in the
    2-process test). On gloo the ranks therefore meet at a monitored barrier first; a rank that
    does not arrive within ``timeout_s`` (it failed) does not hold the others (no barrier on
    other backends, whose barrier cannot be bounded)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
    except RuntimeError:  # a rank did not arrive: it failed, and says so itself
        pass
    finally:
        dist.destroy_process_group()


def agree(group: Group, error: BaseException | None = None, what: str = "") -> None:
    """All ranks report whether they failed; call on every rank at the same point.

    With ``error`` (this rank's exception) it returns after the agreement and the caller
    re-raises. Without, it raises when another rank failed (KeyboardInterrupt for an
    interrupt, MemlensError otherwise), so no rank waits for a rank that has stopped."""
    import torch.distributed as dist

    code = OK if error is None else (INTERRUPTED if isinstance(error, KeyboardInterrupt)
                                     else FAILED)
    flag = torch.tensor([code], dtype=torch.int64, device=group.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    worst = int(flag.item())
    if error is not None or worst == OK:
        return
    where = f" {what}" if what else ""
    if worst == INTERRUPTED:
        raise KeyboardInterrupt(f"another process was interrupted{where}")
    raise MemlensError(f"another process of the {group.world} failed{where} (its message "
                       "says why)")


@contextmanager
def agreed(group: Group | None, what: str = "") -> Iterator[None]:
    """Run the block, then :func:`agree` on its outcome on every rank (no-op without a group):
    a failure on this rank is reported to the others and re-raised; a failure elsewhere
    raises here after the block succeeded."""
    if group is None:
        yield
        return
    try:
        yield
    except BaseException as exc:
        agree(group, exc, what)
        raise
    agree(group, None, what)


def broadcast_object(group: Group, obj: object, src: int = 0) -> object:
    """``obj`` of rank ``src`` on every rank."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src, device=group.device if
                               group.device.type == "cuda" else None)
    return box[0]


def all_reduce_arrays(group: Group, arrays: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """Element-wise sums over the ranks of numpy arrays (None stays None): one all-reduce per
    dtype (float64 and int64), in place of many small ones."""
    import torch.distributed as dist

    out: list[np.ndarray | None] = list(arrays)
    for kind, dtype in (("f", torch.float64), ("i", torch.int64)):
        idx = [i for i, a in enumerate(arrays) if a is not None and a.dtype.kind == kind]
        if not idx:
            continue
        flat = torch.cat([torch.from_numpy(np.ascontiguousarray(arrays[i])).reshape(-1)
                          .to(dtype) for i in idx]).to(group.device)
        dist.all_reduce(flat)
        flat = flat.cpu().numpy()
        at = 0
        for i in idx:
            n = arrays[i].size
            out[i] = flat[at:at + n].reshape(arrays[i].shape).astype(arrays[i].dtype)
            at += n
    return out


def rank_path(path: str | Path, rank: int) -> Path:
    """The per-rank variant of a checkpoint path: ``.out.partial.pt`` ->
    ``.out.partial.rank<r>.pt``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.rank{rank}{p.suffix}")


def extract_states_sharded(encoder, ids, views, warmup: int = 1000,
                           group: Group | None = None, **kwargs) -> dict:
    """:func:`memlens.models.states.extract_states` with the rows sharded over the ranks
    of the process group: each rank extracts its contiguous shard of positions, starting from
    a zero state ``warmup`` positions before the shard start (those rows are dropped), and the
    shards are all-gathered, so every rank returns the full {view: N x D float32} arrays.
    Without a process group it is ``extract_states`` itself. Used by ``memlens signatures``
    (:func:`memlens.analyses.signatures.study.run_study`)."""
    import torch.distributed as dist

    group = group or current()
    if group is None:
        return extract_states(encoder, ids, views, **kwargs)
    ids = np.asarray(ids)
    n = ids.shape[0]
    start, stop = group.shard(n)
    first = max(0, start - max(0, int(warmup)))
    local = {}
    if stop > start:
        local = extract_states(encoder, ids[first:stop], views, **kwargs)
    width = -(-n // group.world) + 1  # rows of the largest shard (padding for all_gather)
    out = {}
    for v in views:
        dims = torch.tensor([local[v].shape[1] if local else 0], dtype=torch.int64,
                            device=group.device)
        dist.all_reduce(dims, op=dist.ReduceOp.MAX)
        d = int(dims.item())
        mine = torch.zeros(width, d, dtype=torch.float32)
        if local:
            mine[: stop - start] = torch.from_numpy(np.asarray(local[v][start - first:]))
        parts = [torch.empty_like(mine, device=group.device) for _ in range(group.world)]
        dist.all_gather(parts, mine.to(group.device))
        rows = [(n * r // group.world, n * (r + 1) // group.world) for r in range(group.world)]
        out[v] = np.concatenate([p[: b - a].cpu().numpy() for p, (a, b) in zip(parts, rows)])
    return out
