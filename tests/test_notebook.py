"""The tutorial notebook (notebooks/tutorial.py, jupytext percent format) executes from top to
bottom on a kernel of this environment, without an error cell, and shows figures and HTML
tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="pip install -e '.[test]'")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.py"


def kernel_spec(tmp: Path) -> str:
    """A kernel spec for this interpreter (in a private directory), so that the notebook runs
    on the same environment as the tests."""
    from ipykernel.kernelspec import install

    install(prefix=str(tmp / "jupyter"), kernel_name="memlens-test")
    return "memlens-test"


def test_tutorial_executes_and_shows_figures_and_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    name = kernel_spec(tmp_path)
    nb = jupytext.read(NOTEBOOK)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name=name,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on an error cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "<table" in o.get("data", {}).get("text/html", "")]
    assert len(images) >= 3, [o.get("data", {}).keys() for o in outputs]
    assert len(tables) >= 4  # three results and one DataFrame
    assert any("memlens gradients result" in o["data"]["text/html"] for o in tables)
    assert sys.executable  # the kernel spec above runs this interpreter
