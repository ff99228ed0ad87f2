"""Golden numbers: a fixed set of small, seeded CLI runs and every number they write.

The runs (:data:`RUNS`) cover the demo, a tiny word LSTM (train, gradients, signatures,
ablation) and a tiny speech recogniser on a synthetic manifest corpus (train-asr, signatures,
gradients). Their inputs are generated here from fixed seeds with numpy/soundfile only (no
memlens code, no espeak-ng), so the original and the restructured code read the same bytes.

What is recorded, per run (:func:`collect`), from every result directory under the run's
``--out`` (each directory holding a ``result.json``):

* ``table``: every numeric column of the table rows (one list per column, in row order);
* ``summary`` and the other result sections except the standard descriptive ones (``model``,
  ``corpus``, ``settings``, ``series``, ``plots``) and the timing ones: numeric leaves, by
  JSON path;
* every numeric array of the ``*.npz`` files (in full up to :data:`FULL` elements; larger
  ones as shape + sum, sum of squares, a fixed random projection and a strided sample);
* checkpoints (``*.pt``): the numeric training history and per-tensor statistics;
* ``demo.json``: its numeric leaves.

Timings (keys naming seconds, rates per second, ...) are left out: they differ run to run.
Torch runs on one CPU thread (``CUDA_VISIBLE_DEVICES`` empty), so the numbers are the same on
every run on one machine.

Usage (from the repository root):

    # golden numbers of the ORIGINAL code (a worktree of the base commit):
    git worktree add /tmp/golden-base 6cc8c12
    PYTHONPATH=/tmp/golden-base/src .venv/bin/python tests/golden/make_golden.py --golden

    # numbers of whatever memlens is importable, into any file (what tests/test_golden.py runs):
    .venv/bin/python tests/golden/make_golden.py --json /tmp/numbers.json

The command lines live in ONE place, :data:`RUNS`: renaming a CLI option means editing that
list only (the golden numbers stay valid when the behaviour is preserved).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.json"
FULL = 4096  # arrays with more elements are recorded as statistics + a sample
SAMPLE = 512  # elements of the strided sample of a large array

# Tolerances of the comparison: float32 computations, and the float64 gradient runs.
RTOL, ATOL = 1e-6, 1e-9
RTOL64, ATOL64 = 1e-9, 1e-12

# -- THE run list: (name, group, rtol, atol, argv). "{w}" is the work directory. ------------
# group "speech" needs soundfile + librosa (the speech extra); every run is on CPU.
RUNS: list[dict] = [
    {"name": "demo", "group": "demo", "rtol": RTOL, "atol": ATOL,
     "argv": ["demo", "--quick", "--seed", "0", "--out", "{w}/demo", "--no-progress"]},
    {"name": "train", "group": "word", "rtol": RTOL, "atol": ATOL,
     "argv": ["train", "--train", "{w}/text/train.conllu", "--valid", "{w}/text/valid.conllu",
              "--format", "conllu", "--out", "{w}/lm.pt", "--arch", "lstm", "--emb", "16",
              "--hidden", "24", "--epochs", "2", "--bptt", "20", "--batch", "8",
              "--optimizer", "adam", "--dropout", "0", "--seed", "0", "--device", "cpu"]},
    {"name": "gradients", "group": "word", "rtol": RTOL64, "atol": ATOL64,
     "argv": ["gradients", "--model", "{w}/lm.pt", "--corpus", "{w}/text/test.conllu",
              "--format", "conllu", "--layer", "0", "--readout", "cell", "--max-delay", "6",
              "--classes", "upos", "--dtype", "float64", "--bootstrap", "20", "--blocks", "5",
              "--max-tokens", "1200", "--device", "cpu", "--no-progress",
              "--out", "{w}/gradients"]},
    {"name": "signatures", "group": "word", "rtol": RTOL, "atol": ATOL,
     "argv": ["signatures", "--model", "{w}/lm.pt", "--corpus", "{w}/text/train.conllu",
              "--heldout", "{w}/text/test.conllu", "--format", "conllu", "--layer", "0",
              "--readout", "hidden", "--max-delay", "4", "--symbols", "upos",
              "--train-tokens", "1500", "--heldout-tokens", "600", "--bootstrap", "20",
              "--blocks", "5", "--seed", "0", "--device", "cpu", "--out", "{w}/signatures"]},
    {"name": "ablation", "group": "word", "rtol": RTOL, "atol": ATOL,
     "argv": ["ablation", "--model", "{w}/lm.pt", "--corpus", "{w}/text/test.conllu",
              "--format", "conllu", "--distances", "1,2,4,8",
              "--perturbation", "shuffle,replace,drop", "--context", "16", "--targets", "64",
              "--bootstrap", "50", "--blocks", "4", "--seed", "0", "--batch-size", "32",
              "--device", "cpu", "--no-progress", "--out", "{w}/ablation"]},
    {"name": "train-asr", "group": "speech", "rtol": RTOL, "atol": ATOL,
     "argv": ["train-asr", "--data", "{w}/speech", "--out", "{w}/asr.pt", "--layers", "2",
              "--hidden", "16", "--epochs", "1", "--batch", "2", "--seed", "0"]},
    {"name": "speech-signatures", "group": "speech", "rtol": RTOL, "atol": ATOL,
     "argv": ["signatures", "--model", "{w}/asr.pt", "--corpus", "{w}/speech",
              "--max-delay", "2", "--bootstrap", "20", "--blocks", "4", "--device", "cpu",
              "--out", "{w}/speech-signatures"]},
    {"name": "speech-gradients", "group": "speech", "rtol": RTOL64, "atol": ATOL64,
     "argv": ["gradients", "--model", "{w}/asr.pt", "--corpus", "{w}/speech",
              "--max-delay", "3", "--dtype", "float64", "--bootstrap", "20", "--blocks", "4",
              "--device", "cpu", "--no-progress", "--out", "{w}/speech-gradients"]},
]

# keys whose numbers are timings (never compared)
TIMING = re.compile(r"second|elapsed|duration|_time|time_|throughput|per_s\b", re.I)
# result sections that describe the run rather than measure (not recorded)
DESCRIPTIVE = {"kind", "memlens_version", "model", "corpus", "settings", "series", "plots",
               "arrays_file", "performance", "stage_seconds", "table"}


def out_path(run: dict, work: Path) -> Path:
    """The ``--out`` of a run."""
    argv = run["argv"]
    return Path(argv[argv.index("--out") + 1].format(w=work))


# -- inputs (numpy / soundfile only) --------------------------------------------------------
LEXICON = {
    "DET": ("DT", ["the", "a", "every", "this"]),
    "ADJ": ("JJ", ["big", "small", "red", "old", "quiet"]),
    "NOUN": ("NN", ["cat", "dog", "man", "bird", "tree", "house", "car", "book", "river"]),
    "VERB": ("VBZ", ["sees", "likes", "finds", "takes", "has", "wants"]),
    "ADP": ("IN", ["in", "on", "near", "under"]),
    "PUNCT": (".", ["."]),
}


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    """DET (ADJ) NOUN VERB DET (ADJ) NOUN (ADP DET NOUN) . as (word, UPOS) pairs."""
    def phrase() -> list[str]:
        return ["DET"] + (["ADJ"] if rng.random() < 0.4 else []) + ["NOUN"]

    tags = phrase() + ["VERB"] + phrase()
    if rng.random() < 0.5:
        tags += ["ADP"] + phrase()
    tags.append("PUNCT")
    return [(rng.choice(LEXICON[t][1]), t) for t in tags]


def write_conllu(path: Path, sentences: int, seed: int) -> None:
    """A synthetic CoNLL-U corpus (UPOS and PTB XPOS), deterministic under ``seed``."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        for i, (word, upos) in enumerate(_sentence(rng), start=1):
            lines.append(f"{i}\t{word}\t{word}\t{upos}\t{LEXICON[upos][0]}\t_\t_\t_\t_\t_")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


