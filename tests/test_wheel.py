"""The wheel carries everything the program needs: it is built from a copy of the source tree,
installed into a fresh virtual environment outside the checkout (its dependencies are the
ones this environment already has, reached through a plain path line, so nothing is
downloaded and the checkout's editable install cannot leak in), and `memlens --version`,
`memlens demo --quick` and one analysis on the demo's model run there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def build_wheel(tmp: Path) -> Path:
    """The wheel, built from a copy of the sources (so the build leaves nothing in the
    checkout)."""
    src = tmp / "src-copy"
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    r = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-index", "-q", "-w", tmp / "dist", src], cwd=tmp)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp / "dist").glob("memlens-*.whl")
    return wheel


def fresh_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    r = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    assert r.returncode == 0, r.stderr
    (site,) = (venv / "lib").glob("python3*/site-packages")
    # a plain path line: the directory's own .pth files (the editable install) are not read
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        msg = Parser().parsestr(z.read(meta).decode())
    assert msg["Name"] == "memlens"
    assert msg["Description-Content-Type"] == "text/markdown"
    body = msg.get_payload()
    assert body.lstrip().startswith("#") and len(body.encode()) < 40_000  # the short README
    extras = set(msg.get_all("Provides-Extra"))
    assert {"hf", "speech", "all"} <= extras
    assert not [n for n in names if n.startswith(("tests/", "docs/", "experiments/"))]

    venv = fresh_venv(tmp_path)
    py, exe = venv / "bin" / "python", venv / "bin" / "memlens"
    r = run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
             "-q", wheel], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run([py, "-c", "import memlens; print(memlens.__file__)"], cwd=tmp_path)
    assert Path(r.stdout.strip()).is_relative_to(venv), r.stdout + r.stderr  # not the checkout

    from memlens.core.version import __version__

    r = run([exe, "--version"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"memlens {__version__}", r
    r = run([exe, "demo", "--quick", "--out", "demo", "--no-progress"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    demo = tmp_path / "demo"
    for name in ("report.html", "demo.json", "lstm.pt", "gradients-lstm/result.json",
                 "signatures-gru/result.json", "ablation-lstm/result.json"):
        assert (demo / name).is_file(), name
    assert "<img" in (demo / "report.html").read_text() or "data:image" in \
        (demo / "report.html").read_text()

    words = [f"w{i}" for i in range(40)] + ["is", "are"]
    (tmp_path / "c.txt").write_text("\n".join(" ".join(words[(7 * i + j) % len(words)]
                                                       for j in range(8)) for i in range(60)))
    r = run([exe, "gradients", "--model", "demo/lstm.pt", "--corpus", "c.txt", "--format",
             "text", "--max-delay", "5", "--out", "g", "--no-progress"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("result.json", "table.csv", "gradients.npz", "spectra.png"):
        assert (tmp_path / "g" / name).is_file(), name
