"""Issue 21, item 2: output path safety.

The four data-loss cases of the issue and the scratch-name cases, each as a regression test
through the CLI (in-process): a manifest listing a path outside --out, a symbolic link at a
checkpoint name, ``--overwrite`` over a result the user edited, a user's file at a checkpoint
name (``.OUT.partial.pt`` / ``.npz`` / ``.rank<r>``, a directory or a link there); and no
scratch file left after a successful run. Then the same rules on the API (:mod:`memlens.
runtime.io`, :class:`~memlens.runtime.progress.RunCheckpoint`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_hostile import build_inputs  # noqa: E402

from memlens.cli import main  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.runtime import io  # noqa: E402
from memlens.runtime.io import MANIFEST, atomic_dir, check_out_dir, output_lock  # noqa: E402
from memlens.runtime.progress import (  # noqa: E402
    RunCheckpoint,
    check_scratch,
    is_run_checkpoint,
)

OUTS = {"train": "m.pt", "train-asr": "asr.pt", "gradients": "g", "signatures": "s",
        "ablation": "a"}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    bases, _, _ = build_inputs(tmp_path_factory.mktemp("outsafety"))
    return bases


def argv(bases, command: str, out: Path, *extra: str) -> list[str]:
    a = list(bases[command])
    a[a.index("--out") + 1] = str(out)
    return [*a, *extra]


def snapshot(root: Path) -> dict:
    """Every entry below ``root`` (links not followed): bytes, link target or None."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = None
    return out


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("memlens: error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse
        return int(exc.code)


# -- files outside --out: a tampered manifest ------------------------------------------------------
@pytest.mark.parametrize("command", ["gradients", "ablation"])
@pytest.mark.parametrize("entry", ["../victim.txt", "ABSOLUTE"])
def test_manifest_listing_a_file_outside_out_is_refused(bases, tmp_path, capsys, command, entry):
    out = tmp_path / "o"
    assert run(argv(bases, command, out)) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    entry = str(victim) if entry == "ABSOLUTE" else entry
    doc = json.loads((out / MANIFEST).read_text())
    doc["files"].append(entry)
    (out / MANIFEST).write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run(argv(bases, command, out, "--overwrite")) == 2
    one_line_error(capsys, "tampered manifest", repr(entry))
    assert victim.read_text() == "the user's file"
    assert snapshot(tmp_path) == before  # nothing replaced, no lock or temporary left


def test_listed_name_under_a_linked_directory_is_refused(bases, tmp_path, capsys):
    out, mine = tmp_path / "o", tmp_path / "mine"
    assert run(argv(bases, "gradients", out)) == 0
    mine.mkdir()
    (mine / "table.csv").write_text("the user's table")
    (out / "sub").symlink_to(mine)
    doc = json.loads((out / MANIFEST).read_text())
    doc["files"] += ["sub", "sub/table.csv"]
    (out / MANIFEST).write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run(argv(bases, "gradients", out, "--overwrite")) == 2
    one_line_error(capsys, "symbolic link", "sub/table.csv")
    assert snapshot(tmp_path) == before


# -- symbolic links at checkpoint names ----------------------------------------------------------
@pytest.mark.parametrize("name,rc", [(".s.partial.npz", 2), (".s.partial", 0)])
def test_link_at_the_signatures_scratch_name_is_never_followed(bases, tmp_path, capsys, name,
                                                               rc):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's notes")
    (tmp_path / name).symlink_to(mine)
    capsys.readouterr()
    assert run(argv(bases, "signatures", tmp_path / "s")) == rc
    if rc == 2:
        one_line_error(capsys, "symbolic link", name)
        assert not (tmp_path / "s").exists()
    assert (tmp_path / name).is_symlink()
    assert snapshot(mine) == {"notes.txt": b"the user's notes"}


# -- --overwrite over a result the user changed --------------------------------------------------
@pytest.mark.parametrize("edited", ["result.json", "table.csv", "gradients.npz"])
def test_overwrite_refuses_a_result_the_user_edited(bases, tmp_path, capsys, edited):
    out = tmp_path / "g"
    assert run(argv(bases, "gradients", out)) == 0
    (out / edited).write_bytes(b"edited by the user")
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run(argv(bases, "gradients", out, "--overwrite")) == 2
    one_line_error(capsys, f"file {edited} was changed since memlens wrote it",
                   "does not replace it")
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_listed_file_replaced_by_a_link(bases, tmp_path, capsys):
    out, mine = tmp_path / "g", tmp_path / "mine.json"
    assert run(argv(bases, "gradients", out)) == 0
    mine.write_text('{"mine": 1}')
    (out / "result.json").unlink()
    (out / "result.json").symlink_to(mine)
    capsys.readouterr()
    assert run(argv(bases, "gradients", out, "--overwrite")) == 2
    one_line_error(capsys, "result.json was changed")
    assert mine.read_text() == '{"mine": 1}' and (out / "result.json").is_symlink()


def test_overwrite_replaces_an_unchanged_result_and_an_old_manifest(bases, tmp_path):
    out = tmp_path / "g"
    assert run(argv(bases, "gradients", out)) == 0
    doc = json.loads((out / MANIFEST).read_text())
    assert set(doc["digests"]) == set(doc["files"])
    assert run(argv(bases, "gradients", out, "--overwrite")) == 0  # unchanged: replaced
    doc = json.loads((out / MANIFEST).read_text())
    del doc["digests"]  # a manifest of memlens 0.3.0 and before
    (out / MANIFEST).write_text(json.dumps(doc))
    (out / "table.csv").write_text("edited")  # no digest to tell: replaced as before
    assert run(argv(bases, "gradients", out, "--overwrite")) == 0
    assert (out / "table.csv").read_text() != "edited"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


# -- a user's file at a checkpoint name ----------------------------------------------------------
SCRATCH = [("train", ".m.pt.partial.pt"), ("gradients", ".g.partial.pt"),
           ("gradients", ".g.partial.rank0.pt"), ("signatures", ".s.partial.npz"),
           ("ablation", ".a.partial.npz"), ("ablation", ".a.partial.rank1.npz"),
           ("train-asr", ".asr.pt.partial.pt")]


@pytest.mark.parametrize("kind", ["file", "directory", "fifo"])
@pytest.mark.parametrize("command,name", SCRATCH)
def test_user_file_at_a_checkpoint_name_is_kept(bases, tmp_path, capsys, command, name, kind):
    scratch = tmp_path / name
    if kind == "file":
        scratch.write_bytes(b"the user's data")
    elif kind == "directory":
        scratch.mkdir()
        (scratch / "inside.txt").write_text("the user's data")
    else:
        os.mkfifo(scratch)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run(argv(bases, command, tmp_path / OUTS[command])) == 2
    one_line_error(capsys, name, "move it away")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "gradients", "signatures", "ablation"])
