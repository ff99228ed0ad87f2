"""memlens.core and memlens.runtime: moved modules, options, THE block bootstrap, THE
checkpoint / resume / interrupt mechanism."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from memlens.core.errors import MemlensError
from memlens.runtime.bootstrap import (
    block_bootstrap,
    block_edges,
    block_sums,
    block_weights,
    percentile_interval,
)
from memlens.runtime.options import (
    OPTIONS,
    Bootstrap,
    Checkpointing,
    RunOptions,
    as_options,
    check_option,
    resolve_device,
    resolve_dtype,
)
from memlens.runtime.progress import (
    Interrupted,
    RunCheckpoint,
    fingerprint,
    interrupt_guard,
    partial_path,
    progress_bar,
    stop_point,
)


def _module(*names: str):
    """The first of ``names`` that imports (the analyses are being moved under
    memlens.analyses)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(names[0])


# -- the moves -----------------------------------------------------------------------------------
OLD_PATHS = ("memlens.errors", "memlens.limits", "memlens.io", "memlens.distributed",
             "memlens.plotting", "memlens.decay", "memlens.speech", "memlens.gradients",
             "memlens.signatures", "memlens.ablation")


@pytest.mark.parametrize("old", OLD_PATHS)
def test_the_0_1_module_paths_are_gone_and_named_in_the_changelog(old):
    """0.2.0 moved these modules (CHANGELOG.md names each new path); no alias is left."""
    with pytest.raises(ImportError):
        importlib.import_module(old)
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert f"`{old}" in changelog


def test_the_shared_services_are_one_object_each():
    import memlens.data.files
    import memlens.results
    import memlens.runtime.io
    import memlens.runtime.result
    from memlens.core.files import atomic_path, read_text, write_atomic

    assert memlens.MemlensError is MemlensError
    assert memlens.results.Result is memlens.runtime.result.Result
    for name in ("clean", "curves", "plot_series", "write_result_dir", "write_table_csv",
                 "check_verdict", "load_result", "SavedResult", "VERDICT_KEYS"):
        assert hasattr(memlens.results, name)
    assert memlens.data.files.read_text is read_text
    assert memlens.runtime.io.write_atomic is write_atomic
    assert memlens.runtime.io.atomic_path is atomic_path


