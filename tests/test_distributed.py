"""Sharded state gradients over torch.distributed: 2 gloo processes on CPU reproduce the
single-process averages of a trained LSTM (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import memlens
from memlens.analyses.gradients import EngineSettings
from memlens.models.loading import load_model
from memlens.runtime.distributed import default_warmup, finish
from memlens.runtime.options import as_options
from memlens.training import TrainConfig, train

K = 12
WARMUPS = (0, 16, 64, None)  # None: the documented default max(1000, 4 K)


def _corpus(n_sent: int = 300, seed: int = 0) -> str:
    """Sentences with a long-range agreement (subject number -> verb form) between noise."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_sent):
        plural = rng.random() < 0.5
        filler = " ".join(rng.choice(["big", "old", "red", "small", "very"],
                                     size=rng.integers(0, 4)))
        lines.append(f"the {filler} {'dogs' if plural else 'dog'} "
                     f"{'run' if plural else 'runs'} {rng.choice(['home', 'away', 'fast'])} .")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread each (the spawned processes share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("dist")
    text = root / "corpus.txt"
    text.write_text(_corpus())
    model = train(TrainConfig(train=str(text), valid=str(text), out=str(root / "lm.pt"),
                              emb=8, hidden=16, epochs=1, bptt=10, batch=8, optimizer="adam",
                              lr=0.01, dropout=0.0, device="cpu", progress=False),
                  log=lambda *_: None)
    tokens = memlens.load_corpus(str(text)).tokens[:1500]
    ids = model.vocab.encode(tokens)
    labels = [t if t in ("dog", "dogs", "run", "runs") else None for t in tokens]
    return root, ids, labels


def _run(model, ids, labels, segment=None, **kw):
    """state_gradients with the engine knobs (warmup, on_chunk, flush_every) and run options
    (checkpoint, keep_checkpoint, stop_after, resume, distributed) of ``kw``."""
    knobs = {k: kw.pop(k) for k in ("warmup", "on_chunk", "flush_every") if k in kw}
    return memlens.state_gradients(model, ids, K, classes=labels,
                                   context=None if segment is None else f"segment:{segment}",
                                   options=as_options(device="cpu", bootstrap=0, blocks=6, **kw),
                                   engine=EngineSettings(class_ci_delays=(0, 3, K), **knobs))


def _arrays(res) -> dict:
    raw = res.raw
    return {"sums": raw.sums, "counts": raw.counts, "class_sums": raw.class_sums,
            "class_counts": raw.class_counts, "block_sums": raw.block_sums,
            "block_counts": raw.block_counts, "class_block_sums": raw.class_block_sums,
            "class_block_counts": raw.class_block_counts}


def _worker(rank: int, world: int, root: str, ids, labels) -> None:
    import contextlib
    import io

    import torch.distributed as dist

    from memlens.cli import main
    from memlens.core.errors import MemlensError

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank,
                            world_size=world)
    report = {}
    try:
        model = load_model(f"{root}/lm.pt").model
        for w in WARMUPS:
            res = _run(model, ids, labels, warmup=w,
                       checkpoint=f"{root}/.ck.partial.pt", keep_checkpoint=w is None)
            if rank == 0:
                np.savez(f"{root}/dist_{w}.npz", **_arrays(res))
                report["settings"] = res.settings

        res = _run(model, ids, labels, segment=20)  # --segment cuts at absolute positions
        if rank == 0:
            np.savez(f"{root}/segment.npz", **_arrays(res))
        if rank == 0:  # rank 0 alone, not sharded: no collective, no hang
            res = _run(model, ids, labels, distributed=False)
            np.savez(f"{root}/alone.npz", **_arrays(res))
            report["alone_world_size"] = res.settings["world_size"]
        # signatures' state extraction, sharded and all-gathered
        from memlens.models.encoder import as_encoder
        from memlens.models.states import View
        from memlens.runtime.distributed import extract_states_sharded

        view = View(0, "hidden", "all")
        states = extract_states_sharded(as_encoder(model), ids, [view], warmup=200)[view]
        if rank == 0:
            np.save(f"{root}/states.npy", states)
        # interrupt both ranks mid-shard, resume per rank: the same sums as straight through
        from memlens.runtime.progress import Interrupted

        try:
            _run(model, ids, labels, checkpoint=f"{root}/.ir.partial.pt", stop_after=300)
        except Interrupted as exc:
            report["interrupted"] = exc.checkpoint
        res = _run(model, ids, labels, checkpoint=f"{root}/.ir.partial.pt", resume=True)
        if rank == 0:
            np.savez(f"{root}/resumed.npz", **_arrays(res))

        def boom(pos):  # an error on rank 1 only, during the accumulation
            if rank == 1:
                raise MemlensError("boom on rank 1")
        try:
            _run(model, ids, labels, on_chunk=boom)
        except MemlensError as exc:
            report["accumulation_error"] = str(exc)
        try:  # an option error on rank 1 only, before the accumulation
            _run(model, ids, labels, flush_every=0 if rank == 1 else 256)
        except MemlensError as exc:
            report["option_error"] = str(exc)
        # the CLI inside this process group: rank 0 cannot claim --out, rank 1 stops too
        foreign = Path(root) / "foreign"
        foreign.mkdir(exist_ok=True)
        (foreign / "notes.txt").write_text("mine")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            report["cli_rc"] = main(["gradients", "--model", f"{root}/lm.pt", "--corpus",
                                     f"{root}/corpus.txt", "--max-delay", "3",
                                     "--out", str(foreign), "--no-progress"])
        report["cli_stderr"] = err.getvalue()
    finally:
        finish()
    with open(f"{root}/report{rank}.json", "w") as f:
        json.dump(report, f)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Worst per-delay relative Frobenius difference of the mean gradients a vs b (S x ...)."""
    num = np.sqrt(((a - b) ** 2).reshape(a.shape[0], -1).sum(1))
    den = np.sqrt((b ** 2).reshape(b.shape[0], -1).sum(1))
    return float((num / den).max())


def test_two_gloo_processes_reproduce_one_process(trained):
    root, ids, labels = trained
    model = load_model(root / "lm.pt").model
    single = _arrays(_run(model, ids, labels))
    mp.spawn(_worker, args=(2, str(root), ids, labels), nprocs=2, join=True)
    diffs = {}
    for w in WARMUPS:
        got = dict(np.load(root / f"dist_{w}.npz", allow_pickle=False))
        for key in ("counts", "class_counts", "block_counts", "class_block_counts"):
            np.testing.assert_array_equal(got[key], single[key], err_msg=key)  # exact
        cnt = single["counts"][:, None, None]
        diffs[default_warmup(K) if w is None else w] = _rel(got["sums"] / cnt,
                                                            single["sums"] / cnt)
    print("max per-delay relative difference by warm-up W:", diffs)
    reports = [json.loads((root / f"report{r}.json").read_text()) for r in (0, 1)]
    settings = reports[0]["settings"]
    assert settings["world_size"] == 2 and settings["warmup"] == default_warmup(K)
    assert diffs[default_warmup(K)] <= 1e-6
    assert diffs[0] > diffs[default_warmup(K)]  # a cold start at the shard start is visible
    got = dict(np.load(root / "dist_None.npz", allow_pickle=False))
    for key in ("class_sums", "block_sums", "class_block_sums"):
        scale = np.abs(single[key]).max()
        assert np.abs(got[key] - single[key]).max() <= 1e-6 * scale, key
    alone = dict(np.load(root / "alone.npz", allow_pickle=False))
    for key, val in single.items():
        np.testing.assert_array_equal(alone[key], val, err_msg=key)
    assert reports[0]["alone_world_size"] == 1
    from memlens.models.encoder import as_encoder
    from memlens.models.states import View, extract_states

    view = View(0, "hidden", "all")
    states = extract_states(as_encoder(model), ids, [view])[view]
    sharded = np.load(root / "states.npy")
    assert sharded.shape == states.shape
    assert np.abs(sharded - states).max() <= 1e-6 * np.abs(states).max()
    seg_single = _arrays(_run(model, ids, labels, segment=20))
    seg = dict(np.load(root / "segment.npz", allow_pickle=False))
    np.testing.assert_array_equal(seg["counts"], seg_single["counts"])
    assert _rel(seg["sums"] / seg["counts"][:, None, None],
                seg_single["sums"] / seg_single["counts"][:, None, None]) <= 1e-6
    assert reports[1]["interrupted"].endswith(".ir.partial.rank1.pt")
    resumed = dict(np.load(root / "resumed.npz", allow_pickle=False))
    for key, val in got.items():
        np.testing.assert_array_equal(resumed[key], val, err_msg=key)
    assert not list(root.glob(".ir.partial*"))
    # an error on one rank stops the other with a one-line error instead of a hang
    assert reports[1]["accumulation_error"] == "boom on rank 1"
    assert "another process of the 2 failed during the state-gradient accumulation" in \
        reports[0]["accumulation_error"]
    assert "flush_every must be positive" in reports[1]["option_error"]
    assert "failed before the state-gradient accumulation" in reports[0]["option_error"]
    # the CLI in a process group: rank 0 refuses --out, rank 1 stops as well
    assert reports[0]["cli_rc"] == 2 and reports[1]["cli_rc"] == 2
    assert "not a memlens result" in reports[0]["cli_stderr"] or \
        "--out" in reports[0]["cli_stderr"], reports[0]["cli_stderr"]
    assert "failed checking --out" in reports[1]["cli_stderr"]
    # per-rank checkpoints were kept (keep_checkpoint) for the default W, named per rank
    assert sorted(p.name for p in root.glob(".ck.partial.rank*.pt")) == [
        ".ck.partial.rank0.pt", ".ck.partial.rank1.pt"]


def _torchrun(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "memlens", "gradients",
                           "--model", str(root / "lm.pt"), "--corpus", str(root / "small.txt"),
                           "--max-delay", "5", "--bootstrap", "0", "--no-progress",
                           "--device", "cpu", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.slow
def test_torchrun_cli_writes_once_and_matches(trained, tmp_path):
    root, _, _ = trained
    (root / "small.txt").write_text(_corpus(120, seed=1))
    out = tmp_path / "dist"
    proc = _torchrun(root, "--out", str(out), "--warmup", "300")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 only
    assert "2 processes" in proc.stdout
    assert not list(tmp_path.glob(".dist.partial*"))  # per-rank checkpoints removed
    doc = json.loads((out / "result.json").read_text())
    assert doc["settings"]["world_size"] == 2 and doc["settings"]["warmup"] == 300
    from memlens.cli import main

    assert main(["gradients", "--model", str(root / "lm.pt"), "--corpus",
                 str(root / "small.txt"), "--max-delay", "5", "--bootstrap", "0",
                 "--no-progress", "--device", "cpu", "--out", str(tmp_path / "one")]) == 0
    # commands that do not shard refuse torchrun instead of racing for --out
    refused = subprocess.run([sys.executable, "-m", "memlens", "eval", "--model", "m.pt",
                              "--corpus", "c.txt"], env={**os.environ, "WORLD_SIZE": "2"},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "does not run under torchrun" in refused.stderr
    a = np.load(out / "gradients.npz")
    b = np.load(tmp_path / "one" / "gradients.npz")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    assert np.abs(a["mean"] - b["mean"]).max() <= 1e-6 * np.abs(b["mean"]).max()


def _torchrun_command(command: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "memlens", command, *args],
                          capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.slow
def test_torchrun_signatures_and_ablation_match_one_process(trained, tmp_path):
    """Signatures: sharded state extraction (warm-up covering the stream: the states are the
    single stream's), rank 0 trains the decoders -> the single-process signature. Ablation:
    batches shared out over the ranks -> bit-identical losses."""
    from memlens.cli import main

    root, _, _ = trained
    corpus = root / "sig.txt"
    corpus.write_text(_corpus(150, seed=2))
    sig_args = ["--model", str(root / "lm.pt"), "--corpus", str(corpus), "--max-delay", "3",
                "--symbols", "top:12", "--control", "none", "--bootstrap", "50", "--blocks", "5",
                "--device", "cpu"]
    proc = _torchrun_command("signatures", *sig_args, "--warmup", "2000",
                             "--out", str(tmp_path / "sig2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 only
    assert main(["signatures", *sig_args, "--out", str(tmp_path / "sig1")]) == 0
    one = json.loads((tmp_path / "sig1" / "result.json").read_text())
    two = json.loads((tmp_path / "sig2" / "result.json").read_text())
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    a, b = np.load(tmp_path / "sig1" / "recall.npz"), np.load(tmp_path / "sig2" / "recall.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        if a[key].dtype.kind in "fiu":
            np.testing.assert_allclose(b[key], a[key], atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)

    abl_args = ["--model", str(root / "lm.pt"), "--corpus", str(corpus), "--context", "40",
                "--distances", "1,3,10", "--targets", "60", "--batch-size", "16",
                "--bootstrap", "100", "--blocks", "5", "--device", "cpu", "--no-progress"]
    proc = _torchrun_command("ablation", *abl_args, "--out", str(tmp_path / "abl2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1
    assert not list(tmp_path.glob(".abl2.partial*"))  # per-rank checkpoints removed
    assert main(["ablation", *abl_args, "--out", str(tmp_path / "abl1")]) == 0
    a, b = np.load(tmp_path / "abl1" / "ablation.npz"), np.load(tmp_path / "abl2" / "ablation.npz")
    for key in a.files:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)  # exact
    doc = json.loads((tmp_path / "abl2" / "result.json").read_text())
    assert doc["settings"]["world_size"] == 2