def test_user_directory_at_the_bare_partial_name_is_untouched(bases, tmp_path, command):
    scratch = tmp_path / f".{OUTS[command]}.partial"
    scratch.mkdir()
    (scratch / "inside.txt").write_text("the user's data")
    assert run(argv(bases, command, tmp_path / OUTS[command])) == 0
    assert snapshot(scratch) == {"inside.txt": b"the user's data"}


OTHER_FORMAT = [("train", ".m.pt.partial.npz"), ("gradients", ".g.partial.npz"),
                ("gradients", ".g.partial.rank0.npz"), ("signatures", ".s.partial.pt"),
                ("ablation", ".a.partial.rank1.pt")]


@pytest.mark.parametrize("command,name", OTHER_FORMAT)
def test_a_user_file_at_the_other_format_name_is_left_alone(bases, tmp_path, command, name):
    """Only the checkpoint names a command can write are checked: gradients keeps ``.pt``,
    so a user's ``.g.partial.npz`` neither blocks it nor is touched."""
    mine = tmp_path / name
    mine.write_bytes(b"the user's data")
    assert run(argv(bases, command, tmp_path / OUTS[command])) == 0
    assert mine.read_bytes() == b"the user's data"


def test_resume_of_a_user_file_is_refused_and_keeps_it(bases, tmp_path, capsys):
    scratch = tmp_path / ".g.partial.pt"
    scratch.write_bytes(b"the user's data")
    capsys.readouterr()
    assert run(argv(bases, "gradients", tmp_path / "g", "--resume")) == 2
    one_line_error(capsys)
    assert scratch.read_bytes() == b"the user's data" and not (tmp_path / "g").exists()


# -- no scratch left after success ---------------------------------------------------------------
@pytest.mark.parametrize("command,extra", [("train", ()), ("train-asr", ()),
                                           ("train-asr", ("--time-limit", "0")),
                                           ("gradients", ()), ("signatures", ()),
                                           ("ablation", ())])
