"""A missing optional package (the ``hf`` and ``speech`` extras) is named with its pip line:
one line, exit 2 from the CLI, a MemlensError from the API. Absence is simulated with
``sys.modules[name] = None``, which makes ``import name`` raise ImportError."""

from __future__ import annotations

import json
import sys
import wave

import numpy as np
import pytest

from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.core.optional import EXTRAS, require

PIP = {"transformers": "pip install 'memlens[hf]'", "soundfile": "pip install 'memlens[speech]'",
       "librosa": "pip install 'memlens[speech]'"}


def absent(monkeypatch, name):
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, name, None)


def one_line_exit_2(args, capsys, name):
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memlens: error: "), err
    assert f"optional package {name}: {PIP[name]}" in err[0]


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_require_names_the_pip_line(monkeypatch, name):
    absent(monkeypatch, name)
    with pytest.raises(MemlensError, match=rf"needs the optional package {name}: "
                       rf"pip install 'memlens\[{EXTRAS[name][0]}\]'$"):
        require(name)


def test_require_returns_the_module_and_knows_only_the_extras():
    pytest.importorskip("soundfile")
    assert require("soundfile").__name__ == "soundfile"
    with pytest.raises(KeyError):
        require("json")  # only the declared optional packages go through it


def hf_dir(tmp_path):
    d = tmp_path / "mamba"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "mamba",
                                               "architectures": ["MambaForCausalLM"]}))
    return d


def test_transformers_absent_api_and_cli(monkeypatch, tmp_path, capsys):
    import memlens

    absent(monkeypatch, "transformers")
    d = hf_dir(tmp_path)
    with pytest.raises(MemlensError, match=r"pip install 'memlens\[hf\]'"):
        memlens.from_hf(str(d))
    one_line_exit_2(["gradients", "--model", f"hf:{d}", "--corpus", "synthetic", "--out",
                     tmp_path / "out"], capsys, "transformers")
    assert not (tmp_path / "out").exists()


def speech_dir(tmp_path, rate=16000):
    d = tmp_path / "speech"
    d.mkdir()
    t = np.arange(rate // 2) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    for name in ("a.wav", "b.wav"):
        with wave.open(str(d / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
    (d / "manifest.tsv").write_text("a.wav\thello there\nb.wav\tyes\n")
    return d


@pytest.mark.parametrize("name,rate", [("soundfile", 16000), ("librosa", 8000)])
def test_speech_package_absent_api_and_cli(monkeypatch, tmp_path, capsys, name, rate):
    pytest.importorskip("soundfile")  # librosa is reached only after soundfile decoded
    from memlens.data.speech.corpus import load_audio

    d = speech_dir(tmp_path, rate)
    absent(monkeypatch, name)
    with pytest.raises(MemlensError, match=r"pip install 'memlens\[speech\]'"):
        load_audio(str(d / "a.wav"))
    one_line_exit_2(["train-asr", "--data", d, "--out", tmp_path / "m.pt", "--epochs", "1"],
                    capsys, name)
    assert not (tmp_path / "m.pt").exists()
