"""Seals: a single-file output carries the SHA-256 of its own content.

A result directory records each file's digest in its manifest; a single file (a checkpoint
``.pt``, a report page ``.html``, a JSON summary) has no manifest, so it carries its digest
inside itself, in a place its format keeps apart from the content:

* a report page: a last line ``<!-- memlens-sha256:HEX -->``, HEX = SHA-256 of every byte
  before that line;
* a JSON summary: the key ``memlens_sha256``, HEX = SHA-256 of the document without that key,
  serialised canonically (``sort_keys``, no spaces, ASCII), so that re-indenting is not an
  edit but changing a value is;
* a checkpoint (a zip archive written by ``torch.save``): the archive comment
  ``memlens-sha256:HEX``, HEX = SHA-256 over the (name, CRC-32, size) of every member, read
  from the central directory without expanding anything (a changed tensor changes its CRC).

:func:`seal_state` tells a sealed, untouched file ("sealed") from one whose content no longer
matches its seal ("edited") and from one without a seal ("unsealed": written by a memlens
before 0.4, or re-saved by other code). ``--overwrite`` refuses an edited file, naming it
(:func:`memlens.runtime.io.check_out_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Literal

HTML_SEAL = re.compile(rb"<!-- memlens-sha256:([0-9a-f]{64}) -->\n?\Z")
JSON_KEY = "memlens_sha256"
ZIP_PREFIX = b"memlens-sha256:"
# Written into the content itself, so that removing the seal (re-saving a checkpoint with
# torch.save, which drops the archive comment; cutting the last line of a page) reads as an
# edit, not as an old unsealed file: the checkpoint payload's "seal" value, the page's meta tag.
ZIP_MARK = "memlens-zip-seal"
HTML_MARK = '<meta name="memlens-seal" content="sha256">'
MAX_SNIFF = 1 << 26  # 64 MiB: a checkpoint's data.pkl larger than this is not read
MAX_SEALED_TEXT = 1 << 28  # 256 MiB: a report or summary larger than this is not checked

SealState = Literal["sealed", "edited", "unsealed"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal_html(text: str) -> str:
    """``text`` (a whole HTML page) with its seal appended as the last line."""
    if not text.endswith("\n"):
        text += "\n"
    return text + f"<!-- memlens-sha256:{_sha(text.encode('utf-8'))} -->\n"


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True).encode("ascii")


def seal_json(doc: dict) -> dict:
    """A copy of the JSON document ``doc`` with its seal under :data:`JSON_KEY`."""
    body = {k: v for k, v in doc.items() if k != JSON_KEY}
    return {**body, JSON_KEY: _sha(_canonical(body))}


def _zip_digest(zf: zipfile.ZipFile) -> str:
    h = hashlib.sha256()
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        h.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
    return h.hexdigest()


def seal_zip(path: str | os.PathLike) -> None:
    """Write the seal of the zip archive at ``path`` (a fresh ``torch.save`` file, not yet
    published) into its archive comment."""
    with zipfile.ZipFile(path, "a") as zf:
        zf.comment = ZIP_PREFIX + _zip_digest(zf).encode("ascii")


def seal_state(path: str | os.PathLike) -> SealState:
    """"sealed" when the file at ``path`` matches its seal, "edited" when it carries a seal
    that its content no longer matches, "unsealed" when it carries none (or is too large or
    unreadable to tell: the caller's other checks decide)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head == b"PK\x03\x04":
            with zipfile.ZipFile(p) as zf:
                if not zf.comment.startswith(ZIP_PREFIX):
                    pkl = [i for i in zf.infolist() if i.filename.endswith("data.pkl")]
                    marked = (len(pkl) == 1 and pkl[0].file_size <= MAX_SNIFF
                              and ZIP_MARK.encode() in zf.read(pkl[0]))
                    return "edited" if marked else "unsealed"
                ok = zf.comment[len(ZIP_PREFIX):].decode("ascii") == _zip_digest(zf)
            return "sealed" if ok else "edited"
        if p.stat().st_size > MAX_SEALED_TEXT:
            return "unsealed"
        data = p.read_bytes()
        if data.lstrip().startswith(b"{"):
            doc = json.loads(data)
            if not isinstance(doc, dict) or JSON_KEY not in doc:
                return "unsealed"
            body = {k: v for k, v in doc.items() if k != JSON_KEY}
            return "sealed" if doc[JSON_KEY] == _sha(_canonical(body)) else "edited"
        m = HTML_SEAL.search(data)
        if m is None:
            return "edited" if HTML_MARK.encode() in data[:4096] else "unsealed"
        return "sealed" if m.group(1).decode() == _sha(data[:m.start()]) else "edited"
    except (OSError, ValueError, zipfile.BadZipFile, RecursionError, UnicodeDecodeError):
        return "unsealed"


__all__ = ["HTML_MARK", "JSON_KEY", "ZIP_MARK", "SealState", "seal_html", "seal_json",
           "seal_state", "seal_zip"]