def test_read_bytes_bounds(tmp_path):
    from memlens.core.files import read_bytes, read_text

    f = tmp_path / "a.txt"
    f.write_text("\ufeffhello\n")
    assert read_text(f) == "hello\n"
    assert read_bytes(f, max_bytes=100) == f.read_bytes()
    with pytest.raises(MemlensError, match="larger than the input limit of 3 bytes"):
        read_bytes(f, "corpus", max_bytes=3)
    with pytest.raises(MemlensError, match="not found"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(MemlensError, match="directory"):
        read_text(tmp_path)


# -- options -------------------------------------------------------------------------------------
def test_check_option_semantics():
    assert check_option("max_delay", 20) == 20
    assert check_option("max_delay", np.int64(3)) == 3
    assert type(check_option("max_delay", np.int64(3))) is int
    assert check_option("checkpoint_every", 2) == 2.0
    assert check_option("bootstrap", None) is None
    assert check_option("seed", 2**63 - 1) == 2**63 - 1
    bad = [("max_delay", True, "must be an integer"), ("max_delay", 2.0, "must be an integer"),
           ("max_delay", -1, r"in 0\.\."), ("seed", 2**63, r"seed must be in 0\.\."),
           ("seed", -1, "seed must be"), ("blocks", 0, "blocks must be in 1"),
           ("checkpoint_every", float("nan"), "finite"),
           ("checkpoint_every", float("inf"), "finite"), ("checkpoint_every", 0, "> 0"),
           ("checkpoint_every", True, "must be a number"), ("tolerance", 1.0, r"\[0, 1\)"),
           ("progress", 1, "True or False"), ("dtype", "float16", "unknown dtype"),
           ("device", "gpu", "unknown device"), ("device", "cuda:x", "unknown device"),
           ("checkpoint", 3, "file path"), ("blocks", None, "must be given"),
           ("no_such_option", 1, "unknown option")]
    for name, value, message in bad:
        with pytest.raises(MemlensError, match=message) as info:
            check_option(name, value)
        assert "\n" not in str(info.value)
    with pytest.raises(MemlensError, match="^--max-delay must be an integer"):
        check_option("max_delay", "3", "--max-delay")
    for opt in OPTIONS.values():  # every declaration is complete and its default valid
        assert opt.help and opt.cli_flag.startswith("--")
        assert check_option(opt.name, opt.default) == opt.default


def test_run_options_validate_and_override(tmp_path):
    opts = RunOptions()
    assert opts.bootstrap == Bootstrap() and opts.checkpoint == Checkpointing()
    assert opts.torch_device().type in ("cpu", "cuda")
    assert opts.torch_dtype() is torch.float32
    with pytest.raises(MemlensError, match="bootstrap must be in 0"):
        Bootstrap(resamples=-1)
    with pytest.raises(MemlensError, match="seed must be an integer"):
        Bootstrap(seed=True)
    with pytest.raises(MemlensError, match="checkpoint_every must be > 0"):
        Checkpointing(path="x.pt", every=-1)
    with pytest.raises(MemlensError, match="resume needs a checkpoint path"):
        Checkpointing(resume=True)
    with pytest.raises(MemlensError, match="must be a Bootstrap"):
        RunOptions(bootstrap=200)
    with pytest.raises(MemlensError, match="unknown dtype"):
        RunOptions(dtype="half")
    out = as_options(None, bootstrap=50, blocks=10, seed=3, checkpoint=tmp_path / "c.pt",
                     checkpoint_every=5, resume=True, keep_checkpoint=True, stop_after=7,
                     device="cpu", dtype="float64", progress=True, distributed=False)
    assert out.bootstrap == Bootstrap(50, 10, 3)
    assert out.checkpoint == Checkpointing(tmp_path / "c.pt", 5.0, True, True, 7)
    assert (out.device, out.dtype, out.progress, out.distributed) == ("cpu", "float64", True,
                                                                        False)
    again = as_options(out, bootstrap=None, resume=None, seed=4)  # None: not given
    assert again.bootstrap == Bootstrap(50, 10, 4) and again.checkpoint.resume
    assert as_options(out, bootstrap=Bootstrap(1)).bootstrap == Bootstrap(1)
    assert Bootstrap().count(200) == 200 and Bootstrap(0).count(200) == 0
    with pytest.raises(MemlensError, match="unknown run option 'resamples'"):
        as_options(None, resamples=3)
    with pytest.raises(MemlensError, match="must be a RunOptions"):
        as_options({"device": "cpu"})
    with pytest.raises(MemlensError, match="stop_after must be in 0"):
        as_options(None, stop_after=-1)


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(MemlensError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MemlensError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_dtype("float64") is torch.float64
    assert resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(MemlensError, match="unknown dtype"):
        resolve_dtype(torch.float16)
    train = _module("memlens.training.lm", "memlens.training.lm")
    if train.resolve_device is not resolve_device:  # until training/lm.py imports it
        assert train.resolve_device("cpu") == resolve_device("cpu")


# -- THE block bootstrap: bit-identical to the three earlier functions -----------------------------
def _gradients_via_runtime(block_sums_, block_counts, D, n_boot=200, level=0.95, seed=0):
    """metrics.block_bootstrap re-expressed with runtime.bootstrap (the replacement)."""
    B, S = block_counts.shape
    se, low, high = (np.full(S, np.nan) for _ in range(3))
    if B < 2 or n_boot < 1:
        return {"se": se, "low": low, "high": high}
    weights = block_weights(B, n_boot, seed, draw="indices")
    Dt = torch.from_numpy(np.asarray(D, dtype=np.float64))
    for tau in range(S):
        flat = block_sums_[:, tau].reshape(B, -1)
        tot = weights @ block_counts[:, tau].astype(np.float64)
        ok = tot > 0
        if not ok.any():
            continue
        means = (weights[ok] @ flat) / tot[ok, None]
        gn = torch.from_numpy(means.reshape(ok.sum(), *block_sums_.shape[2:])) @ Dt
        sums = torch.linalg.svdvals(gn).sum(-1).numpy()
        se[tau] = sums.std(ddof=1) if sums.size > 1 else np.nan
        low[tau], high[tau] = percentile_interval(sums, level)
    return {"se": se, "low": low, "high": high}


def _signatures_via_runtime(correct, nll, valid, entropy, blocks=20, resamples=1000, seed=0):
    """signature.bootstrap re-expressed with runtime.bootstrap (the replacement)."""
    if resamples < 1:
        nan = np.full(correct.shape[1], np.nan)
        return nan, nan.copy(), nan.copy(), nan.copy()
    edges = block_edges(correct.shape[0], blocks)
    c = block_sums(np.where(valid, correct, 0).astype(np.float64), edges)
    e = block_sums(np.where(valid, nll, 0.0), edges)
    m = block_sums(valid.astype(np.float64), edges)
    w = block_weights(len(edges) - 1, resamples, seed)
    cnt = np.maximum(w @ m, 1.0)
    acc = (w @ c) / cnt
    bits = np.maximum(0.0, entropy[None, :] - (w @ e) / cnt)
    lo, hi = percentile_interval(acc, quantiles=(0.025, 0.975))
    blo, bhi = percentile_interval(bits, quantiles=(0.025, 0.975))
    return lo, hi, blo, bhi


def _ablation_via_runtime(values, blocks=20, resamples=1000, seed=0, level=0.95):
    """block_mean_interval re-expressed with runtime.bootstrap (the replacement)."""
    R, N = values.shape
    if resamples < 1 or N < 2:
        return np.full(R, np.nan), np.full(R, np.nan)
    edges = block_edges(N, blocks, min_blocks=2)
    sums = block_sums(values, edges, axis=1)
    counts = np.diff(edges).astype(np.float64)
    low, high, _ = block_bootstrap(lambda w: (w @ sums.T) / (w @ counts)[:, None],
                                   len(edges) - 1, resamples, seed, level=level)
    return low, high


def _same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # exact; NaN == NaN


@pytest.mark.parametrize("trial", range(6))
def test_bootstrap_identical_to_gradients(trial):
    metrics = _module("memlens.analyses.gradients.metrics", "memlens.gradients.metrics")
    rng = np.random.default_rng(100 + trial)
    B, S, H, E = [(5, 3, 4, 3), (20, 4, 3, 2), (7, 2, 2, 2), (1, 3, 2, 2), (13, 5, 3, 3),
                  (2, 2, 2, 2)][trial]
    sums = rng.normal(size=(B, S, H, E))
    counts = rng.integers(0, 4, size=(B, S))
    counts[:, 0] = 0 if trial == 4 else counts[:, 0]  # a delay without any pair
    D = rng.normal(size=(E, E))
    for n_boot, level, seed in [(50, 0.95, trial), (17, 0.9, 2**40 + trial), (0, 0.95, 0),
                                (1, 0.95, 1)]:
        want = metrics.block_bootstrap(sums, counts, D, n_boot, level, seed)
        got = _gradients_via_runtime(sums, counts, D, n_boot, level, seed)
        for key in ("se", "low", "high"):
            _same(got[key], want[key])


@pytest.mark.parametrize("trial", range(6))
def test_bootstrap_identical_to_signatures(trial):
    signature = _module("memlens.analyses.signatures.signature", "memlens.signatures.signature")
    rng = np.random.default_rng(200 + trial)
    n, K1 = [(100, 4), (37, 3), (5, 2), (1, 2), (250, 6), (19, 1)][trial]
    correct = rng.random((n, K1)) < 0.6
    nll = rng.exponential(size=(n, K1))
    valid = rng.random((n, K1)) < 0.9
    entropy = rng.random(K1) * 3
    for blocks, resamples, seed in [(20, 200, trial), (7, 33, 5), (100, 10, 2**62), (3, 0, 0)]:
        want = signature.bootstrap_intervals(correct, nll, valid, entropy, blocks, resamples, seed)
        got = _signatures_via_runtime(correct, nll, valid, entropy, blocks, resamples, seed)
        for g, w in zip(got, want):
            _same(g, w)


@pytest.mark.parametrize("trial", range(6))
def test_bootstrap_identical_to_ablation(trial):
    result = _module("memlens.analyses.ablation.result", "memlens.ablation.result")
    rng = np.random.default_rng(300 + trial)
    R, N = [(6, 100), (1, 7), (3, 2), (4, 1), (9, 1000), (2, 41)][trial]
    values = rng.normal(size=(R, N))
    for blocks, resamples, seed, level in [(20, 300, trial, 0.95), (2, 50, 9, 0.9),
                                           (500, 20, 1, 0.99), (20, 0, 0, 0.95)]:
        want = result.block_mean_interval(values, blocks, resamples, seed, level)
        got = _ablation_via_runtime(values, blocks, resamples, seed, level)
        for g, w in zip(got, want):
            _same(g, w)


def test_block_pieces():
    assert block_edges(10, 3).tolist() == [0, 3, 6, 10]
    assert block_edges(3, 20).tolist() == [0, 1, 2, 3]
    assert block_edges(5, 1, min_blocks=2).tolist() == [0, 2, 5]
    for draw in ("multinomial", "indices"):
        w = block_weights(7, 40, 3, draw)
        assert w.shape == (40, 7) and w.dtype == np.float64
        assert (w.sum(1) == 7).all()
        _same(w, block_weights(7, 40, np.random.default_rng(3), draw))
    assert block_weights(7, 0).shape == (0, 7)
    with pytest.raises(ValueError, match="unknown draw"):
        block_weights(3, 3, 0, "poisson")
    _same(block_sums(np.arange(10.0), block_edges(10, 3)), [3.0, 12.0, 30.0])
    lo, hi, draws = block_bootstrap(lambda w: w @ np.arange(4.0), 4, 0)
    assert np.isnan(lo) and np.isnan(hi) and draws.shape == (0,)


# -- fingerprints --------------------------------------------------------------------------------
def _parts():
    model = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(model.weight, 0.5)
    torch.nn.init.zeros_(model.bias)
    return ({"b": 1, "a": [1.5, "x", None, True]}, np.arange(6).reshape(2, 3),
            torch.arange(4, dtype=torch.float32), model, b"raw")


def test_fingerprint_stable_and_sensitive(tmp_path):
    fp = fingerprint(*_parts())
    assert fp == fingerprint(*_parts()) and len(fp) == 64
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})  # key order
    assert fingerprint([1, 2]) == fingerprint((1, 2))
    different = [fingerprint({"b": 2, "a": [1.5, "x", None, True]}), fingerprint(1),
                 fingerprint(1.0), fingerprint("1"), fingerprint(True), fingerprint([1]),
                 fingerprint(np.arange(6)), fingerprint(np.arange(6).reshape(3, 2)),
                 fingerprint(np.arange(6.0)), fingerprint(torch.arange(6)),
                 fingerprint("a", "b"), fingerprint("ab"), fingerprint(), fp]
    assert len(set(different)) == len(different)
    f = tmp_path / "model.bin"
    f.write_bytes(b"one")
    first = fingerprint(f)
    f.write_bytes(b"two")
    assert fingerprint(f) != first and fingerprint(tmp_path / "none") == fingerprint(
        tmp_path / "other-missing")
    with pytest.raises(TypeError):
        fingerprint(object())
    # the same in a fresh process (no hash randomisation, no per-process state)
    code = textwrap.dedent("""
        import sys; sys.path.insert(0, %r)
        from test_runtime import _parts
        from memlens.runtime.progress import fingerprint
        print(fingerprint(*_parts()))
    """) % str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == fp


