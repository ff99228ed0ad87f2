"""Every public object of the API reference has a numpy-style docstring (issue 25).

The public API is ``memlens.__all__`` plus the public methods and properties that its classes
define themselves (inherited ones are documented where they are defined; torch.nn.Module,
``object`` and dataclass machinery are not ours). Each function or method needs a summary, a
``Parameters`` section naming every parameter of its signature with a type and a description,
and a ``Returns`` (or ``Yields``) section when it returns a value; each class documents its
constructor's parameters (``Parameters``, or ``Attributes`` for dataclass fields) in the class
docstring or in its own ``__init__``. Properties need a summary. The docstrings are parsed with
griffe's numpy parser, the one mkdocstrings uses to render docs/api.md.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import logging
import textwrap

import pytest

griffe = pytest.importorskip("griffe")

import memlens  # noqa: E402

logging.getLogger("griffe").setLevel(logging.ERROR)  # no parent object: type warnings are noise

_SKIP_PARAMS = {"self", "cls"}
_NONE = {"None", "NoneType", None}


# The result classes that entries of memlens.__all__ RETURN. They are not in memlens.__all__
# (nobody imports them: a user gets one from state_gradients(...), memory_signature(...),
# context_ablation(...) or load_result(...)), but their methods and properties are what a
# user calls next, so they are public API too and docs/api.md documents them ("Results").
# test_returned_results_are_listed keeps this list in step with the return annotations.
RESULT_CLASSES = (
    "memlens.analyses.gradients.result.GradientResult",  # state_gradients
    "memlens.analyses.signatures.signature.Signature",  # memory_signature
    "memlens.analyses.ablation.result.ContextAblationResult",  # context_ablation
    "memlens.results.SavedResult",  # load_result
)


def _result_class(qualname: str):
    module, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _class_members(qualname: str, cls):
    """(qualified name, object, kind) of a class and the public methods and properties it
    defines itself."""
    yield qualname, cls, "class"
    for attr, member in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            yield f"{qualname}.{attr}", member.__func__, "method"
        elif isinstance(member, property):
            yield f"{qualname}.{attr}", member, "property"
        elif inspect.isfunction(member):
            yield f"{qualname}.{attr}", member, "method"


def _members():
    """(qualified name, object, kind) for every public object; kind: function, class, method,
    property."""
    for name in memlens.__all__:
        obj = getattr(memlens, name)
        if inspect.isclass(obj):
            yield from _class_members(f"memlens.{name}", obj)
        else:
            yield f"memlens.{name}", obj, "function"
    for qualname in RESULT_CLASSES:
        yield from _class_members(qualname, _result_class(qualname))


MEMBERS = list(_members())


def _sections(doc: str) -> dict:
    parsed = griffe.Docstring(inspect.cleandoc(doc)).parse("numpy")
    out: dict = {}
    for section in parsed:
        out.setdefault(section.kind.value, []).append(section)
    return out


def _documented(sections: dict, kinds=("parameters", "other parameters")) -> dict:
    names = {}
    for kind in kinds:
        for section in sections.get(kind, []):
            for item in section.value:
                names[item.name.lstrip("*")] = item
    return names


def _returns_value(func) -> str | None:
    """'returns', 'yields' or None, from the return annotation, else the function's body."""
    annotation = inspect.signature(func).return_annotation
    if annotation is not inspect.Signature.empty:
        text = annotation if isinstance(annotation, str) else getattr(
            annotation, "__name__", str(annotation))
        if text in _NONE:
            return None
        if text.split("[")[0].split(".")[-1] in {"Iterator", "Generator", "Iterable"}:
            return "yields"
        return "returns"
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return None
    node = tree.body[0]
    found = None
    stack = list(node.body)
    while stack:
        item = stack.pop()
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(item, (ast.Yield, ast.YieldFrom)):
            return "yields"
        if isinstance(item, ast.Return) and item.value is not None and not (
                isinstance(item.value, ast.Constant) and item.value.value is None):
            found = "returns"
        stack.extend(ast.iter_child_nodes(item))
    return found


