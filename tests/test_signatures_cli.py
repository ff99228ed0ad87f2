"""``memlens signatures`` and ``memlens ngram`` end to end: result directory and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memlens.cli import main
from memlens.data import Vocab
from memlens.models import LanguageModel, save_checkpoint

TEXT = ("the cat sat on the mat and the dog sat on the log\n"
        "a bird flew over the house while the fish swam in the pond\n") * 40


@pytest.fixture
def files(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("日本語のテキスト\n漢字だけ\n" * 5)
    models = {}
    for arch, extra in [("lstm", {"layers": 2}), ("glstm", {"groups": 2}),
                        ("flstm", {"rank": 3})]:
        torch.manual_seed(0)
        vocab = Vocab.build(list(TEXT.replace("\n", " ")))
        model = LanguageModel({"arch": arch, "emb": 8, "hidden": 8, "unit": "char",
                               **extra}, len(vocab))
        model.vocab = vocab
        models[arch] = tmp_path / f"{arch}.pt"
        save_checkpoint(models[arch], model)
    return {"text": str(text), "unknown": str(unknown), "tmp": tmp_path,
            **{k: str(v) for k, v in models.items()}}


def run(args, capsys):
    rc = main(args)
    return rc, capsys.readouterr()


def test_full_run_writes_result_directory(files, capsys):
    out = files["tmp"] / "sig"
    rc, cap = run(["signatures", "--model", files["lstm"], "--corpus", files["text"],
                   "--max-delay", "5", "--train-tokens", "2500", "--heldout-tokens", "1500",
                   "--ngram", "3", "--window-lm", "3", "--lm-epochs", "1", "--bootstrap",
                   "100", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    res = json.loads((out / "result.json").read_text())
    assert res["kind"] == "signatures"
    assert set(res) >= {"memlens_version", "model", "corpus", "settings", "summary", "table",
                        "plots"}
    assert set(res["model"]) >= {"path", "arch", "layers", "emb", "hidden", "unit"}
    assert set(res["corpus"]) >= {"path", "tokens", "heldout_path", "heldout_tokens",
                                  "oov_rate"}
    roles = {r["role"] for r in res["table"]}
    assert roles == {"model", "control", "ngram", "window-lm"}
    row = next(r for r in res["table"] if r["role"] == "model" and r["lag"] == 0)
    for key in ("model", "layer", "readout", "units", "lag", "accuracy", "ci_low", "ci_high",
                "bits", "bits_fraction", "majority", "prior", "control_accuracy"):
        assert key in row
    assert {r["layer"] for r in res["table"] if r["role"] == "model"} == {0, 1}
    assert res["summary"]["ngram"]["heldout_perplexity"] > 1
    for plot in res["plots"]:
        assert (out / plot["file"]).exists() and plot["caption"]
    assert {"signature.png", "recall_heatmap.png", "beyond_window.png", "layers.png"} <= {
        p["file"] for p in res["plots"]}
    npz = np.load(out / "recall.npz")
    assert npz["recall_0"].shape[0] == 6 and "symbols" in npz
    assert (out / "table.csv").read_text().startswith("model,")


def test_groups_run_reports_divergence(files, capsys):
    out = files["tmp"] / "groups"
    rc, cap = run(["signatures", "--model", files["glstm"], "--corpus", files["text"],
                   "--max-delay", "3", "--units", "groups", "--readout", "cell",
                   "--train-tokens", "2000", "--heldout-tokens", "1000", "--bootstrap", "50",
                   "--control", "none", "--decoder", "mlp", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    res = json.loads((out / "result.json").read_text())
    div = res["summary"]["group_divergence"]["model/layer0"]
    assert div["groups"] == ["group:0", "group:1"]
    assert np.array(div["js_divergence"]).shape == (2, 2)
    assert (out / "groups.png").exists()


def test_bases_run_reports_per_basis_signatures_and_divergence(files, capsys):
    out = files["tmp"] / "bases"
    rc, cap = run(["signatures", "--model", files["flstm"], "--corpus", files["text"],
                   "--max-delay", "3", "--units", "bases", "--train-tokens", "2000",
                   "--heldout-tokens", "1000", "--bootstrap", "50", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    res = json.loads((out / "result.json").read_text())
    units = ["factor", "basis:0", "basis:1", "basis:2"]
    for role in ("model", "control"):
        assert [r["units"] for r in res["summary"]["signatures"] if r["role"] == role] == units
        assert {r["units"] for r in res["table"] if r["role"] == role} == set(units)
        div = res["summary"]["basis_divergence"][f"{role}/layer0"]
        assert div["bases"] == units[1:]
        m = np.array(div["js_divergence"])
        assert m.shape == (3, 3) and np.allclose(m, m.T) and (np.diag(m) == 0).all()
        assert ((m >= 0) & (m <= 1)).all()
    assert "group_divergence" not in res["summary"]
    files_ = {p["file"] for p in res["plots"]}
    assert {"signature.png", "bases.png", "basis_divergence-model-layer0.png",
            "basis_divergence-control-layer0.png"} <= files_
    assert all((out / f).exists() for f in files_)
    npz = np.load(out / "recall.npz")
    assert "basis:2" in " ".join(npz["index"].tolist())


@pytest.mark.parametrize("extra, message", [
    (["--max-delay", "100000"], "too large for the training stream"),
    (["--layer", "5"], "layer 5 does not exist"),
    (["--readout", "gate"], "unknown readout 'gate'"),
    (["--units", "0-99"], "out of range"),
    (["--units", "bogus"], "bad unit spec"),
    (["--units", "group:1"], "not a grouped LSTM"),
    (["--units", "bases"], "not a factorised LSTM"),
    (["--units", "basis:0"], "not a factorised LSTM"),
    (["--symbols", "words"], "unknown symbols"),
    (["--heldout", "UNKNOWN"], "every symbol is unknown"),
])
def test_bad_input_fails_cleanly(files, capsys, extra, message):
    out = files["tmp"] / "bad"
    extra = [files["unknown"] if a == "UNKNOWN" else a for a in extra]
    rc, cap = run(["signatures", "--model", files["lstm"], "--corpus", files["text"],
                   "--out", str(out), *extra], capsys)
    assert rc == 2
    assert message in cap.err and cap.err.count("\n") == 1
    assert not out.exists()
    assert not [p for p in files["tmp"].iterdir() if p.name.startswith(".bad")]


@pytest.mark.parametrize("arch, units, message", [
    ("glstm", "group:2", "group 2 out of range"),
    ("flstm", "basis:3", "basis 3 out of range"),
])
def test_group_or_basis_index_beyond_the_model(files, capsys, arch, units, message):
    out = files["tmp"] / "bad"
    rc, cap = run(["signatures", "--model", files[arch], "--corpus", files["text"],
                   "--units", units, "--out", str(out)], capsys)
    assert rc == 2 and message in cap.err and not out.exists()


def test_ngram_command(files, capsys, tmp_path):
    rc, cap = run(["ngram", "--train", files["text"], "--order", "4", "--out",
                   str(tmp_path / "ng.json")], capsys)
    assert rc == 0
    ppl = float(cap.out.strip().splitlines()[-1].split()[-1])
    assert 1 < ppl < 5
    assert json.loads((tmp_path / "ng.json").read_text())["order"] == 4
    rc, cap = run(["ngram", "--train", files["text"], "--order", "0"], capsys)
    assert rc == 2 and "--order" in cap.err


@pytest.mark.parametrize("flag, value", [("--max-lag", "3"), ("--resamples", "10"),
                                         ("--layers", "0"), ("--labels", "chars")])
def test_removed_aliases_are_refused(files, capsys, flag, value):
    """The deprecated spellings are gone: --max-delay, --bootstrap, --layer, --symbols."""
    out = files["tmp"] / "old"
    with pytest.raises(SystemExit) as exc:  # argparse: one line, exit 2
        main(["signatures", "--model", files["lstm"], "--corpus", files["text"],
              flag, value, "--out", str(out)])
    assert exc.value.code == 2 and not out.exists()
    assert "unrecognized arguments" in capsys.readouterr().err


def test_one_layer_by_index_and_the_layer_output_by_default(files, capsys):
    out = files["tmp"] / "one"
    rc, cap = run(["signatures", "--model", files["lstm"], "--corpus", files["text"],
                   "--layer", "-1", "--max-delay", "1", "--train-tokens", "800",
                   "--heldout-tokens", "400", "--bootstrap", "0", "--control", "none",
                   "--out", str(out)], capsys)
    assert rc == 0, cap.err
    res = json.loads((out / "result.json").read_text())
    assert {(r["layer"], r["readout"]) for r in res["table"]} == {(1, "hidden")}
    assert all(r["ci_low"] is None for r in res["table"])  # --bootstrap 0: no intervals
    assert res["settings"]["layer"] == "-1" and "layers" not in res["settings"]
