"""Issue 21: single-file outputs (checkpoint, report page, n-gram summary) carry a seal (the
SHA-256 of their own content, :mod:`memlens.core.seal`), and ``--overwrite`` refuses one the
user has edited since memlens wrote it, naming it, and leaves it as it is."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_output_safety import argv, bases, run  # noqa: E402,F401 - fixture

from memlens.core.seal import seal_html, seal_json, seal_state, seal_zip  # noqa: E402


def test_seals_known_answers(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(seal_html("<html>x</html>"))
    assert seal_state(page) == "sealed"
    page.write_text(page.read_text().replace("x", "y"))
    assert seal_state(page) == "edited"
    doc = tmp_path / "d.json"
    doc.write_text(json.dumps(seal_json({"kind": "ngram", "bits": 2.5}), indent=2))
    assert seal_state(doc) == "sealed"
    doc.write_text(json.dumps(json.loads(doc.read_text())))  # re-indented: not an edit
    assert seal_state(doc) == "sealed"
    doc.write_text(doc.read_text().replace("2.5", "2.4"))
    assert seal_state(doc) == "edited"
    ck = tmp_path / "c.pt"
    torch.save({"w": torch.zeros(3)}, ck)
    assert seal_state(ck) == "unsealed"
    seal_zip(ck)
    assert seal_state(ck) == "sealed" and torch.load(ck, weights_only=True)["w"].sum() == 0
    (tmp_path / "plain.txt").write_text("no seal")
    assert seal_state(tmp_path / "plain.txt") == "unsealed"


def _edit_checkpoint(path: Path) -> None:
    """What a user does to change a memlens checkpoint: load it, change a weight, save."""
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1
    torch.save(payload, path)


def _edit_text(path: Path) -> None:
    path.write_text(path.read_text().replace("</body>", "<p>my notes</p></body>"))


@pytest.mark.parametrize("command,out,edit", [("train", "m.pt", _edit_checkpoint),
                                              ("report", "r.html", _edit_text)])
def test_overwrite_refuses_an_edited_single_file(bases, tmp_path, monkeypatch, capsys,  # noqa: F811
                                                 command, out, edit):
    monkeypatch.chdir(tmp_path)
    args = argv(bases, command, tmp_path / out)
    assert run(args) == 0
    assert seal_state(tmp_path / out) == "sealed"
    assert run([*args, "--overwrite"]) == 0  # untouched: replaced
    edit(tmp_path / out)
    assert seal_state(tmp_path / out) == "edited"
    edited = (tmp_path / out).read_bytes()
    capsys.readouterr()
    assert run([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("memlens: error:") and len(err.splitlines()) == 1, err
    assert "was changed since memlens wrote it" in err and out in err
    assert (tmp_path / out).read_bytes() == edited


def test_overwrite_refuses_an_edited_ngram_summary(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sees the dog\n" * 30)
    args = ["ngram", "--train", str(corpus), "--order", "2", "--out", str(tmp_path / "n.json")]
    assert run(args) == 0
    assert run([*args, "--overwrite"]) == 0
    doc = json.loads((tmp_path / "n.json").read_text())
    doc["perplexity"] = 1.0
    (tmp_path / "n.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert run([*args, "--overwrite"]) == 2
    assert "was changed since memlens wrote it" in capsys.readouterr().err


def test_a_checkpoint_seal_is_in_the_zip_comment(tmp_path, bases):  # noqa: F811
    """The checkpoint's seal is read from the zip's central directory: no member is
    expanded (the CRCs stand for the content); the file still loads."""
    from memlens import load_checkpoint

    assert run(argv(bases, "train", tmp_path / "m.pt")) == 0
    with zipfile.ZipFile(tmp_path / "m.pt") as zf:
        assert zf.comment.startswith(b"memlens-sha256:")
    load_checkpoint(tmp_path / "m.pt")
