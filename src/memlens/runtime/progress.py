"""THE progress, checkpoint, resume, fingerprint and interrupt mechanism of memlens.

A long loop (positions of a stream, batches, signatures, epochs) runs like this::

    ck = RunCheckpoint(opts.path, fingerprint(settings, ids, model), opts.every, kind="ablation")
    done, state = 0, fresh_state()
    if opts.resume:
        state = ck.load(like=state)                  # refuses foreign or damaged files
        done = int(state["done"])
    end = stop_point(done, total, opts.stop_after)
    with interrupt_guard(ck.enabled) as guard, progress_bar(total, show, "ablation",
                                                             initial=done) as bar:
        while done < end and not guard.requested:
            ... one item ...; done += 1; bar.update(1)
            if ck.due():
                ck.save(payload(done))
        if done < total:                             # interrupted or stop_after
            raise ck.stop(payload(done), done, total, unit="batches")
    ck.finish(keep=opts.keep, payload=payload(done) if opts.keep else None)

* :func:`fingerprint`: SHA-256 over settings (canonical JSON-like encoding), arrays, tensors,
  model weights and file contents: what must not change between a run and its resumption.
* :class:`RunCheckpoint`: one file, written atomically, holding the payload (a dict of arrays
  and scalars), the run's ``kind`` and fingerprint and a SHA-256 integrity digest. ``*.npz``
  files hold flat dicts of numpy arrays and scalars (``np.load(allow_pickle=False)``); other
  names are ``torch.save`` archives of nested dicts / lists of tensors and scalars, read with
  ``torch.load(weights_only=True)`` after a zip-bomb check. Nothing is ever unpickled.
  Nothing but a memlens checkpoint is ever replaced or deleted at its name: a user's file, a
  directory or a symbolic link there is refused with one line (:func:`check_checkpoint_path`;
  :func:`check_scratch` checks every checkpoint name beside an output before a run starts).
* :func:`interrupt_guard`: SIGINT / SIGTERM only set a flag while the loop runs, so the loop
  stops at its next safe point, saves and raises :class:`Interrupted`; a second signal while
  it saves does not kill the save (every atomic write holds signals until the file is
  complete: :func:`memlens.core.signals.deferred_interrupts`).
* :func:`progress_bar`: a tqdm bar on stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import stat
import sys
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from memlens.core.errors import MemlensError
from memlens.core.files import atomic_path
from memlens.core.signals import deferred_interrupts

FORMAT = "memlens-run-checkpoint"
VERSION = 1
META = "__memlens__"          # the reserved key of the metadata in a checkpoint file
# the formats of the per-analysis checkpoints written before this module (refused with a
# clear message: their fingerprints and digests are computed differently)
LEGACY_FORMATS = ("memlens-gradients-partial", "memlens-train-partial",
                  "memlens-train-asr-partial")
MAX_EXPANSION = 4             # declared bytes per byte of the file (zip-bomb guard)


class Interrupted(KeyboardInterrupt):
    """Raised after an interrupt (SIGINT / SIGTERM, or ``stop_after``) once the progress has
    been saved: ``checkpoint`` (the path), ``done`` of ``total`` items (``position`` is the
    same number). The message says where the progress is and how to continue."""

    def __init__(self, checkpoint: str | os.PathLike, done: int, total: int,
                 unit: str = "items", head: str | None = None):
        head = head or f"interrupted after {done} of {total} {unit}"
        super().__init__(f"{head}; progress saved to {checkpoint}; rerun with --resume to "
                         "continue")
        self.checkpoint, self.done, self.total = str(checkpoint), done, total

    @property
    def position(self) -> int:
        return self.done


# -- fingerprints and digests --------------------------------------------------------------------
def _feed(h, part: Any) -> None:
    """Add one part to the hash ``h``: a type tag, then a canonical encoding (dict items in
    key order, lists and tuples alike, arrays and tensors as dtype, shape and raw bytes)."""
    torch = sys.modules.get("torch")
    if part is None or isinstance(part, (bool, int, float, str)):
        h.update(b"j" + json.dumps(part).encode() + b";")
    elif isinstance(part, (bytes, bytearray, memoryview)):
        h.update(b"b%d;" % len(part) + bytes(part))
    elif isinstance(part, np.generic):
        _feed(h, part.item())
    elif isinstance(part, np.ndarray):
        a = np.ascontiguousarray(part)
        if a.dtype.hasobject:
            raise TypeError("object arrays cannot be fingerprinted")
        h.update(f"a{a.dtype.str}{a.shape};".encode() + a.tobytes())
    elif torch is not None and isinstance(part, torch.Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif torch is not None and isinstance(part, torch.nn.Module):
        _feed(h, dict(part.state_dict()))
    elif isinstance(part, dict):
        h.update(b"d%d;" % len(part))
        for key in sorted(part, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, key)
            _feed(h, part[key])
    elif isinstance(part, (list, tuple)):
        h.update(b"l%d;" % len(part))
        for item in part:
            _feed(h, item)
    elif isinstance(part, os.PathLike):
        p = Path(part)
        if not p.is_file():
            h.update(b"f-;")
            return
        h.update(b"f;")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    elif dataclasses.is_dataclass(part) and not isinstance(part, type):
        _feed(h, dataclasses.asdict(part))
    else:
        raise TypeError(f"cannot fingerprint a {type(part).__name__}")


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts``: what identifies a run, so that a checkpoint is resumed only
    by the run that wrote it.

    Parts: None, bool, int, float, str (as JSON), bytes, numpy arrays and scalars, torch tensors
    (dtype, shape, bytes), a torch module (its state_dict: names and tensors), dicts (in key
    order, so insertion order does not matter), lists / tuples, dataclasses (as dicts) and
    paths (``os.PathLike``: the file's content, not its name; a missing file counts as absent).
    Stable across processes and machines of the same byte order.
    """
    h = hashlib.sha256()
    h.update(b"memlens-fingerprint-1;")
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def stop_point(done: int, total: int, stop_after: int | None) -> int:
    """Where this call stops: ``total``, or ``done + stop_after`` when that comes first."""
    return total if stop_after is None else min(total, done + max(0, int(stop_after)))


