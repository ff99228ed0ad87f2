"""Normalisation within the span of the inputs (issue 22, rank-deficient inputs): constant
(dead) input dimensions, tables with no more rows than dimensions, duplicate rows. The
full-rank Cholesky path stays bit-identical; the span path is checked against autograd."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.analyses.gradients import metrics
from memlens.analyses.gradients.normalize import (
    SPAN_RTOL,
    Normalization,
    embedding_normalization,
    span_normalization,
)
from memlens.cli import main
from memlens.core.errors import MemlensError, TrustWarning
from memlens.protocol import Site
from memlens.results import load_result
from memlens.runtime.options import Bootstrap, RunOptions

F64 = RunOptions(dtype="float64", bootstrap=Bootstrap(20, 4))
DEAD = [1, 3, 4]
SPAN = "normalised within the span of the inputs"

FRAMES_PY = '''
import torch
from torch import nn
import memlens


def frames():
    torch.manual_seed(0)
    return memlens.wrap(None, nn.GRU(5, 4))
'''


def dead_frames(T: int = 40, I: int = 8, seed: int = 1) -> torch.Tensor:
    """T x I float64 frames whose dimensions DEAD are constant (0, 0.5, -2: dead units)."""
    X = torch.randn(T, I, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    X[:, DEAD] = torch.tensor([0.0, 0.5, -2.0], dtype=torch.float64)
    return X


def span_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught
            if issubclass(w.category, TrustWarning) and SPAN in str(w.message)]


def run_quiet(*args, **kw):
    """state_gradients with every warning recorded: (result, span warning lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = memlens.state_gradients(*args, **kw)
    return r, span_warnings(caught)


def old_cholesky(table: np.ndarray):
    """The normalisation before issue 22 (full-rank inputs), verbatim."""
    table = np.asarray(table, dtype=np.float64)
    E = table.shape[1]
    mu = table.mean(axis=0)
    cov = np.cov(table, rowvar=False).reshape(E, E)
    D = np.linalg.cholesky(cov)
    sv = np.linalg.svd(D, compute_uv=False)
    condition = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    return mu, D, np.linalg.solve(D, np.eye(E)), condition


def delay_average(J: np.ndarray, K: int) -> np.ndarray:
    """mean over t of J[t, :, t - tau, :] for tau = 0..K (J: T x H x T x I): S x H x I."""
    T = J.shape[0]
    return np.stack([np.mean([J[t, :, t - tau] for t in range(tau, T)], axis=0)
                     for tau in range(K + 1)])


# -- (1) a continuous-input model with dead input dimensions ---------------------------------
def test_dead_dimensions_against_autograd():
    torch.manual_seed(0)
    rnn = nn.LSTM(8, 7).double()
    enc = memlens.wrap(None, rnn)
    X, K = dead_frames(), 3
    with pytest.warns(TrustWarning, match=r"has rank 5 < 8 \(3 constant dimensions: 1, 3, 4\)"):
        r = memlens.state_gradients(enc, X, K, site=Site(0, "hidden"), options=F64)
    _, lines = run_quiet(enc, X, K, site=Site(0, "hidden"), options=F64)
    assert lines == ["input covariance of the input vectors of the stream has rank 5 < 8 (3 "
                     "constant dimensions: 1, 3, 4): normalised within the span of the inputs"]
    s = r.settings
    assert s["input_rank"] == 5 and s["input_dims"] == 8 and s["constant_inputs"] == DEAD
    assert s["input_full_rank"] is False and s["normalization"] == "span"
    assert r.summary()["input_rank"] == 5
    assert r.summary()["input_normalization"] == "within the span"
    assert r.normalization.D.shape == (8, 5) and r.normalization.Z.shape == (5, 8)
    # independently: autograd through the user's own nn.LSTM forward, averaged per delay,
    # whitened on the live dimensions (any square root of their covariance)
    J = torch.autograd.functional.jacobian(lambda x: rnn(x[:, None])[0][:, 0], X,
                                           vectorize=True).numpy()            # T x H x T x I
    want_mean = delay_average(J, K)
    assert np.abs(r.means() - want_mean).max() < 1e-10 * np.abs(want_mean).max()
    live = [i for i in range(8) if i not in DEAD]
    root = np.linalg.cholesky(np.cov(X.numpy()[:, live], rowvar=False))
    want = np.stack([np.linalg.svd(g[:, live] @ root, compute_uv=False) for g in want_mean])
    assert r.spectrum().shape == (K + 1, 5)
    assert np.abs(r.spectrum() - want).max() < 1e-10 * want.max()
    # the same on the span basis (SVD of the centred frames)
    Xc = X.numpy() - X.numpy().mean(0)
    _, sv, vt = np.linalg.svd(Xc, full_matrices=False)
    basis = vt[:5].T * (sv[:5] / np.sqrt(len(X) - 1))                           # E x r
    proj = np.stack([np.linalg.svd(g @ basis, compute_uv=False) for g in want_mean])
    assert np.abs(r.spectrum() - proj).max() < 1e-10 * proj.max()
    # the bootstrap and the table work on H x r
    assert np.isfinite(r.bootstrap(20)["se"]).all()
    frame = r.to_frame()
    assert (frame["input_rank"] == 5).all() and frame["sum_sv"].notna().all()


def test_rank_zero_and_bad_tables_refused():
    with pytest.raises(MemlensError, match="singular with rank 0") as exc:
        embedding_normalization(np.full((20, 4), 3.0), source="input vectors of the stream")
    assert "\n" not in str(exc.value) and "4 dimensions constant" in str(exc.value)
    with pytest.raises(MemlensError, match="singular with rank 0"):
        embedding_normalization(np.zeros((5, 10)))
    with pytest.raises(MemlensError, match="at least two"):
        embedding_normalization(np.ones((1, 3)))
    bad = np.random.default_rng(0).standard_normal((10, 3))
    bad[2, 1] = np.nan
    with pytest.raises(MemlensError, match="NaN or infinite"):
        embedding_normalization(bad)
    enc = memlens.wrap(None, nn.GRU(4, 3))
    with pytest.raises(MemlensError, match="rank 0"):
        memlens.state_gradients(enc, torch.ones(30, 4), 2)


# -- (2) full rank: bit-identical to the Cholesky formula ------------------------------------
def test_full_rank_bit_identical():
    rng = np.random.default_rng(3)
    table = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6)) + 2.0
    mu, D, Z, cond = old_cholesky(table)
    norm = embedding_normalization(table)
    assert np.array_equal(norm.mu, mu) and np.array_equal(norm.D, D)
    assert np.array_equal(norm.Z, Z) and norm.condition == cond
    assert norm.full_rank and norm.rank == 6 and norm.method == "cholesky"
    assert norm.constant == [] and norm.duplicates == 0 and norm.message() == ""
    torch.manual_seed(0)
    emb = nn.Embedding(30, 5)
    enc = memlens.wrap(emb, nn.GRU(5, 6)).double()
    ids = torch.randint(0, 30, (80,), generator=torch.Generator().manual_seed(2))
    r, lines = run_quiet(enc, ids, 3, options=F64)
    assert lines == []
    mu, D, Z, cond = old_cholesky(emb.weight.detach().double().numpy())
    assert np.array_equal(r.normalization.D, D) and np.array_equal(r.normalization.Z, Z)
    assert r.normalization.condition == cond
    assert np.array_equal(r.spectrum(), metrics.singular_values(r.means() @ D))
    assert r.settings["input_rank"] == 5 and r.settings["input_full_rank"] is True
    assert "input_rank" not in r.to_frame().columns
    assert "normalization_warning" not in r.extra()


