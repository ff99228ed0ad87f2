"""Golden behaviour: the numbers of a fixed set of seeded CLI runs equal those of the original
code (commit 6cc8c12) stored in tests/golden/golden.json.

The runs and the number extraction are those of tests/golden/make_golden.py (its ``RUNS``,
imported here from its path): one subprocess runs them all with the memlens this test
imports (its ``src`` first on PYTHONPATH), on CPU with one thread, and writes the numbers;
each run is then compared key by key with the golden ones: the same keys, the same shapes
and dtypes, and every number within rtol 1e-6 / atol 1e-9 (rtol 1e-9 / atol 1e-12 for the
float64 gradient runs). Regenerate golden.json only from the original code (see
make_golden.py), never from the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MAKE = HERE / "golden" / "make_golden.py"
_spec = importlib.util.spec_from_file_location("memlens_make_golden", MAKE)
mg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mg)

GOLDEN = json.loads(mg.GOLDEN.read_text()) if mg.GOLDEN.is_file() else None
SPEECH_LIBS = all(importlib.util.find_spec(m) is not None for m in ("soundfile", "librosa"))
SHOWN = 12  # mismatches listed per run
SAME_MACHINE = ("python", "torch", "numpy", "machine", "cpu")  # what the numbers depend on

pytestmark = pytest.mark.slow  # ~15-20 s on 2 CPU cores (one subprocess for all runs)


@pytest.fixture(scope="module")
def current(tmp_path_factory) -> dict:
    """The numbers of every run of ``mg.RUNS`` with the code under test (one subprocess)."""
    if GOLDEN is None:
        pytest.fail(f"{mg.GOLDEN} is missing: generate it from the original code "
                    "(tests/golden/make_golden.py --golden)")
    root = tmp_path_factory.mktemp("golden")
    spec = importlib.util.find_spec("memlens")  # without importing it (a half-done move)
    src = Path(spec.origin).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    groups = sorted({r["group"] for r in mg.RUNS if r["group"] != "speech" or SPEECH_LIBS})
    cmd = [sys.executable, str(MAKE), "--json", str(root / "numbers.json"),
           "--work", str(root / "work"), "--groups", ",".join(groups)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    out = root / "numbers.json"
    if not out.is_file():
        pytest.fail(f"make_golden.py wrote no numbers (exit {proc.returncode}):\n"
                    f"{proc.stderr[-4000:]}")
    doc = json.loads(out.read_text())
    assert Path(doc["environment"]["memlens"]) == src / "memlens", doc["environment"]
    return doc


def flatten(numbers: dict) -> dict[str, tuple[list, str | None]]:
    """{key: (values, how)} of one run's numbers: how is None (elementwise), "sum:SCALE" or
    "exact" (shapes and dtypes)."""
    flat: dict[str, tuple[list, str | None]] = {}
    for out, rec in numbers.items():
        for part, body in rec.items():
            for name, value in body.items():
                key = f"{out}|{part}|{name}"
                if part == "table":
                    flat[key] = (value, None)
                elif part in ("sections", "history"):
                    flat[key] = ([value], None)
                else:  # arrays, tensors
                    flat[f"{key}|shape"] = (value["shape"] + [value["dtype"]], "exact")
                    if "values" in value:
                        flat[f"{key}|values"] = (value["values"], None)
                    if "sample" in value:
                        flat[f"{key}|sample"] = (value["sample"], None)
                    if "stats" in value:
                        s = value["stats"]
                        for stat, v in s.items():
                            how = {"sum": f"sum:{s['abs_sum']}",
                                   "proj": f"sum:{s['abs_proj']}"}.get(stat)
                            flat[f"{key}|stats|{stat}"] = ([v], how)
    return flat


def mismatch(gold: list, cur: list, how: str | None, rtol: float, atol: float) -> str | None:
    """Why ``cur`` differs from ``gold`` beyond the tolerance, or None."""
    if how == "exact" or len(gold) != len(cur):
        return None if gold == cur else f"{gold} != {cur}"
    worst, where = 0.0, None
    for i, (g, c) in enumerate(zip(gold, cur)):
        if g is None or c is None:
            if g is not c:
                return f"[{i}] golden {g} current {c}"
            continue
        tol = atol + rtol * (float(how[4:]) if how else abs(g))
        err = abs(c - g)
        if not err <= tol or not math.isfinite(err):
            if where is None or err / tol > worst:
                worst, where = err / tol, i
    if where is None:
        return None
    return (f"[{where}] golden {gold[where]!r} current {cur[where]!r} "
            f"({worst:.3g} x the tolerance)")


#: golden numbers that are no longer numbers, by design: ablation's ``context`` setting is the
#: context regime's spelling, "window:300", since 0.3.0 (issue 22)
NOT_NUMBERS_ANY_MORE = ("summary/context", "settings/context")


def test_golden_covers_exactly_the_runs():
    assert GOLDEN is not None, f"{mg.GOLDEN} is missing"
    assert sorted(GOLDEN["runs"]) == sorted(r["name"] for r in mg.RUNS)


@pytest.mark.parametrize("run", mg.RUNS, ids=[r["name"] for r in mg.RUNS])
def test_golden_numbers(current, run):
    name = run["name"]
    if run["group"] == "speech" and not SPEECH_LIBS:
        pytest.skip("speech extra (soundfile, librosa) not installed")
    rec = current["runs"].get(name)
    assert rec is not None, f"{name} did not run"
    assert rec["rc"] == 0, f"memlens {' '.join(rec['argv'])} -> exit {rec['rc']}:\n{rec['log']}"
    here = {k: current["environment"].get(k) for k in SAME_MACHINE}
    there = {k: GOLDEN["environment"].get(k) for k in SAME_MACHINE}
    if here != there:  # bit-level numbers of trained weights belong to one CPU and library set
        pytest.skip(f"the golden numbers were made on {there}; this is {here} (the run itself "
                    "succeeded)")
    gold = flatten(GOLDEN["runs"][name]["numbers"])
    cur = flatten(rec["numbers"])
    # new outputs (extra keys) are allowed; a golden number may only go away as a listed
    # format change
    missing = sorted(k for k in set(gold) - set(cur) if not k.endswith(NOT_NUMBERS_ANY_MORE))
    assert not missing, f"{name}: golden numbers missing: {missing[:SHOWN]}"
    bad = []
    for key, (values, how) in gold.items():
        if key not in cur:
            continue
        why = mismatch(values, cur[key][0], how, run["rtol"], run["atol"])
        if why:
            bad.append(f"{key}: {why}")
    assert not bad, (f"{name}: {len(bad)} of {len(gold)} keys differ from the original code "
                     f"(environment of the golden numbers: {GOLDEN['environment']}):\n  "
                     + "\n  ".join(bad[:SHOWN]))
