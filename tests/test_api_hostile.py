"""The Python API under hostile input, by construction (issue 21).

Every public entry point (``memlens.__all__``, the analyses' entry points, the loaders, the
result classes' public methods) is listed once in :func:`entries` with the *baseline* keyword
arguments of one fast, valid call; the parameters themselves are read from
:func:`inspect.signature`, and every parameter is tried with every hostile value of
:func:`hostile_values` (NaN, inf, negative, zero, huge, wrong types, None; streams: a str, an
empty stream, ids out of range, non-strings; paths: a directory, a missing or empty file). A
keyword added to an entry point is therefore covered without anyone adding a case.

The contract of one case (:func:`outcome`): the call returns, or raises
:class:`memlens.MemlensError` with a one-line message (or ``Interrupted``, the documented
outcome of ``stop_after``), within ``CASE_SECONDS``; never TypeError, ValueError, IndexError,
RuntimeError, IsADirectoryError, MemoryError or a hang.

``python tests/test_api_hostile.py [ENTRY...]`` prints every failing case.
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.core.errors import MemlensError
from memlens.runtime.progress import Interrupted

CASE_SECONDS = 20          # a refusal takes milliseconds; a case past this hangs
V, T = 12, 40              # vocabulary size and stream length of the tiny model


class CaseTimeout(BaseException):
    """Raised by the alarm inside a case that runs past CASE_SECONDS."""


# -- the tiny world ------------------------------------------------------------------------------
@dataclass
class World:
    """What the baseline calls need: a tiny LM with a vocabulary, streams, a vector model,
    speech data, files and results (built once)."""

    root: Path
    vocab: memlens.Vocab
    lm: memlens.LanguageModel
    ids: list[int]
    held: list[int]
    vec: nn.Module
    speech: Any
    files: dict[str, str]
    results: dict[str, Any]


def build_world(root: Path) -> World:
    from memlens.analyses.speech.analysis import SpeechData

    torch.manual_seed(0)
    words = [f"w{i}" for i in range(V - 2)]
    vocab = memlens.Vocab(["<unk>", "<eos>", *words], [0, 1, *range(1, V - 1)])
    lm = memlens.LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4}, V)
    lm.vocab = vocab
    lm.eval()
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.integers(1, V, T)]
    held = [int(i) for i in rng.integers(1, V, T)]
    vec = memlens.wrap(None, nn.LSTM(3, 4))
    inputs = [rng.standard_normal((12, 3)).astype(np.float32) for _ in range(3)]
    positions = [np.repeat(np.arange(4), 3) for _ in range(3)]
    speech = SpeechData(inputs, positions, [[1, 2, 3, 4]] * 3, ["u0", "u1", "u2"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "dir").mkdir(exist_ok=True)
    (root / "cwd").mkdir(exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "binary").write_bytes(bytes(range(256)) * 16)
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(words) + "\n" + " ".join(reversed(words)) + "\n")
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocab.itos) + "\n")
    ckpt = root / "model.pt"
    memlens.save_checkpoint(ckpt, lm)
    files = {"dir": str(root / "dir"), "missing": str(root / "missing"),
             "empty": str(root / "empty"), "binary": str(root / "binary"),
             "corpus": str(corpus), "vocab": str(vocab_file), "checkpoint": str(ckpt)}
    boot0 = memlens.RunOptions(bootstrap=memlens.Bootstrap(resamples=4, blocks=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "gradients": memlens.state_gradients(lm, ids, 3, classes=["a", "b"] * (T // 2),
                                                 options=boot0),
            "signature": memlens.memory_signature(lm, ids, held, 2, decoder="linear-fast",
                                                  options=boot0),
            "ablation": memlens.context_ablation(lm, ids, (1, 2), context="window:4",
                                                 targets=5, options=boot0),
        }
    saved = root / "saved"
    results["gradients"].save(saved)
    files["result"] = str(saved)
    return World(root, vocab, lm, ids, held, vec, speech, files, results)


# -- the entry points ----------------------------------------------------------------------------
@dataclass
class Entry:
    """One public callable and the baseline keyword arguments of a fast, valid call (every
    required parameter, plus whatever keeps the call fast)."""

    name: str
    func: Callable
    base: Callable[[World], dict]


def _fast() -> memlens.RunOptions:
    return memlens.RunOptions(bootstrap=memlens.Bootstrap(resamples=4, blocks=2))


def _analysis_entries() -> list[Entry]:
    from memlens.analyses.speech.analysis import grapheme_signature, speech_gradients

    return [
        Entry("state_gradients", memlens.state_gradients,
              lambda w: {"model": w.lm, "inputs": w.ids, "max_delay": 2, "options": _fast()}),
        Entry("memory_signature", memlens.memory_signature,
              lambda w: {"model": w.lm, "train_inputs": w.ids, "heldout_inputs": w.held,
                         "max_delay": 2, "decoder": "linear-fast", "options": _fast()}),
        Entry("context_ablation", memlens.context_ablation,
              lambda w: {"model": w.lm, "inputs": w.ids, "distances": (1, 2),
                         "context": "window:4", "targets": 4, "options": _fast()}),
        Entry("grapheme_signature", grapheme_signature,
              lambda w: {"model": w.vec, "train": w.speech, "heldout": w.speech,
                         "max_delay": 1, "decoder": "linear-fast", "options": _fast()}),
        Entry("speech_gradients", speech_gradients,
              lambda w: {"model": w.vec, "inputs": w.speech, "max_delay": 2,
                         "options": _fast()}),
    ]


def _model_entries() -> list[Entry]:
    from memlens.models.loading import load_model
    from memlens.models.run_inputs import load_run_inputs

    return [
        Entry("wrap", memlens.wrap,
              lambda w: {"embedding": nn.Embedding(V, 3), "rnn": nn.LSTM(3, 4),
                         "vocab": w.vocab}),
        Entry("as_encoder", memlens.as_encoder, lambda w: {"model": w.lm}),
        Entry("LanguageModel", memlens.LanguageModel,
              lambda w: {"config": {"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4},
                         "vocab_size": V}),
        Entry("Vocab", memlens.Vocab, lambda w: {"itos": list(w.vocab.itos)}),
        Entry("Vocab.from_symbols", memlens.Vocab.from_symbols,
              lambda w: {"symbols": list(w.vocab.itos)}),
        Entry("Vocab.build", memlens.Vocab.build, lambda w: {"tokens": ["a", "b", "a"]}),
        Entry("Vocab.read", memlens.Vocab.read, lambda w: {"path": w.files["vocab"]}),
        Entry("Site", memlens.Site, lambda w: {}),
        Entry("Stream", memlens.Stream, lambda w: {"values": w.ids}),
        Entry("Bootstrap", memlens.Bootstrap, lambda w: {}),
        Entry("Checkpointing", memlens.Checkpointing, lambda w: {}),
        Entry("RunOptions", memlens.RunOptions, lambda w: {}),
        Entry("load_checkpoint", memlens.load_checkpoint,
              lambda w: {"path": w.files["checkpoint"]}),
        Entry("save_checkpoint", memlens.save_checkpoint,
              lambda w: {"path": str(w.root / "out" / "m.pt"), "model": w.lm}),
        Entry("load_corpus", memlens.load_corpus, lambda w: {"path": w.files["corpus"]}),
        Entry("make_synthetic", memlens.make_synthetic, lambda w: {"n_sentences": 20}),
        Entry("load_result", memlens.load_result, lambda w: {"path": w.files["result"]}),
        Entry("load_model", load_model,
              lambda w: {"spec": w.files["checkpoint"]}),
        Entry("load_run_inputs", load_run_inputs,
              lambda w: {"model": w.files["checkpoint"], "corpus": w.files["corpus"],
                         "log": lambda _msg: None}),
        Entry("evaluate", memlens.evaluate,
              lambda w: {"model": w.lm, "ids": torch.tensor(w.ids), "batch": 2, "bptt": 5}),
    ]


#: public methods of the results not probed, with the reason
SKIP_METHODS = {"plot": "matplotlib drawing (slow); its inputs are the result's own",
                "figures": "writes the PNGs of save(); probed through save",
                "to_frame": "needs pandas; a view of rows()"}
#: baseline values of the result methods' required parameters, by name
METHOD_BASE: dict[str, Callable[[World, str], Any]] = {
    "tau": lambda w, k: 1,
    "cls": lambda w, k: "a",
    "a": lambda w, k: "a",
    "b": lambda w, k: "b",
    "direction": lambda w, k: w.results[k].direction("a", "b"),
    "out": lambda w, k: str(w.root / "out" / f"{k}-saved"),
}


def _result_entries(world: World) -> list[Entry]:
    """Every public method of the three result classes (read from the class)."""
    out = []
    for key, result in world.results.items():
        for name, member in inspect.getmembers(type(result), inspect.isfunction):
            if name.startswith("_") or name in SKIP_METHODS:
                continue
            params = [p for p in inspect.signature(member).parameters.values()
                      if p.name != "self" and p.default is inspect.Parameter.empty
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            missing = [p.name for p in params if p.name not in METHOD_BASE]
            assert not missing, (f"{type(result).__name__}.{name}: give a baseline value of "
                                 f"{missing} in METHOD_BASE (or skip it in SKIP_METHODS)")

            def base(w, params=params, key=key):
                return {p.name: METHOD_BASE[p.name](w, key) for p in params}

            out.append(Entry(f"{type(result).__name__}.{name}",
                             getattr(result, name), base))
    return out


def entries(world: World) -> list[Entry]:
    return _analysis_entries() + _model_entries() + _result_entries(world)


# -- the hostile values --------------------------------------------------------------------------
def _generic() -> dict[str, Any]:
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "-1": -1, "0": 0,
            "huge": 2**70, "-huge": -(2**70), "0.5": 0.5, "str": "abc", "empty-str": "",
            "list": [1], "dict": {"a": 1}, "object": object(), "None": None, "True": True}


def _streams() -> dict[str, Any]:
    return {"text": "w1 w2 w3", "empty": [], "out-of-range": [0, 10**9], "negative": [1, -3],
            "2-D": np.zeros((4, 2), dtype=np.int64), "floats": [0.5, 1.5],
            "nan-vectors": np.full((4, 3), np.nan, dtype=np.float32),
            "non-strings": [None, 3.5, "w1"], "nested": [[1, 2], [3]],
            "huge-ids": np.array([2**62], dtype=np.int64)}


def _paths(world: World) -> dict[str, Any]:
    f = world.files
    return {"path-dir": f["dir"], "path-missing": f["missing"], "path-empty": f["empty"],
            "path-binary": f["binary"], "path-obj": Path(f["missing"]),
            "path-bytes": os.fsencode(f["corpus"]), "path-nul": f["corpus"] + "\x00x"}


def _devices() -> dict[str, Any]:
    """Device names torch refuses (or that this machine lacks) and foreign torch devices."""
    out = {"gpu9": "gpu9", "cuda:x": "cuda:x", "cuda:99": "cuda:99", "CPU": "CPU",
           "meta": torch.device("meta"), "index-5": 5}
    if not torch.cuda.is_available():
        out["cuda-absent"] = "cuda"
    return out


def _is_stream(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray, torch.Tensor, memlens.Stream))


def _is_path(param: inspect.Parameter, value: Any) -> bool:
    text = str(param.annotation)
    return isinstance(value, Path) or "PathLike" in text or param.name in (
        "path", "spec", "corpus", "out", "model_or_dir")


def hostile_values(world: World, param: inspect.Parameter, baseline: Any
                   ) -> Iterator[tuple[str, Any]]:
    """The hostile values of one parameter: every generic one; the stream ones for a
    parameter whose baseline is a sequence; the path ones for a path parameter; bad device
    names for a ``device``; a foreign torch module for a module parameter."""
    yield from _generic().items()
    if _is_stream(baseline) or param.name in ("inputs", "ids", "tokens", "symbols", "itos"):
        yield from _streams().items()
    if _is_path(param, baseline):
        yield from _paths(world).items()
    if param.name == "device":
        yield from _devices().items()
    if isinstance(baseline, nn.Module) or param.name in ("model", "rnn", "embedding"):
        yield "foreign-module", nn.Linear(2, 2)
        yield "gru", nn.GRU(3, 4)


def parameters(func: Callable) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(func).parameters.values()
            if p.name not in ("self", "cls", "log")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@dataclass
class Case:
    entry: Entry
    param: str
    label: str
    value: Any

    @property
    def name(self) -> str:
        return f"{self.entry.name}({self.param}={self.label})"


def cases(world: World, only: set[str] | None = None) -> list[Case]:
    out = []
    for entry in entries(world):
        if only and entry.name not in only:
            continue
        base = entry.base(world)
        for p in parameters(entry.func):
            for label, value in hostile_values(world, p, base.get(p.name, p.default)):
                out.append(Case(entry, p.name, label, value))
    return out


def _alarm(signum, frame):
    raise CaseTimeout


def outcome(world: World, case: Case, seconds: int = CASE_SECONDS) -> str | None:
    """None when the case keeps the contract, else what went wrong (``seconds``: the
    bound of its time)."""
    kwargs = {**case.entry.base(world), case.param: case.value}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    start, cwd = time.perf_counter(), os.getcwd()
    os.chdir(world.root / "cwd")  # a relative path ("abc", "") lands here, not in the repo
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.entry.func(**kwargs)
    except CaseTimeout:
        return f"ran past {seconds} s"
    except MemlensError as exc:
        msg = str(exc)
        if not msg or "\n" in msg.strip():
            return f"MemlensError without a one-line message: {msg!r}"
    except Interrupted:
        pass
    except BaseException as exc:  # noqa: BLE001 - the point of the probe
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    took = time.perf_counter() - start
    return None if took < seconds else f"took {took:.0f} s"


# -- the tests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("api-hostile"))


def test_every_entry_point_keeps_the_contract(world):
    """Every parameter of every public entry point, every hostile value: success or one
    MemlensError line (the failures are listed together)."""
    failures = []
    for case in cases(world):
        problem = outcome(world, case)
        if problem:
            failures.append(f"{case.name}: {problem}")
    assert not failures, f"{len(failures)} cases break the contract:\n" + "\n".join(failures)


def test_enumeration_covers_the_public_api(world):
    """The entry points come from the package: every callable of memlens.__all__ is probed
    (or listed here with its reason), and a new keyword of any of them is in the cases."""
    probed = {e.name for e in entries(world)}
    not_probed = {"MemlensError": "the exception itself",
                  "RecurrentEncoder": "built by wrap / as_encoder (probed)",
                  "RecurrentLayer": "abstract base class", "StepLayer": "a user's step "
                  "function; its hostile cases live in test_own_model_cli",
                  "TorchLayer": "built by wrap (probed)", "Result": "abstract base class",
                  "Corpus": "plain data, validated by the analyses (probed)",
                  "TrainConfig": "the train command's options (tests/test_hostile.py)",
                  "train": "the train command (tests/test_hostile.py)",
                  "from_hf": "needs a Hugging Face directory (tests/test_hf.py)"}
    for name in memlens.__all__:
        obj = getattr(memlens, name)
        if callable(obj):
            assert name in probed or name in not_probed, f"{name} is not probed"
    n = {e.name: len(parameters(e.func)) for e in entries(world)}
    assert n["state_gradients"] == len(inspect.signature(memlens.state_gradients).parameters)


def test_string_and_non_string_inputs_refused(world):
    """The two silent acceptances of the issue: a str as a stream, a vocabulary of
    non-strings."""
    with pytest.raises(MemlensError, match="inputs: .*str"):
        memlens.state_gradients(world.lm, "w1 w2 w3 w4", 1)
    with pytest.raises(MemlensError, match="vocabulary"):
        memlens.Vocab(["<unk>", "<eos>", 3, None])
    with pytest.raises(MemlensError, match="vocabulary"):
        memlens.Vocab.from_symbols([b"a", "b"])


@pytest.mark.parametrize("call,message", [
    (lambda w: memlens.load_corpus(3), r"^path must be a file path \(str or os.PathLike\), "
                                        "got int$"),
    (lambda w: memlens.load_checkpoint(None), "^path must be a file path .*got NoneType$"),
    (lambda w: memlens.load_result([w.files["result"]]), "^path must be a file path .*got list$"),
    (lambda w: memlens.Vocab.read(os.fsencode(w.files["vocab"])), "^path must .*got bytes$"),
    (lambda w: memlens.save_checkpoint(7, w.lm), "^path must be a file path .*got int$"),
    (lambda w: memlens.save_checkpoint(w.files["dir"], w.lm), "is a directory"),
    (lambda w: memlens.save_checkpoint(str(w.root / "never.pt"), nn.Linear(2, 2)),
     "save_checkpoint needs a memlens LanguageModel or a wrapped encoder .*got Linear"),
    (lambda w: memlens.load_checkpoint(w.files["checkpoint"], device="gpu9"),
     "unknown device 'gpu9'"),
    (lambda w: memlens.load_checkpoint(w.files["checkpoint"], device=5),
     "^device must be a device name .*got 5$"),
    (lambda w: memlens.evaluate(w.lm, torch.tensor(w.ids), device=None),
     "^device must be a device name .*got None$"),
    (lambda w: memlens.evaluate(w.lm, w.ids), "^ids must be a 1-D torch tensor"),
    (lambda w: memlens.evaluate(nn.GRU(3, 4), torch.tensor(w.ids)),
     "evaluate needs a memlens LanguageModel"),
    (lambda w: memlens.LanguageModel(3, V), "^config must be a mapping"),
    (lambda w: memlens.make_synthetic(10**12), "synthetic corpus of 7000000000000 tokens "
                                               "would need about .* GiB"),
    (lambda w: memlens.make_synthetic(2**70), "^n_sentences must be in 1"),
    (lambda w: memlens.make_synthetic(5, seed=[1]), "^seed must be an integer"),
])
def test_named_refusals(world, call, message):
    """The refusals of issue 21's API classes name the parameter and what was expected, in
    one line, at once (a huge synthetic corpus is refused from its estimate, not built)."""
    start = time.perf_counter()
    with pytest.raises(MemlensError, match=message) as info:
        call(world)
    assert "\n" not in str(info.value) and time.perf_counter() - start < 5
    assert not (world.root / "never.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(world):
    for call in (lambda: memlens.load_checkpoint(world.files["checkpoint"], device="cuda"),
                 lambda: memlens.evaluate(world.lm, torch.tensor(world.ids), device="cuda:0")):
        with pytest.raises(MemlensError, match="no CUDA device is available"):
            call()


GARBAGE = {"WORLD_SIZE": ["abc", "-1", "0", "1e3", str(2**70), "", "2.5"],
           "RANK": ["abc", "-1", "2", "1e3", str(2**70), ""],
           "LOCAL_RANK": ["abc", "-1", "2", str(2**70), ""],
           "MEMLENS_DIST_TIMEOUT": ["abc", "nan", "inf", "-1", "0"]}


@pytest.mark.parametrize("name,value", [(k, v) for k, vs in GARBAGE.items() for v in vs])
def test_garbage_torchrun_variables(monkeypatch, name, value):
    """A garbage WORLD_SIZE / RANK / LOCAL_RANK of a torchrun launch (here WORLD_SIZE=2):
    one line naming the variable, before torch.distributed reads it."""
    from memlens.runtime import distributed

    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29500", name: value}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(MemlensError, match=name) as info:
        distributed.init_from_env(torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_valid_torchrun_variables(monkeypatch):
    from memlens.runtime import distributed

    for k, v in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    assert distributed.check_env() == (4, 3, 1)


@pytest.mark.parametrize("command", ["gradients", "report"])
@pytest.mark.parametrize("value", ["abc", "-1", str(2**70)])
def test_garbage_world_size_exits_2(world, monkeypatch, capsys, command, value):
    """The CLI: exit 2 and one ``memlens: error:`` line naming WORLD_SIZE (a command that
    shards and one that does not)."""
    from memlens.cli import main

    monkeypatch.setenv("WORLD_SIZE", value)
    argv = {"gradients": ["gradients", "--model", world.files["checkpoint"], "--corpus",
                          world.files["corpus"], "--out", str(world.root / "never")],
            "report": ["report", world.files["result"], "--out",
                       str(world.root / "never.html")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memlens: error:") and "WORLD_SIZE" in err[0]
    assert not (world.root / "never").exists() and not (world.root / "never.html").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "abc", "1e400", "-inf"])
def test_max_memory_env_is_named(monkeypatch, value):
    """MEMLENS_MAX_MEMORY that is not a positive finite number of bytes: one line naming it."""
    from memlens.core.limits import check_memory, memory_budget

    monkeypatch.setenv("MEMLENS_MAX_MEMORY", value)
    with pytest.raises(MemlensError, match="MEMLENS_MAX_MEMORY"):
        memory_budget()
    with pytest.raises(MemlensError, match="MEMLENS_MAX_MEMORY"):
        check_memory(10, "the checkpoint")


def test_max_memory_env_accepts_sizes(monkeypatch):
    from memlens.core.limits import memory_budget

    for value, want in (("1000", 1000), ("1e9", 10**9), (" 2048 ", 2048)):
        monkeypatch.setenv("MEMLENS_MAX_MEMORY", value)
        assert memory_budget() == want


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        todo = cases(world, set(argv) or None)
        start, bad = time.perf_counter(), 0
        for case in todo:
            problem = outcome(world, case)
            if problem:
                bad += 1
                print(f"{case.name}: {problem}", flush=True)
        print(f"{bad} of {len(todo)} cases fail ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    sys.exit(main(sys.argv[1:]))
