"""Issue 21: the hostile-input test by construction.

Every sub-command's parser is enumerated (:mod:`hostile`): each option that takes a value is
tried with NaN, inf, negative, zero, huge and wrong-typed values, and each string option (the
file inputs and outputs among them) with a FIFO, ``/dev/zero``, a directory, an empty, a binary,
a huge (sparse) and a missing file, each case against a base command that succeeds. A new
option or command is covered without anyone adding a case (a new command needs only its base
command in :func:`build_inputs`). The contract: exit 0 or 2, one error line, no traceback, no
file left after a refusal, the user's files unchanged, bounded time and memory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import hostile  # noqa: E402

WORDS = ["the", "cat", "sees", "dogs", "a", "bird", "runs", "and", "big", "old"]
TEXT = "\n".join(" ".join(WORDS[(i * 7 + j * 3) % 10] for j in range(8))
                 for i in range(40)) + "\n"
SPEAKABLE = ("The cat sat on the mat . A dog ran in the park today .\n"
             "She said hello to the old man . We went home early that night .\n")


def _wav(path: Path, seconds: float, f: float) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)


def build_inputs(root: Path) -> tuple[dict[str, list[str]], dict[str, str], list[Path]]:
    """The user's files under ``root / "user"`` (a word LM checkpoint, its corpus, a result
    directory for ``report``, a tiny speech corpus) and a base command per sub-command that
    succeeds on them; returns (bases, special files, directories whose files must not
    change)."""
    from memlens.analyses.gradients import state_gradients
    from memlens.data import Vocab
    from memlens.models import LanguageModel, save_checkpoint
    from memlens.runtime.options import as_options

    user = root / "user"
    user.mkdir(parents=True)
    vocab = Vocab(["<unk>", "<eos>", *WORDS], [1, 40] + [30 - i for i in range(10)])
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4}, len(vocab))
    model.vocab = vocab
    save_checkpoint(user / "lm.pt", model)
    (user / "c.txt").write_text(TEXT)
    (user / "speak.txt").write_text(SPEAKABLE)
    grads = state_gradients(model, vocab.encode(TEXT.split()[:60]),
                            max_delay=2, options=as_options(bootstrap=0))
    grads.save(user / "grads")
    speech = user / "speech"
    speech.mkdir()
    rows = []
    for i, (word, f) in enumerate([("a cat", 300.0), ("the dog", 500.0), ("old man", 700.0),
                                   ("big bird", 900.0)]):
        _wav(speech / f"u{i}.wav", 0.3, f)
        rows.append(f"u{i}.wav\t{word}\n")
    (speech / "manifest.tsv").write_text("".join(rows))
    lm, corpus = str(user / "lm.pt"), str(user / "c.txt")
    bases = {
        "train": ["train", "--train", corpus, "--out", "m.pt", "--layers", "1", "--emb", "3",
                  "--hidden", "3", "--epochs", "1", "--bptt", "5", "--batch", "2",
                  "--max-tokens", "200", "--device", "cpu"],
        "eval": ["eval", "--model", lm, "--corpus", corpus, "--device", "cpu"],
        "gradients": ["gradients", "--model", lm, "--corpus", corpus, "--max-delay", "2",
                      "--max-tokens", "60", "--bootstrap", "5", "--out", "g", "--device",
                      "cpu", "--no-progress"],
        "signatures": ["signatures", "--model", lm, "--corpus", corpus, "--train-tokens",
                       "150", "--heldout-tokens", "80", "--max-delay", "1", "--bootstrap",
                       "5", "--lm-epochs", "1", "--out", "s", "--device", "cpu"],
        "ablation": ["ablation", "--model", lm, "--corpus", corpus, "--distances", "1,2",
                     "--targets", "10", "--bootstrap", "5", "--out", "a", "--device", "cpu",
                     "--no-progress"],
        "ngram": ["ngram", "--train", corpus, "--eval", corpus, "--order", "2"],
        "demo": ["demo", "--quick", "--out", "d", "--no-progress"],
        "report": ["report", str(user / "grads"), "--out", "r.html"],
        "speech-corpus": ["speech-corpus", "--text", str(user / "speak.txt"), "--out", "sc",
                          "--utterances", "2", "--workers", "1"],
        "train-asr": ["train-asr", "--data", str(speech), "--out", "asr.pt", "--layers", "1",
                      "--hidden", "4", "--epochs", "1", "--batch", "2"],
    }
    files = hostile.special_files(root / "special")
    return bases, files, [user]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    bases, files, watch = build_inputs(root)
    return root, bases, files, watch


def test_every_command_has_a_base_case_that_succeeds(inputs):
    root, bases, files, watch = inputs
    assert set(bases) == set(hostile.subparsers())
    for command, argv in bases.items():
        if command == "speech-corpus" and shutil.which("espeak-ng") is None:
            continue
        outcome = hostile.run_case(argv, root / "base" / command, watch, interrupt=False)
        assert outcome.rc == 0, (command, outcome.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(hostile.subparsers()))
def test_hostile_values_and_files_for_every_option(inputs, command):
    root, bases, files, watch = inputs
    if command == "speech-corpus" and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    failures = hostile.probe(bases, files, root / "scratch" / command, watch, [command])
    assert not failures, "\n".join(f"{c.name}: {o.problem}" for c, o in failures)


def test_every_numeric_option_is_declared_in_the_schema():
    """By construction: an int or float option of any command comes from the option schema
    (one declaration: type, range, finiteness), so the CLI and the API check it alike."""
    import argparse

    from memlens.commands.common import SCHEMA_DEST
    from memlens.runtime.options import OPTIONS

    for command, parser in hostile.subparsers().items():
        declared = {name for name, _ in parser.get_default(SCHEMA_DEST) or ()}
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.nargs == 0:
                continue
            if action.type in (int, float):
                assert action.dest in declared and action.dest in OPTIONS, (command,
                                                                            action.dest)


LONG_COMMANDS = ("train", "train-asr", "gradients", "signatures", "ablation", "demo")


def test_every_long_command_takes_no_progress():
    for command in LONG_COMMANDS:
        flags = {f for a in hostile.subparsers()[command]._actions for f in a.option_strings}
        assert "--no-progress" in flags, command


def test_numeric_options_refused_alike_in_cli_and_api(inputs, capsys):
    """One declaration, one message: --dropout nan in train and train-asr, and the same
    value through the API's TrainConfig."""
    from memlens.cli import main
    from memlens.core.errors import MemlensError
    from memlens.training import TrainConfig, train

    root, bases, files, watch = inputs
    for command in ("train", "train-asr"):
        argv = hostile.replace_option(bases[command], _action(command, "--dropout"), "nan")
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == \
            "memlens: error: --dropout must be a finite number, got nan"
    with pytest.raises(MemlensError, match=r"^--dropout must be a finite number, got nan$"):
        train(TrainConfig(train=str(root / "user" / "c.txt"), out=str(root / "x.pt"),
                          dropout=float("nan")))
    assert not (root / "x.pt").exists()


def _action(command: str, flag: str):
    return next(a for a in hostile.subparsers()[command]._actions if flag in a.option_strings)
