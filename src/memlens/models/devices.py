"""Devices: the one place where a ``device`` argument is checked and resolved.

Every API entry point that takes a ``device`` (the loaders, :func:`memlens.evaluate`,
:class:`memlens.RunOptions`) and the CLI's ``--device`` go through :func:`parse_device`
(is it a device name or a ``torch.device``?) and :func:`resolve_device` (the torch device,
with a CUDA device checked to exist), so that a bad value ("gpu9", 5, None where no default
applies, "cuda" on a machine without CUDA) is one line of :class:`MemlensError` naming the
parameter, never a torch ``RuntimeError``, ``TypeError`` or ``ValueError``.

:func:`parse_device` needs no torch (the CLI checks ``--device`` before importing it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from memlens.core.errors import MemlensError
from memlens.core.limits import shown

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = re.compile(r"(auto|cpu|cuda(:\d{1,6})?)")
DEVICE_TYPES = ("cpu", "cuda")


def _is_torch_device(value: Any) -> bool:
    return type(value).__name__ == "device" and type(value).__module__.startswith("torch")


def parse_device(value: Any, what: str = "device") -> Any:
    """Check that ``value`` names a device; do not resolve it.

    Parameters
    ----------
    value
        "auto", "cpu", "cuda", "cuda:N" or a ``torch.device``.
    what
        The parameter or option it was given as, for the message.

    Returns
    -------
    str or torch.device
        ``value`` itself.

    Raises
    ------
    MemlensError
        One line: an unknown device name, or a value of another type (an int, None, ...).
    """
    if isinstance(value, str):
        if not DEVICE_NAMES.fullmatch(value):
            raise MemlensError(f"unknown device {value[:40]!r}: choose auto, cpu or cuda")
        return value
    if _is_torch_device(value):
        return value
    raise MemlensError(f"{what} must be a device name (auto, cpu, cuda) or a torch.device, "
                       f"got {shown(value)}")


def resolve_device(device: str | torch.device | None = None, what: str = "--device",
                   allow_none: bool = True) -> torch.device:
    """The torch device to run on.

    Parameters
    ----------
    device
        None or "auto": cuda if available, else cpu; "cpu", "cuda", "cuda:N" or a
        ``torch.device`` as given, once checked (:func:`parse_device`; a cuda device must
        exist, and only cpu and cuda devices are accepted).
    what
        The parameter or option it was given as, for the message.
    allow_none
        False: None is refused (an entry point whose ``device`` has a default of its own).

    Returns
    -------
    torch.device
        The resolved device.

    Raises
    ------
    MemlensError
        One line naming ``what``: see :func:`parse_device`, a device type other than cpu
        and cuda, or a CUDA device this machine does not have.
    """
    import torch

    if device is None and not allow_none:
        raise MemlensError(f"{what} must be a device name (auto, cpu, cuda) or a "
                           "torch.device, got None")
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = torch.device(parse_device(device, what))
    if out.type not in DEVICE_TYPES:
        raise MemlensError(f"{what} {out} is not supported: choose auto, cpu or cuda")
    if out.type == "cuda":
        if not torch.cuda.is_available():
            raise MemlensError(f"{what} {out} requested but no CUDA device is available")
        if out.index is not None and out.index >= torch.cuda.device_count():
            raise MemlensError(f"{what} {out} requested but only {torch.cuda.device_count()} "
                               "CUDA device(s) are available")
    return out


__all__ = ["DEVICE_NAMES", "DEVICE_TYPES", "parse_device", "resolve_device"]
