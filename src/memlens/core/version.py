"""The version of memlens (the one place it is written: the package, ``pyproject.toml`` and
every result file read it from here). In the lowest layer so that any module may import it."""

__version__ = "0.3.0"