def partial_path(out: str | os.PathLike, suffix: str = ".pt") -> Path:
    """The checkpoint beside an output: ``.<name>.partial<suffix>`` (``.npz`` for flat numpy
    payloads, ``.pt`` for torch ones)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial{suffix}"


# -- whose file is at a checkpoint's name ----------------------------------------------------------
MAX_META = 1 << 20  # bytes of a checkpoint's metadata read to recognise it


def is_run_checkpoint(path: str | os.PathLike) -> bool:
    """True for a regular file (not a symbolic link) that memlens wrote as a run checkpoint:
    an ``.npz`` holding the metadata entry of this format, a torch archive whose pickle names
    it, or a checkpoint of an earlier memlens version (:data:`LEGACY_FORMATS`, the ablation
    ``.npz`` of fingerprint / done / nll). Reads only the small metadata, never unpickles."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            meta = infos.get(f"{META}.npy")
            if meta is not None:
                if meta.file_size > MAX_META:
                    return False
                with zf.open(meta) as fh:
                    doc = json.loads(str(np.lib.format.read_array(fh, allow_pickle=False)))
                return isinstance(doc, dict) and doc.get("format") == FORMAT
            if {"fingerprint.npy", "done.npy", "nll.npy"} <= set(infos):
                return True  # the ablation checkpoint written before this module
            pkl = [i for name, i in infos.items() if name.endswith("data.pkl")]
            if len(pkl) != 1 or pkl[0].file_size > 64 * MAX_META:
                return False
            data = zf.read(pkl[0])
        return any(f.encode() in data for f in (FORMAT, *LEGACY_FORMATS))
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile,
            RecursionError):
        return False


