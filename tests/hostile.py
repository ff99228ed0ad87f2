"""The hostile-input probe, built from the parser (issue 21): every option of every sub-command
is tried with hostile values, and every string option (file inputs, outputs, specs) with every
hostile kind of file, without anyone listing the options.

Used by ``tests/test_hostile.py``; ``python tests/hostile.py [COMMAND...]`` prints every case
that breaks the contract (for a quick look while fixing).

The contract of one case (:func:`check`): exit 0 or 2; on exit 2 exactly one line on stderr,
``memlens: error: ...`` (or argparse's ``memlens COMMAND: error: ...``), no traceback; no file
left behind after a refusal; the user's files unchanged; bounded time (``CASE_SECONDS``) and
memory (``CASE_MEMORY`` of new peak resident memory).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CASE_SECONDS = 60          # a case that runs longer hangs (refusals take milliseconds)
BASE_SECONDS = 300         # a base case (run without an interrupt) that runs longer hangs
SOFT_SECONDS = 12          # a run that accepted its options is interrupted (SIGINT) after this
CASE_MEMORY = 1 << 30      # new peak resident memory of one case
HUGE_FILE = (1 << 40) + 1  # a sparse file of a TiB: above every input size limit

# hostile values of an option that takes a number
NUMBER_VALUES = ("nan", "inf", "-inf", "-1", "0", "1e30", "123456789012345678901234567890",
                 "abc", "")
# hostile values of an option that takes a string (beside the special files)
STRING_VALUES = ("nan", "-1", "", "x" * 5000, "../..", "a\nb")
FILE_KINDS = ("fifo", "dev-zero", "directory", "empty", "binary", "huge", "missing")


def reset_special(files: dict[str, str]) -> None:
    """Undo what a successful case may have written at a special path: an output at the
    missing path, a result written into the (empty) directory."""
    import shutil

    missing, directory = Path(files["missing"]), Path(files["directory"])
    if missing.is_dir() and not missing.is_symlink():
        shutil.rmtree(missing)
    elif missing.exists() or missing.is_symlink():
        missing.unlink()
    if any(directory.iterdir()):
        shutil.rmtree(directory)
        directory.mkdir()
    for name in ("empty", "binary"):
        p = Path(files[name])
        if not p.is_file() or (name == "empty" and p.stat().st_size):
            raise AssertionError(f"a case replaced the special file {p}")


class CaseTimeout(BaseException):
    """Raised by the alarm inside a case that runs past CASE_SECONDS (not an Exception, so
    the CLI's own handlers do not catch it)."""


@dataclass
class Case:
    command: str
    option: str
    value: str
    argv: list[str]

    @property
    def name(self) -> str:
        v = self.value if len(self.value) < 20 else self.value[:8] + "..."
        return f"{self.command} {self.option}={v!r}"


@dataclass
class Outcome:
    """What one case did; ``interrupted``: it ran past SOFT_SECONDS and got a SIGINT."""

    rc: int | None
    stderr: str
    seconds: float
    new_files: list[str]
    memory: int
    problem: str | None
    interrupted: bool = False


def special_files(root: Path) -> dict[str, str]:
    """One path per hostile file kind, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    fifo = root / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    (root / "dir").mkdir(exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "binary").write_bytes(bytes(range(256)) * 64)
    with open(root / "huge", "wb") as fh:
        fh.truncate(HUGE_FILE)
    return {"fifo": str(fifo), "dev-zero": "/dev/zero", "directory": str(root / "dir"),
            "empty": str(root / "empty"), "binary": str(root / "binary"),
            "huge": str(root / "huge"), "missing": str(root / "no-such-file")}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    from memlens.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def value_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action that takes a value (flags and positionals), in declaration order."""
    out = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if a.nargs == 0:  # store_true / store_false switches: no value to break
            continue
        out.append(a)
    return out


def replace_option(base: list[str], action: argparse.Action, value: str) -> list[str]:
    """``base`` with the option ``action`` given ``value`` (replacing its value in ``base``
    when present, else appended); a positional replaces the base's first positional."""
    argv = list(base)
    if not action.option_strings:  # positional: report's result directories
        flags_end = next((i for i, x in enumerate(argv[1:], 1) if x.startswith("--")),
                         len(argv))
        return [argv[0], value, *argv[flags_end:]]
    for i, tok in enumerate(argv):
        if tok in action.option_strings:
            argv[i + 1] = value
            return argv
    return [*argv, action.option_strings[0], value]


def cases(bases: dict[str, list[str]], files: dict[str, str],
          commands: list[str] | None = None) -> Iterator[Case]:
    """Every hostile case of every sub-command whose base command is in ``bases``."""
    for command, parser in subparsers().items():
        if commands and command not in commands:
            continue
        base = bases[command]  # KeyError: a new command needs a base case in test_hostile
        for action in value_options(parser):
            flag = action.option_strings[0] if action.option_strings else action.dest
            if action.choices is not None:
                values: tuple[str, ...] = ("bogus", "")
            elif action.type in (int, float):
                values = NUMBER_VALUES
            else:
                values = (*(files[k] for k in FILE_KINDS), *STRING_VALUES)
            for value in values:
                kind = next((k for k, v in files.items() if v == value), value)
                yield Case(command, flag, kind, replace_option(base, action, value))


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for f in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / f
            try:
                st = p.lstat()
            except OSError:
                continue
            if p.is_file() and not p.is_symlink() and st.st_size < (1 << 24):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p.relative_to(root))] = f"{st.st_mode}:{st.st_size}"
    return out


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> int:
    """Reset this process' peak resident memory where Linux allows it (clear_refs 5) and
    return the resident memory now: a case's new peak is then :func:`_peak` minus this."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        now = _status("VmRSS")
        if now is not None:
            return now
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak() -> int:
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Alarm:
    """SIGALRM: the first time (after SOFT_SECONDS) a real SIGINT to this process, as a user's
    Ctrl-C (the run must stop with exit 130 and leave only its checkpoint); the second time
    (CASE_SECONDS) :class:`CaseTimeout`."""

    def __init__(self) -> None:
        self.interrupted = False

    def __call__(self, signum, frame) -> None:  # noqa: ARG002
        if not self.interrupted:
            self.interrupted = True
            signal.alarm(CASE_SECONDS - SOFT_SECONDS)
            os.kill(os.getpid(), signal.SIGINT)
            return
        raise CaseTimeout


def run_case(argv: list[str], workdir: Path, watch: list[Path], interrupt: bool = True
             ) -> Outcome:
    """Run ``memlens ARGV`` in this process with ``workdir`` as the working directory
    (``interrupt``: send SIGINT after SOFT_SECONDS; False: let it run to CASE_SECONDS)."""
    from memlens.cli import main

    workdir.mkdir(parents=True, exist_ok=True)
    before = {str(w): _snapshot(w) for w in [workdir, *watch]}
    err = io.StringIO()
    rss0 = _reset_peak()
    old_cwd = os.getcwd()
    alarm = _Alarm()
    alarm.interrupted = not interrupt  # the first alarm then times out at once
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(SOFT_SECONDS if interrupt else BASE_SECONDS)
    t0 = time.perf_counter()
    rc: int | None
    try:
        os.chdir(workdir)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
    except CaseTimeout:
        rc = None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(old_cwd)
    seconds = time.perf_counter() - t0
    memory = _peak() - rss0
    after = {str(w): _snapshot(w) for w in [workdir, *watch]}
    new = [f"{w}/{f}" for w in after for f in after[w] if f not in before[w]]
    changed = [f"{w}/{f}" for w in before for f, d in before[w].items()
               if after[w].get(f) != d and w != str(workdir)]
    stderr = err.getvalue()
    problem = None
    lines = [x for x in stderr.splitlines() if x.strip()]
    if rc is None:
        problem = f"runs past {CASE_SECONDS} s"
    elif alarm.interrupted and interrupt and rc != 130:
        problem = f"interrupted after {SOFT_SECONDS} s: exit {rc}, not 130: {stderr[-300:]!r}"
    elif alarm.interrupted and interrupt:
        left = [f for f in new if ".partial" not in f and not f.endswith(".lock")]
        if left:
            problem = f"files left after an interrupt: {left[:3]}"
    elif rc not in (0, 2):
        problem = f"exit {rc}: {stderr.strip()[-300:]}"
    elif "Traceback" in stderr:
        problem = "traceback on stderr"
    elif rc == 2 and (len([x for x in lines if "error:" in x]) != 1
                      or not lines[-1].startswith("memlens")):
        problem = f"not one error line: {stderr.strip()[-300:]!r}"
    elif rc == 2 and new:
        problem = f"files left after a refusal: {new[:3]}"
    elif changed:
        problem = f"user files changed: {changed[:3]}"
    elif memory > CASE_MEMORY:
        problem = f"took {memory / 2**30:.1f} GiB"
    return Outcome(rc, stderr, seconds, new, memory, problem, alarm.interrupted and interrupt)


def probe(bases: dict[str, list[str]], files: dict[str, str], scratch: Path,
          watch: list[Path], commands: list[str] | None = None,
          report: Callable[[Case, Outcome], None] | None = None) -> list[tuple[Case, Outcome]]:
    """Run every case; return the failing ones."""
    failures = []
    for n, case in enumerate(cases(bases, files, commands)):
        outcome = run_case(case.argv, scratch / f"case{n}", watch)
        if outcome.interrupted and case.value in ("fifo", "dev-zero", "empty", "binary", "huge"):
            outcome.problem = outcome.problem or (
                f"a {case.value} file was not refused within {SOFT_SECONDS} s")
        reset_special(files)
        if report is not None:
            report(case, outcome)
        if outcome.problem is not None:
            failures.append((case, outcome))
    return failures


__all__ = ["Case", "Outcome", "cases", "probe", "run_case", "special_files", "subparsers"]


if __name__ == "__main__":  # pragma: no cover - a developer's quick look
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from test_hostile import build_inputs

    root = Path(tempfile.mkdtemp(prefix="memlens-hostile-"))
    bases, files, watch = build_inputs(root)

    def show(case: Case, outcome: Outcome) -> None:
        mark = "FAIL" if outcome.problem else "ok  "
        print(f"{mark} {outcome.seconds:6.2f}s rc={outcome.rc} {case.name}"
              f"{': ' + outcome.problem if outcome.problem else ''}", flush=True)

    probe(bases, files, root / "scratch", watch, sys.argv[1:] or None, show)