# -- checkpoints ---------------------------------------------------------------------------------
def _torch_payload():
    return {"position": 7, "best": 1.25, "history": [{"epoch": 1, "loss": 2.5}],
            "states": [[torch.ones(2, 3)], [torch.zeros(4, dtype=torch.float64)]],
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []},
            "none": None, "rng": torch.get_rng_state()}


def test_checkpoint_round_trip_torch_and_numpy(tmp_path):
    ck = RunCheckpoint(tmp_path / "run.pt", "f" * 64, kind="gradients")
    payload = _torch_payload()
    ck.save(payload)
    back = ck.load(like=_torch_payload())
    assert back["position"] == 7 and back["history"] == payload["history"]
    assert torch.equal(back["states"][1][0], payload["states"][1][0])
    assert back["optimizer"]["state"][0]["step"].item() == 3.0
    assert torch.equal(back["rng"], payload["rng"])

    npz = RunCheckpoint(tmp_path / "run.npz", "f" * 64, kind="ablation")
    nll = np.random.default_rng(0).normal(size=50)
    npz.save({"nll": nll, "done": np.int64(3), "name": "x", "flags": np.array([True, False])})
    got = npz.load(like={"nll": np.zeros(50), "done": 0, "name": "", "flags": np.ones(2, bool)})
    _same(got["nll"], nll)
    assert got["done"] == 3 and got["name"] == "x"
    with zipfile.ZipFile(tmp_path / "run.npz") as zf:  # plain arrays, readable without pickle
        assert all(n.endswith(".npy") for n in zf.namelist())
    with pytest.raises(MemlensError, match=r"nll is \('array', \(50,\)"):
        npz.load(like={"nll": np.zeros(49), "done": 0, "name": "", "flags": np.ones(2, bool)})
    with pytest.raises(MemlensError, match="'extra' missing or unexpected"):
        npz.load(like={"nll": nll, "done": 0, "name": "", "flags": nll[:2] > 0, "extra": 1})
    with pytest.raises(TypeError, match="array or scalar"):
        npz.save({"bad": np.array([object()])})
    with pytest.raises(TypeError, match="tensors, not numpy"):
        ck.save({"a": np.zeros(2)})


