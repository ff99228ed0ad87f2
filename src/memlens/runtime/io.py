"""Writing results safely: atomic files and directories, and the output-path policy.

Atomic writes: a result file or directory is either complete or absent, never partial
(:func:`atomic_path` / :func:`write_atomic` come from :mod:`memlens.core.files`;
:func:`atomic_dir` is here).

Output-path policy (one place for every command; docs/bad-input.md):

* A memlens result directory holds a manifest, ``.memlens-result.json`` (``kind``,
  ``memlens_version``, ``files``: every file memlens wrote there, and ``digests``: the SHA-256
  of each). :func:`atomic_dir` writes it last.
* Manifest entries are plain relative names inside the directory: an entry with a ``..``
  component, an absolute path, an empty name or component, a NUL, or a name reached through a
  symbolic link marks a tampered manifest, refused with one line naming the entry (by
  :func:`check_out_dir` and again before anything is deleted).
* :func:`check_out_dir` / :func:`check_out_file` run before any computation. They refuse an
  output path that exists and was not written by memlens (a file where a directory is wanted,
  a directory holding files memlens did not write, ``.``), a previous memlens output unless
  ``overwrite`` (or the same run's ``resume``) is given, a parent that is a file, and a
  parent that cannot be written.
* A replaced result directory loses only the files listed in its manifest; memlens never
  deletes a file it did not write, and never deletes or replaces anything through a symbolic
  link (a link is removed as a link; a listed name under a linked directory is refused).
* ``overwrite`` refuses, naming the file, to replace a result one of whose files no longer has
  the digest memlens recorded (the user edited it). Manifests without digests (memlens 0.3.0
  and before) are replaced as before.
* The checkpoints beside an output (``.<name>.partial.pt`` / ``.npz`` / ``.rank<r>``) must be
  memlens checkpoints: :func:`claim_output` refuses a user's file, a directory or a symbolic
  link at those names (:func:`memlens.runtime.progress.check_scratch`). Temporary names are
  made by ``mkstemp`` / ``mkdtemp`` (unique, created exclusively) and removed on every exit.
* :func:`claim_output` does the check and holds a lock (``flock`` on ``.<name>.lock`` beside
  the output) for the whole run, so a second run on the same output says so instead of
  silently replacing the first one's result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memlens.core.errors import MemlensError
from memlens.core.files import UMASK as _UMASK  # noqa: F401 (kept for callers)
from memlens.core.files import atomic_path, write_atomic
from memlens.core.files import public_mode as _public_mode
from memlens.core.seal import seal_state
from memlens.core.signals import deferred_interrupts

MANIFEST = ".memlens-result.json"
LOCK_TEXT = b"memlens output lock\n"
MAX_SNIFF = 64 << 20  # bytes of a JSON / checkpoint index read to recognise a memlens file

# outputs claimed by the running command: path -> may an earlier memlens output be replaced
_CLAIMED: dict[Path, bool] = {}


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


# -- what memlens wrote --------------------------------------------------------------------------
def _files_under(root: Path) -> list[str]:
    """Relative paths of every non-directory entry below ``root`` (symlinks not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out += [str(rel / f) for f in filenames]
        out += [str(rel / d) for d in dirnames if (Path(dirpath) / d).is_symlink()]
    return sorted(p.removeprefix("./") for p in out)


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of a memlens result directory, or None when ``path`` is not one."""
    f = Path(path) / MANIFEST
    try:
        if not f.is_file() or f.is_symlink() or f.stat().st_size > MAX_SNIFF:
            return None
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list) or not all(
            isinstance(x, str) for x in doc["files"]) or "memlens_version" not in doc:
        return None
    return doc


def _entry_problem(name: str) -> str | None:
    """Why a manifest entry is not a plain relative name inside its directory (None: it is)."""
    if not name:
        return "an empty name"
    if "\x00" in name:
        return "a NUL byte"
    if os.path.isabs(name):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "a '..' component"
    if any(part in ("", ".") for part in parts):
        return "an empty or '.' component"
    return None


def _tampered(path: str | os.PathLike, what: str, detail: str) -> MemlensError:
    return MemlensError(f"{what} {path}: its manifest {MANIFEST} {detail}: a tampered manifest; "
                        "memlens does not replace or delete anything there")


def check_manifest(path: str | os.PathLike, doc: dict, what: str = "--out") -> None:
    """Refuse a tampered manifest (one line naming the entry): an entry that is not a plain
    relative name inside ``path`` (a ``..`` component, an absolute path, an empty name or
    component, a NUL), a listed name reached through a symbolic link inside ``path``, or
    ``digests`` that are not a {name: hex SHA-256} mapping."""
    for name in doc["files"]:
        why = _entry_problem(name)
        if why is not None:
            raise _tampered(path, what, f"lists {name!r} ({why}), not a plain name inside "
                                        "the directory")
        link = _through_link(Path(path), name)
        if link is not None:
            raise MemlensError(f"{what} {path}: {link} is a symbolic link and the manifest lists "
                               f"{name!r} under it; memlens does not delete or replace anything "
                               "through a link: move it away or choose another path")
    digests = doc.get("digests", {})
    if not isinstance(digests, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
        raise _tampered(path, what, "has malformed digests")


def _through_link(root: Path, name: str) -> str | None:
    """The first directory component of ``root / name`` (below ``root``) that is a symbolic
    link or not a directory, as a relative name; None when every one is a real directory (or
    missing)."""
    parts = name.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        try:
            st = os.lstat(root / rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISDIR(st.st_mode):
            return rel
    return None


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a regular file's bytes, read without following a symbolic link."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def changed_files(path: str | os.PathLike, doc: dict) -> list[str]:
    """The listed files of the result ``path`` whose content is no longer the one memlens
    recorded in the manifest's ``digests`` (edited, or replaced by a link or a directory). A
    listed file that is gone is not changed (nothing of it would be lost); a manifest without
    digests (memlens 0.3.0 and before) has none."""
    root, digests, out = Path(path), doc.get("digests") or {}, []
    for name in doc["files"]:
        want = digests.get(name)
        if want is None:
            continue
        try:
            st = os.lstat(root / name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            same = stat.S_ISREG(st.st_mode) and file_digest(root / name) == want
        except OSError:
            same = False
        if not same:
            out.append(name)
    return out


def _check_owned(path: str | os.PathLike, doc: dict, what: str) -> None:
    """Refuse the memlens result ``path`` (manifest ``doc``) when its manifest is tampered or
    it holds files memlens did not write."""
    check_manifest(path, doc, what)
    foreign = foreign_files(path)
    if foreign:
        raise MemlensError(f"{what} {path} holds files memlens did not write "
                           f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                           "memlens does not replace it: move them away or choose another path")


def _check_replaceable(path: str | os.PathLike, doc: dict, what: str) -> None:
    """Refuse to replace the memlens result ``path`` (manifest ``doc``) when its manifest is
    tampered, it holds files memlens did not write, or a file changed since memlens wrote it."""
    _check_owned(path, doc, what)
    _check_unchanged(path, doc, what)


def _check_unchanged(path: str | os.PathLike, doc: dict, what: str) -> None:
    """Refuse a memlens result ``path`` one of whose files changed since memlens wrote it
    (its digest in the manifest ``doc``)."""
    changed = changed_files(path, doc)
    if changed:
        raise MemlensError(f"{what} {path}: file {changed[0]} was changed since memlens wrote "
                           "it; memlens does not replace it (move it away or choose another "
                           "path)")


def foreign_files(path: str | os.PathLike) -> list[str]:
    """Files in the directory ``path`` that its manifest does not list (all files if it has
    none)."""
    doc = read_manifest(path)
    listed = set(doc["files"]) | {MANIFEST} if doc else set()
    return [f for f in _files_under(Path(path)) if f not in listed]


def is_memlens_file(path: str | os.PathLike) -> bool:
    """True for a file memlens writes as a single output: a checkpoint (zip holding the
    memlens magic), a JSON summary with ``memlens_version``, or a report page (generator
    meta tag)."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        with open(p, "rb") as fh:
            head = fh.read(4096)
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(p) as zf:
                pkl = [i for i in zf.infolist() if i.filename.endswith("data.pkl")]
                if len(pkl) != 1 or pkl[0].file_size > MAX_SNIFF:
                    return False
                return b"memlens-checkpoint" in zf.read(pkl[0])
        if head.lstrip().startswith(b"{"):
            if p.stat().st_size > MAX_SNIFF:
                return False
            doc = json.loads(p.read_text(encoding="utf-8"))
            return isinstance(doc, dict) and "memlens_version" in doc
        return b'<meta name="generator" content="memlens' in head
    except (OSError, ValueError, zipfile.BadZipFile, RecursionError, RuntimeError):
        return False


# -- the policy ----------------------------------------------------------------------------------
def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _check_parent(p: Path, what: str) -> None:
    """The nearest existing ancestor of ``p`` must be a writable directory."""
    anc = p.parent
    while not anc.exists() and not anc.is_symlink():
        anc = anc.parent
    if not anc.is_dir():
        raise MemlensError(f"{what} {p}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise MemlensError(f"{what} {p}: directory {anc} is not writable")


def check_out_dir(path: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                  what: str = "--out") -> Path:
    """Check that a result directory may be written at ``path``; return it (absolute).

    Allowed: a path that does not exist, an empty directory, and a previous memlens result
    directory that holds only the files memlens wrote, with ``overwrite`` or ``resume``.
    Everything else raises a one-line :class:`MemlensError`.
    """
    p = _absolute(path)
    cwd = Path.cwd().resolve()
    if p.exists() and (p.resolve() == cwd or p.resolve() in cwd.parents):
        raise MemlensError(f"{what} {path} is the current directory (or contains it): "
                           "name a new directory")
    _check_parent(p, what)
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        raise MemlensError(f"{what} {path} exists and is not a directory; memlens does not "
                           "replace it: choose another path")
    if not p.exists():
        return p
    doc = read_manifest(p)
    if doc is None:
        if _files_under(p):
            raise MemlensError(f"{what} {path} is an existing directory that is not a memlens "
                               "result; memlens does not write into it: choose a new path")
        return p  # an empty directory
    _check_owned(path, doc, what)
    if not (overwrite or resume):
        raise MemlensError(f"{what} {path} holds a previous memlens result: add --overwrite "
                           "to replace it")
    _check_unchanged(path, doc, what)
    return p


def check_out_file(path: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                   what: str = "--out") -> Path:
    """Check that a single output file may be written at ``path``; return it (absolute).

    Allowed: a path that does not exist, and a file memlens wrote (:func:`is_memlens_file`)
    with ``overwrite`` or ``resume``, unless its content no longer matches its seal
    (:func:`memlens.core.seal.seal_state`: the user edited it). A directory, a file memlens
    did not write or a parent that cannot be written raises a one-line :class:`MemlensError`.
    """
    p = _absolute(path)
    if p.is_dir():
        raise MemlensError(f"{what} {path} is a directory: give a file name")
    _check_parent(p, what)
    if not p.exists() and not p.is_symlink():
        return p
    if p.is_symlink() or not is_memlens_file(p):
        raise MemlensError(f"{what} {path} exists and was not written by memlens; memlens "
                           "does not replace it: choose another path")
    if not (overwrite or resume):
        raise MemlensError(f"{what} {path} exists (an earlier memlens output): add "
                           "--overwrite to replace it")
    if seal_state(p) == "edited":
        raise MemlensError(f"{what} {path} was changed since memlens wrote it (its content no "
                           "longer matches the digest memlens sealed it with); memlens does not "
                           "replace it (move it away or choose another path)")
    return p


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output: ``.<name>.lock`` beside it."""
    p = _absolute(path)
    return p.parent / f".{p.name}.lock"


@contextmanager
def output_lock(path: str | os.PathLike, what: str = "--out") -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``.<name>.lock`` beside ``path`` (created if needed and
    removed afterwards); a second holder gets a :class:`MemlensError` at once."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, LOCK_TEXT)
        except FileExistsError:
            try:
                fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_NONBLOCK", 0))
            except FileNotFoundError:
                continue  # removed by the run that held it: try again
            except OSError:  # a symbolic link (ELOOP), or unreadable
                raise MemlensError(f"{what} {path}: the lock file {lock} is not a memlens lock "
                                   "(a symbolic link or unreadable): move it away") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise MemlensError(f"{what} {path}: the lock file {lock} is not a regular file: "
                                   "move it away") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MemlensError(f"another memlens run is writing {what} {path} (lock file "
                               f"{lock}): wait for it to finish or choose another path"
                               ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was replaced while we waited: lock the new one
    try:
        yield lock
    finally:
        try:
            if os.pread(fd, 64, 0) == LOCK_TEXT:  # ours (or a stale one of a killed run)
                lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextmanager
def claim_output(path: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                 directory: bool = True, what: str = "--out",
                 scratch: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Check ``path`` by the policy, lock it, and let :func:`atomic_dir` replace an earlier
    memlens result there while the block runs (only with ``overwrite`` / ``resume``).

    ``scratch``: the suffixes of the checkpoint the command keeps beside ``path`` (".pt",
    ".npz"; ``()`` for a command that keeps none; None: both), whose names must be free or
    hold a memlens checkpoint (:func:`~memlens.runtime.progress.check_scratch`).

    Call it before any computation; yields the absolute output path.
    """
    from memlens.runtime.progress import SCRATCH_SUFFIXES, check_scratch

    suffixes = SCRATCH_SUFFIXES if scratch is None else scratch
    check = check_out_dir if directory else check_out_file
    p = check(path, overwrite, resume, what)
    check_scratch(p, resume, suffixes)
    with output_lock(p, what):
        check(path, overwrite, resume, what)  # again: it may have changed while unlocked
        check_scratch(p, resume, suffixes)
        _CLAIMED[p] = overwrite or resume
        try:
            yield p
        finally:
            _CLAIMED.pop(p, None)


def _remove_listed(old: Path, files: list[str]) -> None:
    """Delete the listed files (and the manifest) in ``old``, then its empty directories; a
    file memlens did not list stays, and so does ``old`` (with a warning). Every entry is
    checked first (a tampered manifest deletes nothing); a listed symbolic link is removed as
    a link, and nothing under a linked directory is touched."""
    for rel in files:
        why = _entry_problem(rel) if isinstance(rel, str) else "not a name"
        if why is not None:
            raise _tampered(old, "--out", f"lists {rel!r} ({why}), not a plain name inside the "
                                          "directory")
    for rel in [*files, MANIFEST]:
        f = old / rel
        if _through_link(old, rel) is not None:
            continue
        try:
            st = os.lstat(f)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISDIR(st.st_mode):
            f.unlink()
    for dirpath, _, _ in sorted(os.walk(old), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    if old.exists():
        warnings.warn(f"memlens kept {old}: it holds files memlens did not write",
                      stacklevel=3)


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               kind: str | None = None) -> Iterator[Path]:
    """Build a result directory under a temporary name; rename it onto ``path`` on success.

    The manifest (every file written, ``kind``, ``memlens_version``) is added last. An
    existing ``path`` is replaced only once the new directory is complete, and only when it is
    empty or a memlens result holding nothing but the files it lists, with ``overwrite`` (or
    inside :func:`claim_output` with overwrite/resume); then only the listed files are
    deleted. Otherwise a :class:`MemlensError` is raised and ``path`` is left untouched. On
    failure nothing is left behind.
    """
    from memlens.core.version import __version__

    path = _absolute(path)
    allowed = overwrite or _CLAIMED.get(path, False)
    if path.exists() and read_manifest(path) is not None and not allowed:
        raise MemlensError(f"{path} holds a previous memlens result: add --overwrite to "
                           "replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _write_manifest(tmp, kind, __version__)
        _public_mode(tmp, 0o777)
        with deferred_interrupts():  # the old result is never left half-replaced
            _install(tmp, path, allowed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_manifest(tmp: Path, kind: str | None, version: str) -> None:
    """The manifest of the finished directory ``tmp``: kind, version, every file and its
    SHA-256."""
    files = _files_under(tmp)
    if kind is None and (tmp / "result.json").is_file():
        try:
            kind = json.loads((tmp / "result.json").read_text()).get("kind")
        except (ValueError, AttributeError):
            kind = None
    digests = {f: file_digest(tmp / f) for f in files
               if stat.S_ISREG(os.lstat(tmp / f).st_mode)}
    (tmp / MANIFEST).write_text(json.dumps(
        {"kind": kind, "memlens_version": version, "files": files, "digests": digests},
        indent=1) + "\n")


def _install(tmp: Path, path: Path, allowed: bool) -> None:
    """Rename the finished ``tmp`` onto ``path``: onto nothing or an empty directory, or, when
    ``allowed``, onto an earlier memlens result that may be replaced (checked again now:
    :func:`_check_replaceable`), whose listed files are then deleted. If the rename fails the
    earlier result is put back."""
    if path.exists() or path.is_symlink():
        old_doc = None if path.is_symlink() else read_manifest(path)
        if old_doc is not None and allowed:
            _check_replaceable(path, old_doc, "--out")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old",
                                        dir=path.parent))
            os.replace(path, old)  # onto the empty directory just made
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the earlier result back
                raise
            _remove_listed(old, old_doc["files"])
            return
        if old_doc is not None or path.is_symlink() or not path.is_dir() or _files_under(path):
            raise MemlensError(f"{path} exists and is not a memlens result this run may "
                               "replace; nothing was changed there")
    os.replace(tmp, path)  # onto nothing, or onto an empty directory


__all__ = ["LOCK_TEXT", "MANIFEST", "MAX_SNIFF", "atomic_dir", "atomic_path", "changed_files",
           "check_manifest", "check_out_dir", "check_out_file", "claim_output", "file_digest",
           "foreign_files", "is_memlens_file", "lock_path", "output_lock", "read_manifest",
           "write_atomic", "write_json"]