def test_old_constructor_still_works():
    D = np.array([[2.0, 0.0], [0.5, 1.0]])
    norm = Normalization(mu=np.zeros(2), D=D, Z=np.linalg.inv(D), condition=2.5)
    assert norm.rank == 2 and norm.full_rank and norm.dims == 2
    assert norm.settings()["constant_inputs"] == []


# -- (3) embedding tables: fewer rows than dimensions, duplicate rows, dependent columns ------
def test_fewer_rows_than_dimensions():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((3, 5))
    norm = embedding_normalization(table)
    assert norm.rank == 2 and not norm.full_rank and norm.constant == []
    assert norm.D.shape == (5, 2) and norm.Z.shape == (2, 5)
    assert np.allclose(norm.Z @ norm.D, np.eye(2), atol=1e-12)
    P = norm.D @ norm.Z                                        # projector on the span
    assert np.allclose(P @ P, P, atol=1e-12) and np.allclose(P, P.T, atol=1e-12)
    xn = (table - norm.mu) @ norm.Z.T
    assert np.allclose(np.cov(xn, rowvar=False), np.eye(2), atol=1e-12)
    assert np.allclose(xn @ norm.D.T + norm.mu, table, atol=1e-12)  # x = D xn + mu
    assert np.allclose(norm.D @ norm.D.T, np.cov(table, rowvar=False), atol=1e-12)
    assert "rank 2 < 5 (no constant dimension)" in norm.message()


def test_duplicate_rows_and_dependent_columns():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 6))
    table = np.vstack([base, base[[0, 0, 2]]])                 # 7 rows, 3 duplicates
    norm = embedding_normalization(table)
    assert norm.rank == 3 and norm.duplicates == 3
    assert "3 duplicate rows" in norm.message()
    full = np.vstack([rng.standard_normal((20, 4))] * 2)       # full rank, 20 duplicates
    norm = embedding_normalization(full)
    assert norm.full_rank and norm.method == "cholesky" and norm.duplicates == 20
    dep = rng.standard_normal((50, 4))
    dep[:, 3] = dep[:, 0] + dep[:, 1]                          # numerically singular
    norm = embedding_normalization(dep)
    assert norm.rank == 3 and norm.constant == [] and norm.condition < 1 / np.sqrt(SPAN_RTOL)
    again = span_normalization(dep)
    assert np.array_equal(again.D, norm.D) and again.rank == 3