def test_foreign_and_tampered_checkpoints_refused(tmp_path):
    path = tmp_path / "run.pt"
    RunCheckpoint(path, "a" * 64, kind="gradients").save(_torch_payload())
    with pytest.raises(MemlensError, match="different model, corpus or settings"):
        RunCheckpoint(path, "b" * 64, kind="gradients").load()
    with pytest.raises(MemlensError, match="different model, corpus or settings"):
        RunCheckpoint(path, "a" * 64, kind="ablation").load()
    with pytest.raises(MemlensError, match="nothing to resume"):
        RunCheckpoint(tmp_path / "missing.pt", "a" * 64).load()
    with pytest.raises(MemlensError, match="nothing to resume"):
        RunCheckpoint(None, "a" * 64).load()
    raw = torch.load(path, weights_only=True)
    raw["payload"]["states"][0][0][0, 0] = 2.0  # edit a number, keep the digest
    torch.save(raw, path)
    with pytest.raises(MemlensError, match="damaged or was edited .digest mismatch") as info:
        RunCheckpoint(path, "a" * 64, kind="gradients").load()
    assert "\n" not in str(info.value)
    path.write_bytes(b"not a zip")
    with pytest.raises(MemlensError, match="cannot be read safely"):
        RunCheckpoint(path, "a" * 64).load()
    torch.save({"format": "memlens-gradients-partial", "position": 3}, path)  # old format
    with pytest.raises(MemlensError, match="earlier memlens version"):
        RunCheckpoint(path, "a" * 64).load()

    npz = tmp_path / "run.npz"
    ck = RunCheckpoint(npz, "a" * 64, kind="ablation")
    ck.save({"nll": np.arange(5.0), "done": 2})
    with np.load(npz) as z:
        data = {k: z[k] for k in z.files}
    data["nll"][1] = 9.0
    np.savez(npz, **data)
    with pytest.raises(MemlensError, match="digest mismatch"):
        ck.load()
    meta = json.loads(str(data["__memlens__"]))
    meta["fingerprint"] = "c" * 64
    data["__memlens__"] = np.array(json.dumps(meta))
    np.savez(npz, **data)
    with pytest.raises(MemlensError, match="different model"):
        ck.load()
    np.savez(npz, nll=np.arange(3.0), done=1, fingerprint="x", digest="y")  # the old format
    with pytest.raises(MemlensError, match="earlier memlens version"):
        ck.load()
    np.savez(npz, **{"__memlens__": np.array("{")})
    with pytest.raises(MemlensError, match="unreadable metadata"):
        ck.load()


