"""Optional dependencies: one place that imports them and names the install line when absent.

memlens runs on torch, numpy and friends alone; Hugging Face models need ``transformers``
(the ``hf`` extra) and speech corpora need ``soundfile`` and ``librosa`` (the ``speech``
extra). :func:`require` imports one of them and, when it is missing, raises a
:class:`~memlens.core.errors.MemlensError` whose one line says which ``pip install`` line
provides it (the CLI prints it and exits with status 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from memlens.core.errors import MemlensError

# optional module -> (the extra that installs it, what needs it)
EXTRAS = {
    "transformers": ("hf", "support for Hugging Face models"),
    "soundfile": ("speech", "speech support"),
    "librosa": ("speech", "speech support"),
}


def require(module: str) -> ModuleType:
    """Import the optional ``module`` (or a submodule of it) and return it.

    Parameters
    ----------
    module : str
        A module name whose top-level package is a key of :data:`EXTRAS`, e.g.
        ``"soundfile"`` or ``"transformers.activations"``.

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    MemlensError
        When the package is not installed: ``"<what> needs the optional package <name>:
        pip install 'memlens[<extra>]'"``.
    """
    top = module.split(".")[0]
    extra, what = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ImportError:  # absent, or installed without its own dependencies
        raise MemlensError(f"{what} needs the optional package {top}: "
                           f"pip install 'memlens[{extra}]'") from None