def test_token_model_with_small_vocabulary():
    """V = 4 rows for E = 6 dimensions: rank 3; directions, class means, table, bootstrap."""
    torch.manual_seed(0)
    emb = nn.Embedding(4, 6)
    enc = memlens.wrap(emb, nn.GRU(6, 5), vocab=["a", "b", "c", "d"]).double()
    ids = torch.randint(0, 4, (60,), generator=torch.Generator().manual_seed(5))
    labels = ["x" if i < 2 else "y" for i in ids.tolist()]
    with pytest.warns(TrustWarning, match=r"embedding table has rank 3 < 6 \(no constant"):
        r = memlens.state_gradients(enc, ids, 2, classes=labels, options=F64)
    W = emb.weight.detach().double().numpy()
    _, sv, vt = np.linalg.svd(W - W.mean(0), full_matrices=False)
    basis = vt[:3].T * (sv[:3] / np.sqrt(3))
    want = np.stack([np.linalg.svd(r.mean(t) @ basis, compute_uv=False) for t in range(3)])
    assert np.abs(r.spectrum() - want).max() < 1e-10 * want.max()
    d = r.direction("x", "y")
    rel = r.relative_memory(d)
    assert rel.shape == (3,) and np.all((rel > 0) & (rel <= 1 + 1e-12))
    proj, share = r.alignment(d, k=5)
    assert proj.shape == (3, 3) and np.allclose(share[:, -1], 1.0)
    assert r.right_singular_vectors(0).shape == (3, 3)
    rows = r.table(10, {"xy": d})
    assert all(row["relmem_xy"] is not None for row in rows if row["count"])
    assert r.class_bootstrap("x", 10)
    with pytest.raises(ValueError, match="zero within the span"):
        metrics.unit_direction(np.zeros(6), r.normalization.Z)


# -- (4) the CLI on a vectors file -----------------------------------------------------------
def test_cli_vectors_with_dead_dimensions(tmp_path, capsys):
    (tmp_path / "user.py").write_text(FRAMES_PY)
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    X[:, 2] = 0.0
    np.save(tmp_path / "frames.npy", X)
    rc = main(["gradients", "--model", f"{tmp_path / 'user.py'}:frames", "--corpus",
               str(tmp_path / "frames.npy"), "--max-delay", "3", "--bootstrap", "10",
               "--no-progress", "--out", str(tmp_path / "out")])
    io = capsys.readouterr()
    assert rc == 0, io.err
    line = ("memlens: warning: input covariance of the input vectors of the stream has rank "
            "4 < 5 (1 constant dimension: 2): normalised within the span of the inputs")
    assert line in io.err.splitlines()
    saved = load_result(tmp_path / "out")
    assert saved.settings_info()["input_rank"] == 4
    assert saved.settings_info()["constant_inputs"] == [2]
    assert saved.arrays()["D"].shape == (5, 4)


# -- (5) saved results round-trip; old ones still load ---------------------------------------
def test_saved_result_round_trip(tmp_path):
    torch.manual_seed(0)
    enc = memlens.wrap(None, nn.LSTM(8, 7)).double()
    r, _ = run_quiet(enc, dead_frames(), 3, options=F64)
    r.save(tmp_path / "span")
    back = load_result(tmp_path / "span")
    assert back.to_frame().equals(r.to_frame())
    assert back.summary()["input_rank"] == 5
    assert back.settings_info()["constant_inputs"] == DEAD
    sec = back.extra()["normalization"]
    assert sec["input_rank"] == 5 and sec["constant_inputs"] == DEAD
    assert sec["span_rtol"] == SPAN_RTOL and SPAN in sec["message"]
    assert back.extra()["normalization_warning"]["warning"] is True
    arr = back.arrays()
    assert arr["D"].shape == (8, 5) and arr["Z"].shape == (5, 8)
    assert np.array_equal(arr["D"], r.normalization.D)
    assert arr["singular_values"].shape == (4, 5)
    from memlens.report import build_report

    page = build_report([tmp_path / "span"], tmp_path / "report.html").read_text()
    assert "Warning: inputs normalised within their span" in page
    # an old result directory (before issue 22: no rank fields) still loads and reports
    doc = json.loads((tmp_path / "span" / "result.json").read_text())
    for key in ("normalization", "normalization_warning"):
        doc.pop(key)
    for key in ("input_rank", "input_dims", "input_full_rank", "constant_inputs",
                "duplicate_rows", "normalization"):
        doc["settings"].pop(key)
    for key in ("input_rank", "input_dims", "input_normalization"):
        doc["summary"].pop(key)
    for row in doc["table"]:
        row.pop("input_rank")
    (tmp_path / "span" / "result.json").write_text(json.dumps(doc))
    old = load_result(tmp_path / "span")
    assert "input_rank" not in old.summary() and old.to_frame()["sum_sv"].notna().all()
    page = build_report([tmp_path / "span"], tmp_path / "old.html").read_text()
    assert "within their span" not in page
