"""The size rules of docs/architecture.md, read from the source (the layers contract itself is
checked by ``lint-imports`` in ``make test``):

* no function or method in ``src/`` is longer than ``MAX_LINES`` lines (decorators and
  docstring included): a long function is split into named steps that can be read and tested
  alone;
* no public function or method (a name without a leading underscore) takes more than
  ``MAX_PARAMS`` parameters (``self``/``cls`` not counted, ``*args``/``**kwargs`` counted):
  run options travel in one :class:`memlens.runtime.options.RunOptions`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "memlens"
MAX_LINES = 100
MAX_PARAMS = 12


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(SRC.parent), node


def _params(fn: ast.FunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args]
    count = len(names) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
    return count - (1 if names and names[0] in ("self", "cls") else 0)


def test_the_rules_see_the_source():
    assert sum(1 for _ in _functions()) > 300


def test_no_function_is_longer_than_the_limit():
    long = [f"{path}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
            for path, fn in _functions() if fn.end_lineno - fn.lineno + 1 > MAX_LINES]
    assert not long, "split these into named steps:\n" + "\n".join(long)


def test_no_public_entry_point_takes_more_than_a_dozen_parameters():
    wide = [f"{path}:{fn.lineno} {fn.name} ({_params(fn)} parameters)"
            for path, fn in _functions()
            if not fn.name.startswith("_") and _params(fn) > MAX_PARAMS]
    assert not wide, "group run options in RunOptions:\n" + "\n".join(wide)


@pytest.mark.parametrize("source, lines, params", [
    ("def f(a, b, *c, d, **e):\n    return 1\n", 2, 5),
    ("class A:\n    def m(self, x):\n        pass\n", 2, 1),
])
def test_the_counting_rules(source, lines, params):
    fn = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef))
    assert (fn.end_lineno - fn.lineno + 1, _params(fn)) == (lines, params)