def test_npz_header_lie_refused_before_loading(tmp_path):
    """A member whose header declares far more data than it holds is refused unread."""
    path = tmp_path / "bomb.npz"
    header = {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("nll.npy", buf.getvalue() + b"\0" * 64)
    with pytest.raises(MemlensError, match="declares more data than it holds"):
        RunCheckpoint(path, "a" * 64).load()


def test_due_finish_and_disabled(tmp_path):
    off = RunCheckpoint(None, "x")
    assert not off.enabled and not off.due()
    off.save({"a": 1})
    off.finish(keep=True, payload={"a": 1})
    assert isinstance(off.stop({"a": 1}, 1, 2), KeyboardInterrupt)
    assert not isinstance(off.stop({"a": 1}, 1, 2), Interrupted)
    path = tmp_path / "c.npz"
    ck = RunCheckpoint(path, "x", every=0.0)
    time.sleep(0.01)
    assert ck.due()
    ck.save({"done": 1})
    assert RunCheckpoint(path, "x", every=3600).due() is False
    ck.finish(keep=True)                      # kept as it is
    assert ck.load()["done"] == 1
    ck.finish(keep=True, payload={"done": 2})  # the final state
    assert ck.load()["done"] == 2
    ck.finish(keep=False)
    assert not path.exists()
    assert partial_path(tmp_path / "out", ".npz") == tmp_path / ".out.partial.npz"
    assert stop_point(3, 10, None) == 10 and stop_point(3, 10, 4) == 7
    assert stop_point(3, 10, 40) == 10


# -- the loop: stop_after, interrupts, resume ----------------------------------------------------
def _loop(ck: RunCheckpoint, total: int, stop_after=None, resume=False, on_item=None):
    """A toy checkpointed loop written as every analysis will write it: sums of squares."""
    state = {"done": 0, "acc": np.zeros(3)}
    if resume:
        state = ck.load(like=state)
    done, acc = int(state["done"]), state["acc"].copy()
    end = stop_point(done, total, stop_after)
    with interrupt_guard(ck.enabled) as guard:
        while done < end and not guard.requested:
            acc += np.array([done, done ** 2, 1.0])
            done += 1
            if on_item is not None:
                on_item(done)
            if ck.due():
                ck.save({"done": done, "acc": acc})
        if done < total:
            raise ck.stop({"done": done, "acc": acc}, done, total, unit="items")
    ck.finish(keep=False)
    return acc


def test_stop_after_and_resume_give_the_uninterrupted_result(tmp_path):
    full = _loop(RunCheckpoint(None, "x"), 25)
    ck = RunCheckpoint(tmp_path / "loop.npz", fingerprint("loop", 25), every=3600)
    with pytest.raises(Interrupted) as info:
        _loop(ck, 25, stop_after=10)
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt)
    assert (exc.done, exc.position, exc.total) == (10, 10, 25)
    assert exc.checkpoint == str(tmp_path / "loop.npz")
    assert str(exc) == (f"interrupted after 10 of 25 items; progress saved to {exc.checkpoint}; "
                        "rerun with --resume to continue")
    with pytest.raises(Interrupted):
        _loop(ck, 25, stop_after=10, resume=True)
    _same(_loop(ck, 25, resume=True), full)
    assert not (tmp_path / "loop.npz").exists()
    head = Interrupted("c.pt", 5, 9, head="interrupted at token 5/9")
    assert str(head).startswith("interrupted at token 5/9; progress saved to c.pt;")