def _check_parameters(qualname, params, sections, problems):
    documented = _documented(sections)
    for param in params:
        if param.name in _SKIP_PARAMS:
            continue
        item = documented.get(param.name)
        if item is None:
            problems.append(f"{qualname}: parameter {param.name!r} not documented")
            continue
        if not item.description.strip():
            problems.append(f"{qualname}: parameter {param.name!r} has no description")
        if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and not item.annotation:
            problems.append(f"{qualname}: parameter {param.name!r} has no type")
    names = {p.name for p in params}
    for extra in documented:
        if extra not in names:
            problems.append(f"{qualname}: documents {extra!r}, not in the signature")


def _check_function(qualname, func, problems):
    doc = func.__doc__
    if not doc or not doc.strip():
        problems.append(f"{qualname}: no docstring")
        return
    sections = _sections(doc)
    _check_parameters(qualname, list(inspect.signature(func).parameters.values()), sections,
                      problems)
    wanted = _returns_value(func)
    if wanted == "returns" and "returns" not in sections:
        problems.append(f"{qualname}: no Returns section")
    if wanted == "yields" and "yields" not in sections and "returns" not in sections:
        problems.append(f"{qualname}: no Yields section")


def _own_init(cls):
    """The class's __init__ when memlens defines it (on the class or a memlens base)."""
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None:
            module = getattr(init, "__module__", "") or ""
            return init if module.startswith("memlens") else None
    return None


def _check_class(qualname, cls, problems):
    doc = cls.__doc__
    if not doc or not doc.strip():
        problems.append(f"{qualname}: no docstring")
        return
    sections = _sections(doc)
    if dataclasses.is_dataclass(cls):
        # private fields (GradientResult's caches _boot, _rows) are not API, as private methods
        fields = [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
        documented = _documented(sections, ("parameters", "other parameters", "attributes"))
        for name in fields:
            item = documented.get(name)
            if item is None:
                problems.append(f"{qualname}: field {name!r} not documented")
            elif not item.description.strip():
                problems.append(f"{qualname}: field {name!r} has no description")
        return
    init = _own_init(cls)
    if init is None:
        return
    own = vars(cls).get("__init__")
    if own is not None and own.__doc__:  # mkdocstrings merges __init__'s docstring
        for kind, found in _sections(own.__doc__).items():
            sections[kind] = sections.get(kind, []) + found
    _check_parameters(qualname, list(inspect.signature(init).parameters.values()), sections,
                      problems)


def _problems(qualname, obj, kind) -> list[str]:
    problems: list[str] = []
    if kind == "class":
        _check_class(qualname, obj, problems)
    elif kind == "property":
        if not obj.__doc__ or not obj.__doc__.strip():
            problems.append(f"{qualname}: no docstring")
    else:
        _check_function(qualname, obj, problems)
    return problems


def test_public_api_is_listed():
    names = [m[0] for m in MEMBERS]
    assert len(names) > 100 and "memlens.Result.to_frame" in names and "memlens.Site" in names


def test_returned_results_are_listed():
    from memlens.runtime.result import Result

    returned = set()
    for name in memlens.__all__:
        obj = getattr(memlens, name)
        if inspect.isfunction(obj):
            ret = inspect.signature(obj, eval_str=True).return_annotation
            if inspect.isclass(ret) and issubclass(ret, Result) and ret is not Result:
                returned.add(f"{ret.__module__}.{ret.__qualname__}")
    assert returned == set(RESULT_CLASSES)


@pytest.mark.parametrize(("qualname", "obj", "kind"), MEMBERS, ids=[m[0] for m in MEMBERS])
def test_docstring(qualname, obj, kind):
    problems = _problems(qualname, obj, kind)
    assert not problems, "\n".join(problems)