SPEECH_TEXTS = ["the cat sat on the mat", "a dog ran in the park", "she said hello",
                "we went home early", "rain fell on the town", "birds sang in the trees",
                "the old man smiled", "it is a quiet night"]


def write_speech(root: Path, seed: int = 0) -> None:
    """A manifest speech corpus: one seeded tone per grapheme (60 ms; silence for a space)
    plus a little noise, 16 kHz PCM-16 WAV, 6 train and 2 test utterances."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    sr, step = 16000, 960
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path\ttranscript\tsplit"]
    for n, text in enumerate(SPEECH_TEXTS):
        t = np.arange(step) / sr
        parts = [np.zeros(step // 2)]
        for ch in text:
            f = 0.0 if ch == " " else 180.0 + 45.0 * (ord(ch) - ord("a"))
            parts.append(0.3 * np.sin(2 * np.pi * f * t) if f else np.zeros(step))
        parts.append(np.zeros(step // 2))
        x = np.concatenate(parts) + 0.01 * rng.standard_normal(sum(len(p) for p in parts))
        sf.write(root / f"u{n}.wav", x.astype(np.float32), sr, subtype="PCM_16")
        rows.append(f"u{n}.wav\t{text}\t{'test' if n >= 6 else 'train'}")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def make_inputs(work: Path, groups: set[str]) -> None:
    """Every input file of :data:`RUNS` under ``work``."""
    text = work / "text"
    text.mkdir(parents=True, exist_ok=True)
    write_conllu(text / "train.conllu", 400, seed=1)
    write_conllu(text / "valid.conllu", 60, seed=2)
    write_conllu(text / "test.conllu", 160, seed=3)
    if "speech" in groups:
        write_speech(work / "speech")


# -- numbers --------------------------------------------------------------------------------
def _num(v):
    """A JSON number (NaN/inf -> None), or raise TypeError for anything else."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def leaves(obj, prefix: str = ""):
    """(JSON path, number) of every numeric leaf, timing keys left out."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not TIMING.search(str(k)):
                yield from leaves(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}/{i}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix, _num(obj)


def _flat(a) -> list:
    import numpy as np

    a = np.asarray(a)
    digits = 9 if a.dtype in (np.float32, np.float16) else 17
    if a.dtype.kind == "f":
        return [None if not math.isfinite(x) else float(f"{x:.{digits}g}")
                for x in a.reshape(-1).tolist()]
    return [int(x) for x in a.reshape(-1).tolist()]


def stats(a) -> dict:
    """Statistics of an array (non-finite entries counted, then taken as 0): sum, sum of |x|,
    sum of squares, max |x|, the projection w @ x on seeded normal weights w and sum |w x|
    (the comparison scales the tolerance of ``sum`` by ``abs_sum`` and of ``proj`` by
    ``abs_proj``: an elementwise relative change eps moves them by at most eps times those)."""
    import numpy as np

    a = np.asarray(a)
    x = a.astype(np.float64).reshape(-1)
    bad = ~np.isfinite(x)
    x = np.where(bad, 0.0, x)
    w = np.random.default_rng(x.size).standard_normal(x.size)
    return {"sum": float(x.sum()), "abs_sum": float(np.abs(x).sum()),
            "sum_sq": float(x @ x), "max_abs": float(np.abs(x).max(initial=0.0)),
            "proj": float(w @ x), "abs_proj": float(np.abs(w * x).sum()),
            "nonfinite": int(bad.sum())}


def array_numbers(a) -> dict:
    """An array in full (``values``), or when large its :func:`stats` and a strided sample."""
    import numpy as np

    a = np.asarray(a)
    rec = {"shape": list(a.shape), "dtype": str(a.dtype)}
    if a.size <= FULL:
        rec["values"] = _flat(a)
        return rec
    rec["stats"] = stats(a)
    rec["sample"] = _flat(a.reshape(-1)[::-(-a.size // SAMPLE)])
    return rec


def result_numbers(d: Path) -> dict:
    """The numbers of one result directory (see module docstring)."""
    import numpy as np

    doc = json.loads((d / "result.json").read_text())
    out: dict = {"table": {}, "sections": {}, "arrays": {}}
    rows = doc.get("table") or []
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    for c in cols:
        vals = [row.get(c) for row in rows]
        if TIMING.search(c):
            continue
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in vals) and any(v is not None for v in vals):
            out["table"][c] = [None if v is None else _num(v) for v in vals]
    for sec, value in doc.items():
        if sec not in DESCRIPTIVE:
            out["sections"].update(dict(leaves(value, sec)))
    for z in sorted(d.glob("*.npz")):
        with np.load(z, allow_pickle=False) as arrs:
            for k in sorted(arrs.files):
                if arrs[k].dtype.kind in "fiub":
                    out["arrays"][f"{z.name}/{k}"] = array_numbers(arrs[k])
    return out


def checkpoint_numbers(path: Path) -> dict:
    """Training history (numeric, timings left out) and per-tensor sum and sum of squares."""
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    out: dict = {"history": {}, "tensors": {}}

    def walk(obj, prefix):
        if isinstance(obj, torch.Tensor):
            out["tensors"][prefix] = {"shape": list(obj.shape), "dtype": str(obj.dtype),
                                      "stats": stats(obj.detach().double().numpy())}
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if k == "history":
                    out["history"].update(dict(leaves(v, f"{prefix}/history")))
                elif k != "optimizer":
                    walk(v, f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}/{i}")

    walk(ck, "")
    return out


def collect(out: Path) -> dict:
    """Numbers of everything a run wrote at ``out`` (a result directory, a directory of
    result directories, or a checkpoint), keyed by the path relative to ``out``."""
    found: dict = {}
    if out.is_file() and out.suffix == ".pt":
        return {".": checkpoint_numbers(out)}
    for rj in sorted(out.rglob("result.json")):
        found[str(rj.parent.relative_to(out))] = result_numbers(rj.parent)
    for pt in sorted(out.rglob("*.pt")):
        found[str(pt.relative_to(out))] = checkpoint_numbers(pt)
    demo = out / "demo.json"
    if demo.is_file():
        found["demo.json"] = {"sections": dict(leaves(json.loads(demo.read_text())))}
    return found


# -- running --------------------------------------------------------------------------------
def run_all(work: Path, groups: set[str], log=print) -> dict:
    """Run :data:`RUNS` of ``groups`` in this process (memlens.cli.main) under ``work``;
    returns {name: {"argv", "rc", "log", "numbers"}}."""
    import torch

    torch.set_num_threads(1)
    from memlens.cli import main

    make_inputs(work, groups)
    results = {}
    for run in RUNS:
        if run["group"] not in groups:
            continue
        argv = [a.format(w=work) for a in run["argv"]]
        buf, start = io.StringIO(), time.time()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse usage errors
                rc = exc.code
        rec = {"argv": run["argv"], "rc": rc}
        if rc == 0:
            rec["numbers"] = collect(out_path(run, work))
        else:
            rec["log"] = buf.getvalue()[-3000:]
        results[run["name"]] = rec
        log(f"{run['name']}: rc {rc} in {time.time() - start:.1f} s")
    return results


def cpu_signature() -> str:
    """The CPU model and a digest of its instruction-set flags (trained weights, hence every
    number, depend on which vector kernels the libraries pick)."""
    import hashlib

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    digest = hashlib.sha256((flags.group(1) if flags else "").encode()).hexdigest()[:16]
    return f"{model.group(1) if model else 'unknown'} [{digest}]"


def environment() -> dict:
    import platform

    import numpy
    import torch

    import memlens

    return {"memlens": str(Path(memlens.__file__).resolve().parent), "python":
            platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "machine": platform.machine(), "processor": platform.processor(),
            "cpu": cpu_signature()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", action="store_true", help=f"write {GOLDEN}")
    ap.add_argument("--json", help="write the numbers to this file")
    ap.add_argument("--work", help="work directory (default: a temporary one)")
    ap.add_argument("--groups", default="demo,word,speech",
                    help="comma-separated run groups (demo, word, speech)")
    args = ap.parse_args(argv)
    if not args.golden and not args.json:
        ap.error("give --golden or --json FILE")
    # before torch / numpy are imported: CPU only, one thread everywhere (reproducible sums)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    groups = set(args.groups.split(","))
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="memlens-golden-")))
        work.mkdir(parents=True, exist_ok=True)
        start = time.time()
        runs = run_all(work.resolve(), groups, log=lambda m: print(m, file=sys.stderr))
        doc = {"about": "numbers of tests/golden/make_golden.py RUNS; see its docstring",
               "environment": environment(), "seconds": round(time.time() - start, 1),
               "runs": runs}
    failed = [n for n, r in runs.items() if r["rc"] != 0]
    text = json.dumps(doc, indent=None, separators=(",", ":")) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    if args.golden:
        if failed:
            print(f"not writing {GOLDEN}: runs failed: {', '.join(failed)}", file=sys.stderr)
            for n in failed:
                print(f"--- {n}\n{runs[n]['log']}", file=sys.stderr)
            return 1
        GOLDEN.write_text(text)
        print(f"wrote {GOLDEN} ({len(text) // 1024} KiB, {doc['seconds']} s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
