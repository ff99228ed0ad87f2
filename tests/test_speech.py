"""Speech: transcript policy, corpus readers and their bad input, features, error rates, and
(with espeak-ng) the synthesised corpus -> train-asr -> analyses pipeline on a tiny scale."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from memlens.core.errors import MemlensError
from memlens.data.speech.graphemes import GRAPHEMES, normalize_transcript, speakable
from memlens.models.asr import edit_distance, error_rates, greedy_decode

sf = pytest.importorskip("soundfile", reason="speech extra not installed (pip install "
                         "-e '.[speech]')")
pytest.importorskip("librosa", reason="speech extra not installed")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"
ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed (.ci/run "
                                  "installs it with apt-get where it can)")


def memlens(*args):
    """Run the CLI in this process (no interpreter start-up per call): returncode, stdout,
    stderr."""
    from memlens.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def tone(path, seconds=0.5, sr=16000, f=440.0):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), sr)


def manifest(dirpath: Path, rows):
    (dirpath / "manifest.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in rows))
    return dirpath


# -- policy and readers ----------------------------------------------------------------------
def test_grapheme_set_and_transcript_policy():
    assert GRAPHEMES[0] == "<blank>" and len(GRAPHEMES) == 29
    assert normalize_transcript("  Don't  STOP\tnow ") == "don't stop now"
    for bad, ch in (("room 42", "'4'"), ("café", "'é'"), ("yes, no", "','")):
        with pytest.raises(MemlensError, match=ch):
            normalize_transcript(bad)
    with pytest.raises(MemlensError, match="empty transcript"):
        normalize_transcript("  ")
    assert speakable("The cat @-@ like creature ran , and it did n't stop .") == \
        "the cat like creature ran and it didn't stop"
    assert speakable("In 1999 it rained .") is None and speakable("a <unk> b c") is None


def test_manifest_and_librispeech_readers(tmp_path):
    from memlens.data.speech.corpus import read_corpus

    tone(tmp_path / "a.wav")
    tone(tmp_path / "b.flac")
    c = read_corpus(manifest(tmp_path, [("a.wav", "Hello there"), ("b.flac", "yes")]))
    assert [u.text for u in c.utterances] == ["hello there", "yes"]
    lib = tmp_path / "libri" / "19" / "198"
    lib.mkdir(parents=True)
    tone(lib / "19-198-0000.flac")
    tone(lib / "19-198-0001.wav")
    (lib / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n19-198-0001 BY JANE\n")
    c = read_corpus(tmp_path / "libri")
    assert [(u.id, u.text) for u in c.utterances] == [("19-198-0000", "northanger abbey"),
                                                      ("19-198-0001", "by jane")]


def test_features_shape_and_resampling(tmp_path):
    from memlens.data.speech.corpus import load_audio, logmel, stack_frames

    tone(tmp_path / "x.wav", seconds=1.0, sr=22050)
    x = load_audio(str(tmp_path / "x.wav"))
    assert abs(len(x) - 16000) <= 1                           # resampled to 16 kHz
    f = logmel(x)
    assert f.shape == (1 + (len(x) - 400) // 160, 80)
    assert int(f.mean(0).argmax()) == int(logmel(load_audio(str(tmp_path / "x.wav"))).mean(0)
                                          .argmax())
    s = stack_frames(f, 3)
    assert s.shape == (len(f) // 3, 240) and np.array_equal(s[1, 80:160], f[4])


@pytest.mark.parametrize("case,message", [
    ("missing", "audio file not found"),
    ("empty_transcript", "empty transcript"),
    ("outside", "outside the grapheme set"),
    ("undecodable", "cannot decode audio"),
    ("empty_audio", "empty or shorter"),
    ("rate_mix", "mixes sample rates"),
])
def test_bad_speech_input_one_line_exit_2_nothing_written(tmp_path, case, message):
    tone(tmp_path / "ok.wav")
    rows = [("ok.wav", "fine words")]
    if case == "missing":
        rows.append(("gone.wav", "where"))
    elif case == "empty_transcript":
        rows.append(("ok.wav", "   "))
    elif case == "outside":
        rows.append(("ok.wav", "route 66"))
    elif case == "undecodable":
        (tmp_path / "bad.wav").write_bytes(b"RIFF....not audio at all" * 10)
        rows.append(("bad.wav", "noise"))
    elif case == "empty_audio":
        sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
        rows.append(("empty.wav", "silence"))
    elif case == "rate_mix":
        tone(tmp_path / "eight.wav", sr=8000)
        rows.append(("eight.wav", "low rate"))
    manifest(tmp_path, rows * 2)
    r = memlens("train-asr", "--data", tmp_path, "--out", tmp_path / "m.pt", "--epochs", "1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "m.pt").exists()
    assert not list(tmp_path.glob(".m.pt.partial*"))


# -- decoding and error rates ----------------------------------------------------------------
def test_error_rates_known_answers():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("".split(), "a b".split()) == 2
    r = error_rates(["the cat sat", "a dog"], ["the bat sat", "a dog ran"])
    assert r["cer"] == pytest.approx((1 + 4) / (11 + 5))      # 1 sub; 4 inserted chars
    assert r["wer"] == pytest.approx((1 + 1) / (3 + 2))
    import torch

    ids = [0, 5, 5, 0, 5, 1, 1, 0, 6]                          # c c _ c ' ' ' ' _ d
    lp = torch.full((len(ids), 29), -10.0)
    lp[range(len(ids)), ids] = 0.0
    assert greedy_decode(lp) == "cc d"


# -- the pipeline on synthesised speech (espeak-ng) ------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it with apt-get where it can)")
    root = tmp_path_factory.mktemp("speech")
    text = root / "text.txt"
    text.write_text("The cat sat on the mat . A dog ran in the park today .\n"
                    "She said hello to the old man . We went home early that night .\n"
                    "Rain fell on the quiet town . Birds sang in the tall trees .\n")
    r = memlens("speech-corpus", "--text", text, "--out", root / "corpus", "--utterances", 6,
                "--test-fraction", 0.34, "--seed", 1)
    assert r.returncode == 0, r.stderr
    r = memlens("train-asr", "--data", root / "corpus", "--out", root / "asr.pt", "--layers",
                2, "--hidden", 8, "--epochs", 1, "--batch", 2, "--seed", 0)
    assert r.returncode == 0, r.stderr
    return root


@needs_espeak
def test_speech_corpus_is_synthetic_with_voices_and_unseen_test_sentences(tiny):
    from memlens.data.speech.corpus import read_corpus

    doc = json.loads((tiny / "corpus" / "result.json").read_text())
    assert doc["settings"]["synthetic"] is True and "synthetic" in doc["summary"]["speech"]
    c = read_corpus(tiny / "corpus")
    assert len(c) == 6 and (tiny / "corpus" / "features.npz").is_file()
    train, test = c.split("train"), c.split("test")
    assert len(test) == 2 and not {u.text for u in train.utterances} & \
        {u.text for u in test.utterances}
    assert len({u.meta["voice"] for u in c.utterances}) == 6
    for u in c.utterances:
        info = sf.info(u.path)
        assert info.samplerate == 16000 and info.duration > 0.5


@needs_espeak
def test_speech_corpus_refuses_bad_text(tmp_path):
    (tmp_path / "t.txt").write_text("In 1999 . <unk> <unk> .\n")
    r = memlens("speech-corpus", "--text", tmp_path / "t.txt", "--out", tmp_path / "c",
                "--utterances", 3)
    assert r.returncode == 2 and "speakable sentences" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


@needs_espeak
def test_train_asr_seeded_resume_and_protocol(tiny, tmp_path):
    import torch

    from memlens.models.asr import load_asr
    from memlens.models.loading import load_model

    args = ["--data", tiny / "corpus", "--layers", 2, "--hidden", 8, "--batch", 2, "--seed", 0]
    r = memlens("train-asr", *args, "--epochs", 2, "--out", tmp_path / "a.pt")
    assert r.returncode == 0, r.stderr
    assert "held-out CER" in r.stdout
    # interrupted (Ctrl-C) right after epoch 1 was saved, then resumed to 2 epochs: the same
    # weights as the uninterrupted run
    from memlens.training.asr import ASRConfig, progress_path, train_asr

    cfg = ASRConfig(data=str(tiny / "corpus"), out=str(tmp_path / "b.pt"), layers=2, hidden=8,
                    batch=2, seed=0, epochs=2)

    def ctrl_c(msg):
        if msg.startswith("epoch 1:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_asr(cfg, log=ctrl_c)
    assert progress_path(cfg.out).is_file()
    cfg.resume = True
    train_asr(cfg, log=lambda msg: None)
    assert not progress_path(cfg.out).exists()
    a, b = load_asr(tmp_path / "a.pt"), load_asr(tmp_path / "b.pt")
    assert a.extra["history"][-1]["train_loss"] == b.extra["history"][-1]["train_loss"]
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    loaded = load_model(tmp_path / "a.pt")
    enc = loaded.encoder
    assert enc.input_kind == "vectors" and enc.embedding is None and enc.input_size == 240
    x = torch.randn(7, 1, 240)
    out, _ = enc(x)
    assert torch.allclose(out, a.encoder(x)[0])


@needs_espeak
def test_speech_analyses_cli(tiny):
    r = memlens("signatures", "--model", tiny / "asr.pt", "--corpus", tiny / "corpus",
                "--max-delay", 2, "--bootstrap", 20, "--blocks", 4, "--out", tiny / "sig")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tiny / "sig" / "result.json").read_text())
    rows = doc["table"]
    assert {(row["role"], row["layer"]) for row in rows} >= {("model", 0), ("model", 1),
                                                             ("control", 0), ("control", 1)}
    assert {row["lag"] for row in rows} == {0, 1, 2}
    assert "graphemes" in doc["summary"]["lag_unit"]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["majority"] > 0
    r = memlens("gradients", "--model", tiny / "asr.pt", "--corpus", tiny / "corpus",
                "--max-delay", 3, "--bootstrap", 0, "--no-progress", "--out", tiny / "grad")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tiny / "grad" / "result.json").read_text())
    classes = {row["class"] for row in doc["table"]}
    assert {"vowel", "consonant", "space"} <= classes
    r = memlens("gradients", "--model", tiny / "asr.pt", "--corpus", tiny / "corpus",
                "--classes", "upos", "--max-delay", 3, "--out", tiny / "grad2")
    assert r.returncode == 2 and "grapheme-type" in r.stderr and not (tiny / "grad2").exists()


@needs_espeak
def test_speech_entry_points_have_the_shared_shape(tiny):
    import inspect

    from memlens.analyses.speech.analysis import (
        grapheme_signature,
        prepare_speech,
        speech_gradients,
    )
    from memlens.models.asr import load_asr
    from memlens.protocol import Site
    from memlens.runtime.options import Bootstrap, RunOptions, as_options

    params = inspect.signature(grapheme_signature).parameters
    assert list(params)[:6] == ["model", "train", "heldout", "max_delay", "site", "decoder"]
    assert {"seed", "decoder_options", "options"} <= set(params)
    assert not {"max_lag", "layer", "readout", "blocks", "bootstrap"} & set(params)
    assert list(inspect.signature(speech_gradients).parameters)[:3] == [
        "model", "inputs", "max_delay"]
    asr = load_asr(tiny / "asr.pt")
    train = prepare_speech(asr, tiny / "corpus", "train")
    held = prepare_speech(asr, tiny / "corpus", "test")
    assert train.lag_targets(max_delay=2).shape == (train.steps, 3)
    opts = as_options(bootstrap=20, blocks=4)
    sig = grapheme_signature(asr.encoder, train, held, 2, Site(0, "hidden"), options=opts)
    again = grapheme_signature(asr.encoder, train, held, max_delay=2, site=Site(0, "hidden"),
                               seed=0, options=RunOptions(bootstrap=Bootstrap(20, 4)))
    np.testing.assert_array_equal(sig.accuracy, again.accuracy)
    np.testing.assert_array_equal(sig.acc_low, again.acc_low)
    assert (sig.info["layer"], sig.info["readout"], sig.info["units"]) == (0, "hidden", "all")
    top = grapheme_signature(asr.encoder, train, held, 1, options=as_options(bootstrap=0))
    assert top.info["layer"] == asr.encoder.num_layers - 1 and len(top.accuracy) == 2
    with pytest.raises(TypeError):
        grapheme_signature(asr.encoder, train, held, max_lag=2)
    with pytest.raises(MemlensError, match="seed"):
        grapheme_signature(asr.encoder, train, held, 1, seed=1,
                           options=as_options(bootstrap=Bootstrap(20, 4, seed=2)))
    with pytest.raises(MemlensError, match="units"):
        grapheme_signature(asr.encoder, train, held, 1, Site(0, None, "0,1"))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_wikitext_has_enough_speakable_sentences():
    from memlens.data.speech.synth import sentences

    s = sentences((SHARED / "valid.txt").read_text(encoding="utf-8"))
    assert len(s) > 1000 and all(set(x) <= set(GRAPHEMES[1:]) for x in s[:500])
