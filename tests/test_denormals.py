"""Training flushes subnormal floats to zero on CPU (they made epochs 25x slower) and puts
the process-wide setting back afterwards."""

from __future__ import annotations

import torch

from memlens.training.lm import flush_denormals


def _flushing() -> bool:
    return float((torch.tensor([1e-39]) * 1.0).item()) == 0.0


def test_flush_denormals_is_on_inside_and_restored_after():
    assert not _flushing()
    with flush_denormals(torch.device("cpu")):
        assert _flushing()
    assert not _flushing()
    torch.set_flush_denormal(True)
    try:
        with flush_denormals(torch.device("cpu")):
            assert _flushing()
        assert _flushing()  # the caller's own setting is kept
    finally:
        torch.set_flush_denormal(False)


def test_flush_denormals_restores_after_an_error():
    try:
        with flush_denormals(torch.device("cpu")):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not _flushing()