def test_interrupt_guard_catches_sigterm_and_sigint(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    ck = RunCheckpoint(tmp_path / "sig.npz", "x", every=3600)

    def signal_at(n, sig):
        def hook(done):
            if done == n:
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # let the handler run
        return hook

    with pytest.raises(Interrupted) as info:
        _loop(ck, 1000, on_item=signal_at(30, signal.SIGTERM))
    assert 30 <= info.value.done < 1000
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with pytest.raises(Interrupted):  # SIGINT alike, then the resumed run completes
        _loop(ck, 1000, resume=True, on_item=signal_at(500, signal.SIGINT))
    _same(_loop(ck, 1000, resume=True), _loop(RunCheckpoint(None, "x"), 1000))
    with interrupt_guard(enabled=False) as guard:  # off: Ctrl-C is a KeyboardInterrupt
        assert not guard.active
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_second_signal_while_saving_does_not_kill_the_save(tmp_path):
    """A child process is sent SIGTERM, then SIGTERM and SIGINT again while it saves (a slow
    save): it still writes a complete checkpoint and exits with Interrupted; resuming
    finishes with the uninterrupted numbers."""
    ready, path = tmp_path / "saving", tmp_path / "child.npz"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import numpy as np
        import memlens.runtime.progress as progress
        from memlens.runtime.progress import Interrupted, RunCheckpoint, interrupt_guard
        real = progress.atomic_path
        class Slow:
            def __init__(self, p): self.cm = real(p)
            def __enter__(self):
                Path({str(ready)!r}).write_text("1"); time.sleep(1.0); return self.cm.__enter__()
            def __exit__(self, *a): return self.cm.__exit__(*a)
        progress.atomic_path = Slow
        ck = RunCheckpoint({str(path)!r}, "child", every=3600)
        done, acc = 0, np.zeros(1)
        try:
            with interrupt_guard(True) as guard:
                print("started", flush=True)
                while done < 10**7 and not guard.requested:
                    acc += done; done += 1
                    if done % 1000 == 0: time.sleep(0.001)
                if done < 10**7:
                    raise ck.stop({{"done": done, "acc": acc}}, done, 10**7)
        except Interrupted as exc:
            print("interrupted", exc.done, flush=True); sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.01)
        assert ready.exists()
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    done = int(out.split()[-1])
    saved = RunCheckpoint(path, "child").load()
    assert saved["done"] == done
    assert saved["acc"][0] == done * (done - 1) / 2