def test_no_scratch_left_after_success(bases, tmp_path, command, extra):
    assert run(argv(bases, command, tmp_path / OUTS[command], *extra)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [OUTS[command]]


def test_earlier_memlens_checkpoint_is_replaced(bases, tmp_path):
    """A checkpoint memlens left (an interrupted run) is still replaced by a fresh run."""
    ck = RunCheckpoint(tmp_path / ".a.partial.npz", "f" * 64, kind="ablation")
    ck.save({"done": 1})
    assert run(argv(bases, "ablation", tmp_path / "a")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# -- the API ---------------------------------------------------------------------------------------
def _result(path: Path, entries: list[str], digests: dict | None = None) -> None:
    path.mkdir()
    doc = {"kind": "x", "memlens_version": "0.3.0", "files": entries}
    if digests is not None:
        doc["digests"] = digests
    (path / MANIFEST).write_text(json.dumps(doc))


@pytest.mark.parametrize("entry", ["../victim.txt", "a/../../victim.txt", "/etc/passwd", "",
                                   "a\x00b", "a//b", "./a", "a/"])
def test_check_out_dir_refuses_entries_that_are_not_plain_names(tmp_path, entry):
    _result(tmp_path / "r", [entry])
    with pytest.raises(MemlensError, match="tampered manifest") as info:
        check_out_dir(tmp_path / "r", overwrite=True)
    assert repr(entry) in str(info.value) and "\n" not in str(info.value)


def test_malformed_digests_are_a_tampered_manifest(tmp_path):
    _result(tmp_path / "r", [], digests=["not", "a", "mapping"])
    with pytest.raises(MemlensError, match="malformed digests"):
        check_out_dir(tmp_path / "r", overwrite=True)


def test_remove_listed_deletes_nothing_for_a_tampered_list(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "a.txt").write_text("a")
    (tmp_path / "victim.txt").write_text("v")
    with pytest.raises(MemlensError, match="tampered"):
        io._remove_listed(old, ["a.txt", "../victim.txt"])
    assert (old / "a.txt").exists() and (tmp_path / "victim.txt").exists()


def test_remove_listed_never_deletes_through_a_link(tmp_path):
    old, mine = tmp_path / "old", tmp_path / "mine"
    old.mkdir()
    mine.mkdir()
    (mine / "f.txt").write_text("mine")
    (old / "sub").symlink_to(mine)
    (old / "link.txt").symlink_to(mine / "f.txt")
    with pytest.warns(UserWarning, match="kept"):
        io._remove_listed(old, ["sub/f.txt", "link.txt"])
    assert (mine / "f.txt").read_text() == "mine"
    assert not (old / "link.txt").is_symlink()  # the link itself went, its target stays


def test_atomic_dir_refuses_a_changed_result_and_leaves_nothing(tmp_path):
    out = tmp_path / "r"
    with atomic_dir(out) as d:
        (d / "result.json").write_text('{"kind": "x", "memlens_version": "0"}')
    (out / "result.json").write_text("edited")
    with pytest.raises(MemlensError, match="result.json was changed"):
        with atomic_dir(out, overwrite=True) as d:
            (d / "result.json").write_text("new")
    assert (out / "result.json").read_text() == "edited"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_atomic_dir_interrupted_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "r") as d:
            (d / "x.txt").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_run_checkpoint_never_replaces_or_deletes_a_user_file(tmp_path, suffix):
    path = tmp_path / f".out.partial{suffix}"
    ck = RunCheckpoint(path, "a" * 64, kind="k")
    payload = {"done": 3} if suffix == ".npz" else {"done": torch.zeros(2)}
    path.write_bytes(b"the user's data")
    for act in (lambda: ck.save(payload), ck.discard, lambda: check_scratch(tmp_path / "out")):
        with pytest.raises(MemlensError, match="not a memlens checkpoint.*move it away"):
            act()
        assert path.read_bytes() == b"the user's data"
    path.unlink()
    ck.save(payload)
    assert is_run_checkpoint(path)
    check_scratch(tmp_path / "out")
    ck.save(payload)  # its own file: replaced
    other = RunCheckpoint(path, "b" * 64, kind="other")
    other.save(payload)  # a memlens checkpoint of another run: replaced
    other.discard()
    assert not path.exists()


def test_run_checkpoint_refuses_links_and_directories(tmp_path):
    target = tmp_path / "mine.npz"
    np.savez(target, x=np.zeros(2))
    link = tmp_path / ".out.partial.npz"
    link.symlink_to(target)
    ck = RunCheckpoint(link, "a" * 64, kind="k")
    for act in (lambda: ck.save({"done": 1}), ck.discard, ck.load):
        with pytest.raises(MemlensError, match="symbolic link"):
            act()
    assert link.is_symlink() and is_run_checkpoint(target) is False
    link.unlink()
    link.mkdir()
    with pytest.raises(MemlensError, match="is a directory"):
        ck.save({"done": 1})
    assert link.is_dir()


def test_legacy_checkpoints_are_memlens_checkpoints(tmp_path):
    torch.save({"format": "memlens-gradients-partial", "position": 3}, tmp_path / "a.pt")
    np.savez(tmp_path / "b.npz", fingerprint=np.array("x"), done=np.array(1),
             nll=np.zeros(2))
    torch.save({"format": "something-else"}, tmp_path / "c.pt")
    assert is_run_checkpoint(tmp_path / "a.pt") and is_run_checkpoint(tmp_path / "b.npz")
    assert not is_run_checkpoint(tmp_path / "c.pt")


def test_lock_file_that_is_a_link_or_fifo_is_refused(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    (tmp_path / ".out.lock").symlink_to(mine)
    with pytest.raises(MemlensError, match="lock"):
        with output_lock(tmp_path / "out"):
            pass
    assert (tmp_path / ".out.lock").is_symlink() and mine.read_text() == "mine"
    os.mkfifo(tmp_path / ".f.lock")
    with pytest.raises(MemlensError, match="not a regular file"):
        with output_lock(tmp_path / "f"):
            pass