def _stamp(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def check_checkpoint_path(path: str | os.PathLike, contents: bool = True,
                          written: tuple | None = None) -> None:
    """Refuse (one line naming the file and saying to move it) to write, read or delete a
    checkpoint at ``path`` when a symbolic link, a directory or a special file (FIFO, device,
    socket) is there, or (``contents``) a file that is not a memlens checkpoint
    (:func:`is_run_checkpoint`): a user's file at that name is never replaced or deleted.
    Nothing there: fine. ``written``: the stamp of the file this run saved last (it is not
    read again)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except (OSError, ValueError) as exc:
        raise MemlensError(f"cannot check the checkpoint {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise MemlensError(f"{path} is a symbolic link where memlens keeps a checkpoint; "
                           "memlens does not write, read or delete through it: move it away")
    if stat.S_ISDIR(st.st_mode):
        raise MemlensError(f"{path} is a directory where memlens keeps a checkpoint; memlens "
                           "does not replace it: move it away")
    if not stat.S_ISREG(st.st_mode):
        raise MemlensError(f"{path} is not a regular file (a FIFO, device or socket) where "
                           "memlens keeps a checkpoint; memlens does not read, replace or delete "
                           "it: move it away")
    if contents and _stamp(st) != written and not is_run_checkpoint(path):
        raise MemlensError(f"{path} is not a memlens checkpoint, but memlens keeps its progress "
                           "under that name; memlens does not replace or delete it: move it away")


SCRATCH_SUFFIXES = (".pt", ".npz")  # the two checkpoint formats (torch, NumPy)


def scratch_paths(out: str | os.PathLike,
                  suffixes: tuple[str, ...] = SCRATCH_SUFFIXES) -> list[Path]:
    """The checkpoint names memlens may use beside the output ``out`` that are taken now:
    ``.<name>.partial<suffix>`` and its per-rank variants ``.<name>.partial.rank<r><suffix>``
    for each suffix in ``suffixes`` (anything there, links included)."""
    out = Path(out)
    prefix = f".{out.name}.partial"
    if not suffixes:
        return []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    ends = "|".join(re.escape(s) for s in suffixes)
    name = re.compile(re.escape(prefix) + rf"(\.rank\d+)?({ends})")
    return [out.parent / n for n in sorted(names) if name.fullmatch(n)]


def check_scratch(out: str | os.PathLike, resume: bool = False,
                  suffixes: tuple[str, ...] = SCRATCH_SUFFIXES) -> None:
    """Before a run on ``out`` starts: every checkpoint name beside it that the run may use
    (:func:`scratch_paths` with the ``suffixes`` of its checkpoint format; all by default)
    is free or holds a memlens checkpoint (:func:`check_checkpoint_path`); a user's file, a
    directory, a special file or a symbolic link there is refused with one line. With
    ``resume`` a file's contents are left to :meth:`RunCheckpoint.load` (which refuses a
    foreign or damaged one with its own message, and writes nothing)."""
    for path in scratch_paths(out, suffixes):
        check_checkpoint_path(path, contents=not resume)


# -- interrupts and the progress bar -------------------------------------------------------------
class Guard:
    """The state of :func:`interrupt_guard`: ``requested`` once SIGINT or SIGTERM arrived
    (``signum``: the first one), ``active`` when the handlers are installed."""

    def __init__(self, active: bool):
        self.active = active
        self.requested = False
        self.signum: int | None = None

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - the signal API
        if self.signum is None:
            self.signum = signum
        self.requested = True


@contextmanager
def interrupt_guard(enabled: bool = True) -> Iterator[Guard]:
    """While the block runs, SIGINT and SIGTERM set ``guard.requested`` instead of stopping
    the process; the loop checks it at its safe points, saves and raises
    :class:`Interrupted`. Signals that arrive while it saves (inside the block) only set the
    flag again, so the save completes. The previous handlers are restored on exit; a signal
    that the block did not answer by raising (it came during the last item, the loop ended
    anyway) is then delivered to them, so it is never lost. Not ``enabled`` (e.g. no
    checkpoint) or outside the main thread: nothing is installed and ``requested`` stays
    False (Ctrl-C raises KeyboardInterrupt as usual)."""
    guard = Guard(enabled and threading.current_thread() is threading.main_thread())
    old: dict[int, Any] = {}
    answered = True
    try:
        if guard.active:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, guard._handler)
        yield guard
        answered = False
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if not answered and guard.signum is not None:
            signal.raise_signal(guard.signum)


def progress_bar(total: int | None = None, enabled: bool | None = False, desc: str = "", *,
                 iterable: Iterable | None = None, unit: str = "it", initial: int = 0,
                 leave: bool = True):
    """A tqdm bar on stderr (``enabled`` None: shown only on a terminal; False: hidden); over
    ``iterable`` when given. Use as a context manager or call ``close()``."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                disable=None if enabled is None else not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


