"""How analyses run: options, the block bootstrap, progress and checkpoints, output files.

* :mod:`~memlens.runtime.options`: :class:`RunOptions`, :class:`Bootstrap`,
  :class:`Checkpointing`, the option schema (:data:`~memlens.runtime.options.OPTIONS`,
  ``check_option``), ``resolve_device`` / ``resolve_dtype``;
* :mod:`~memlens.runtime.bootstrap`: THE block bootstrap;
* :mod:`~memlens.runtime.progress`: THE progress / checkpoint / resume / fingerprint /
  interrupt mechanism (one :class:`Interrupted` exception);
* :mod:`~memlens.runtime.io`: claimed outputs, result directories and their manifest, locks;
* :mod:`~memlens.runtime.result`: the base :class:`Result` and its writer;
* :mod:`~memlens.runtime.distributed`: sharded runs over ``torch.distributed``;
* :mod:`~memlens.runtime.plotting`: the matplotlib set-up of every plot.

The names below are imported on first use (torch and matplotlib stay unloaded until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Bootstrap": "options", "Checkpointing": "options", "RunOptions": "options",
         "as_options": "options", "check_option": "options", "resolve_device": "options",
         "resolve_dtype": "options", "Interrupted": "progress", "RunCheckpoint": "progress",
         "fingerprint": "progress", "interrupt_guard": "progress", "progress_bar": "progress",
         "block_bootstrap": "bootstrap", "Result": "result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"memlens.runtime.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'memlens.runtime' has no attribute {name!r}")


__all__ = sorted(_LAZY)
