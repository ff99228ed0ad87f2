"""The README's Hugging Face family table names every registered family (and says which are
refused), so the table cannot drift from the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
from memlens.models.hf import FAMILIES  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_registered_family_has_a_row():
    text = README.read_text()
    start = text.index("### Hugging Face families")
    table = text[start:text.index("An unsupported family", start)]
    rows = {line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")}
    names = {n.strip() for r in rows for n in r.split(",")}
    assert set(FAMILIES) <= names, set(FAMILIES) - names
    for r in rows:  # a row of an unregistered family says it is not supported
        if not any(n.strip() in FAMILIES for n in r.split(",")) and r != "family":
            line = next(x for x in table.splitlines() if x.startswith(f"| {r} |"))
            assert "not supported yet" in line, r