# -- checkpoints ---------------------------------------------------------------------------------
def _leaves(payload: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, leaf) of a nested payload in a fixed order (dicts by key, lists by index)."""
    if isinstance(payload, dict):
        for key in sorted(payload, key=lambda k: (type(k).__name__, str(k))):
            yield from _leaves(payload[key], f"{prefix}{key}/")
    elif isinstance(payload, (list, tuple)):
        for i, item in enumerate(payload):
            yield from _leaves(item, f"{prefix}{i}/")
    else:
        yield prefix.rstrip("/"), payload


def _describe(leaf: Any) -> tuple:
    """What a leaf must keep between the fresh state and a loaded checkpoint: its kind and,
    for arrays and tensors, shape and dtype."""
    torch = sys.modules.get("torch")
    if isinstance(leaf, np.ndarray):
        return ("array", leaf.shape, leaf.dtype.str)
    if torch is not None and isinstance(leaf, torch.Tensor):
        return ("tensor", tuple(leaf.shape), str(leaf.dtype))
    if isinstance(leaf, bool) or leaf is None:
        return (type(leaf).__name__,)
    if isinstance(leaf, (int, float, np.integer, np.floating)):
        return ("number",)
    return (type(leaf).__name__,)


def _grown(got: Any, fresh: Any) -> bool:
    """Whether ``got`` is ``fresh`` grown along dimension 1: a tensor that starts empty there
    (an attention block's key/value cache, B x 0 x ...; its tangents N x 0 x ...) holds the
    positions read since the last reset, any number of them; every other dimension and the
    dtype must match."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(got, torch.Tensor) or not isinstance(fresh, torch.Tensor):
        return False
    return (fresh.dim() >= 2 and fresh.shape[1] == 0 and got.dim() == fresh.dim()
            and got.dtype == fresh.dtype and got.shape[0] == fresh.shape[0]
            and got.shape[2:] == fresh.shape[2:])


def _check_npz(path: Path) -> None:
    """Refuse an .npz whose members declare more bytes than they hold (before loading)."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if sum(i.file_size for i in infos) > MAX_EXPANSION * size + (1 << 20):
            raise ValueError("its members declare more bytes than the file holds")
        for info in infos:
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"member {info.filename}: unknown format {version}")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise ValueError(f"member {info.filename} declares more data than it holds")


class RunCheckpoint:
    """The checkpoint of one interruptible run (see module docstring).

    ``path``: the file (None: checkpointing off; then ``save`` does nothing and ``due`` is
    False); ``fingerprint``: :func:`fingerprint` of what identifies the run; ``every``: seconds
    between periodic saves (:meth:`due`); ``kind``: the analysis ("gradients", ...), stored in
    the file: a checkpoint of another kind or fingerprint is refused.
    """

    def __init__(self, path: str | os.PathLike | None, fingerprint: str, every: float = 300.0,
                 kind: str = "run"):
        self.path = None if path is None else Path(path)
        self.fingerprint, self.every, self.kind = fingerprint, float(every), kind
        self._last = time.perf_counter()
        self._written: tuple | None = None  # the stamp of the file this object saved last

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def numpy(self) -> bool:
        """True for an ``.npz`` file (flat numpy payload), False for a torch archive."""
        return self.path is not None and self.path.suffix == ".npz"

    def _meta(self, payload: dict) -> dict:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind,
                "fingerprint": self.fingerprint,
                "digest": fingerprint(self.kind, self.fingerprint, payload)}

    def _bad(self, why: str) -> MemlensError:
        return MemlensError(f"checkpoint {self.path} is damaged or was edited ({why}): delete "
                            "it or run without --resume")

    # -- writing ---------------------------------------------------------------------------
    def _normalised(self, payload: dict) -> dict:
        """The payload as it will be read back (so that its digest is the loaded one's)."""
        if not isinstance(payload, dict) or META in payload:
            raise TypeError(f"a checkpoint payload is a dict without the key {META!r}")
        if self.numpy:
            out = {}
            for key, value in payload.items():
                a = np.asarray(value)
                if not isinstance(key, str) or a.dtype.hasobject:
                    raise TypeError(f"checkpoint entry {key!r}: give a str key and an array or "
                                    "scalar of numbers or strings")
                out[key] = a.item() if a.ndim == 0 else a
            return out
        return _plain(payload)

    def save(self, payload: dict) -> None:
        """Write ``payload`` (with the kind, fingerprint and digest) atomically; the file is
        complete or the previous one is kept. No-op without a path."""
        if self.path is None:
            return
        payload = self._normalised(payload)
        meta = self._meta(payload)
        check_checkpoint_path(self.path, written=self._written)  # never a user's file
        with atomic_path(self.path) as tmp:
            if self.numpy:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **{META: np.array(json.dumps(meta))}, **payload)
            else:
                import torch

                torch.save({META: meta, "payload": payload}, tmp)
        self._written = _stamp(os.lstat(self.path))
        self._last = time.perf_counter()

    def due(self) -> bool:
        """True when checkpointing is on and more than ``every`` seconds have passed since
        the last save (or since this object was made)."""
        return self.path is not None and time.perf_counter() - self._last > self.every

    def stop(self, payload: dict, done: int, total: int, unit: str = "items",
             head: str | None = None) -> KeyboardInterrupt:
        """Save ``payload`` and return the :class:`Interrupted` to raise (a plain
        KeyboardInterrupt without a path: there is nothing to resume from)."""
        if self.path is None:
            return KeyboardInterrupt()
        with deferred_interrupts(absorb=True):  # stopping anyway: a second signal waits
            self.save(payload)
        return Interrupted(self.path, done, total, unit, head)

    def finish(self, keep: bool = False, payload: dict | None = None) -> None:
        """End of a finished run: with ``keep``, save ``payload`` as the final checkpoint (or
        leave the file as it is when None) for the caller to delete once its results are
        written; otherwise delete the file."""
        if self.path is None:
            return
        if not keep:
            self.discard()
        elif payload is not None:
            self.save(payload)

    def discard(self) -> None:
        """Delete the checkpoint file (if any); a file there that is not a memlens checkpoint,
        a directory or a link is refused (:func:`check_checkpoint_path`), never deleted."""
        if self.path is not None:
            check_checkpoint_path(self.path, written=self._written)
            self.path.unlink(missing_ok=True)
            self._written = None

    # -- reading ---------------------------------------------------------------------------
    def _read(self, device) -> tuple[Any, Any]:
        """(metadata, payload) as stored, or a one-line error for an unreadable file."""
        from memlens.core.files import check_regular

        check_regular(self.path, "checkpoint")  # a FIFO or /dev/zero: never read
        if self.numpy:
            try:
                _check_npz(self.path)
                with np.load(self.path, allow_pickle=False) as z:
                    data = {k: z[k] for k in z.files}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                raise self._bad(str(exc)[:100] or type(exc).__name__) from None
            meta = data.pop(META, None)
            try:
                meta = None if meta is None else json.loads(str(meta))
            except ValueError:
                raise self._bad("unreadable metadata") from None
            if meta is None and {"fingerprint", "done", "nll"} <= set(data):
                meta = {"format": "memlens-ablation-npz"}  # written before this module
            return meta, {k: (v.item() if v.ndim == 0 else v) for k, v in data.items()}
        from memlens.models.checkpoint import load_checked

        data = load_checked(self.path, "checkpoint", device)
        if isinstance(data, dict) and META in data:
            return data[META], data.get("payload")
        legacy = data.get("format") if isinstance(data, dict) else None
        return ({"format": legacy} if isinstance(legacy, str) else None), data

    def load(self, like: dict | None = None, device: Any = "cpu") -> dict:
        """The saved payload, checked: a missing file, a checkpoint of another kind or
        fingerprint, a digest mismatch and (with ``like``, a fresh payload of this run) any
        entry missing, unexpected or of another shape or dtype are one-line
        :class:`MemlensError` s. ``device``: where torch tensors are loaded."""
        if self.path is not None:
            check_checkpoint_path(self.path, contents=False)  # a link or a directory
        if self.path is None or not self.path.exists():
            raise MemlensError(f"nothing to resume: no checkpoint at {self.path}")
        meta, payload = self._read(device)
        if not isinstance(meta, dict):
            raise self._bad("not a memlens checkpoint")
        if meta.get("format") != FORMAT:
            if meta.get("format") in (*LEGACY_FORMATS, "memlens-ablation-npz"):
                raise MemlensError(f"checkpoint {self.path} was written by an earlier memlens "
                                   "version: delete it or run without --resume")
            raise self._bad("not a memlens checkpoint")
        if meta.get("kind") != self.kind or meta.get("fingerprint") != self.fingerprint:
            raise MemlensError(f"checkpoint {self.path} was made with a different model, "
                               "corpus or settings: delete it or run without --resume")
        if not isinstance(payload, dict) or meta.get("digest") != fingerprint(
                self.kind, self.fingerprint, payload):
            raise self._bad("digest mismatch")
        if like is not None:
            self._compare(payload, self._normalised(like))
        return payload

    def _compare(self, payload: dict, like: dict) -> None:
        got = dict(_leaves(payload))
        want = dict(_leaves(like))
        if set(got) != set(want):
            extra = sorted(set(got) ^ set(want))
            raise self._bad(f"entry {extra[0]!r} missing or unexpected")
        for name, leaf in want.items():
            if _describe(got[name]) != _describe(leaf) and not _grown(got[name], leaf):
                raise self._bad(f"{name} is {_describe(got[name])}, expected {_describe(leaf)}")


def _plain(payload: Any) -> Any:
    """A torch payload with numpy scalars as Python numbers (torch's safe loader refuses
    numpy objects); numpy arrays are refused (use tensors, or an ``.npz`` checkpoint)."""
    if isinstance(payload, dict):
        return {k: _plain(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return type(payload)(_plain(v) for v in payload)
    if isinstance(payload, np.generic):
        return payload.item()
    if isinstance(payload, np.ndarray):
        raise TypeError("a torch checkpoint holds tensors, not numpy arrays (use "
                        "torch.from_numpy, or an .npz checkpoint)")
    return payload


__all__ = ["FORMAT", "Guard", "Interrupted", "RunCheckpoint", "check_checkpoint_path",
           "check_scratch", "fingerprint", "interrupt_guard", "is_run_checkpoint", "partial_path",
           "progress_bar", "scratch_paths", "stop_point"]