def test_progress_bar_on_stderr(capsys):
    with progress_bar(5, True, "work", unit="tok") as bar:
        bar.update(5)
    err = capsys.readouterr().err
    assert "work" in err and "5/5" in err
    with progress_bar(5, False, "quiet") as bar:
        bar.update(5)
    assert "quiet" not in capsys.readouterr().err
    assert list(progress_bar(enabled=False, iterable=range(3))) == [0, 1, 2]


def test_options_build_argparse_arguments():
    import argparse

    parser = argparse.ArgumentParser()
    for name in ("bootstrap", "blocks", "seed", "dtype", "resume", "checkpoint_every"):
        opt = OPTIONS[name]
        parser.add_argument(opt.cli_flag, **opt.argparse_kwargs())
    parser.add_argument(OPTIONS["max_delay"].cli_flag,
                        **OPTIONS["max_delay"].argparse_kwargs(default=50))
    args = parser.parse_args(["--bootstrap", "7", "--dtype", "float64", "--resume"])
    assert (args.bootstrap, args.blocks, args.seed, args.dtype, args.resume,
            args.checkpoint_every, args.max_delay) == (7, 20, 0, "float64", True, 300.0, 50)
    for name in ("bootstrap", "blocks", "seed", "max_delay"):
        check_option(name, getattr(args, name), OPTIONS[name].cli_flag)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "float16"])
