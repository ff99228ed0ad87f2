"""The context regime: how an analysis feeds a stream of T inputs to the model.

A model is analysed in the regime it was trained and used in. One option, ``context=`` in the
API and ``--context`` on the CLI, with the same values for every analysis:

* ``stream``        one continuous stream, the state carried from position 0 to T-1 (the
                    default of gradients and signatures);
* ``segment:S``     the state carried, but only pairs (target t, source t - tau) inside one
                    segment of S positions (segments start at 0, S, 2S, ...): truncated BPTT
                    over S steps, as the original state-gradient code (``num_steps`` = S);
* ``sentence``      the state reset to the model's initial state at the start of every
                    sentence (position 0 and the position after each ``<eos>``; the utterances
                    of a speech corpus; the ``sentence_starts`` of a
                    :class:`~memlens.models.inputs.Stream`), pairs only inside a sentence;
* ``window:N``      independent windows of N inputs, each from the initial state; options
                    ``window:N,stride=M`` (default M = N: windows side by side; M < N: they
                    overlap and a position is analysed once per window holding it) and
                    ``targets=last`` (only the last position of each window is a target;
                    default ``targets=all``). A bare integer N means ``window:N``.

Context ablation always scores the last position of a window (``window:N``, default
``window:300``; stride and targets are set by its ``targets=`` option instead).

:func:`layout` turns a regime into a :class:`Layout`: the rows the model reads (T' source
positions, in order), where segments start, whether the state resets there, and which rows are
targets. Every analysis applies the same layout, so "window:40" means the same thing in each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from memlens.core.errors import MemlensError
from memlens.core.limits import MAX_POSITIONS

KINDS = ("stream", "segment", "sentence", "window")
TARGETS = ("all", "last")
_SYNTAX = ("stream, segment:S, sentence or window:N[,stride=M][,targets=all|last] "
           "(S, N, M positive integers)")


@dataclass(frozen=True)
class Context:
    """One context regime (module docstring). ``length``: S of ``segment``, N of ``window``;
    ``stride`` and ``targets``: of ``window`` only. ``str(context)`` is its canonical
    spelling, as recorded in every result's settings."""

    kind: str = "stream"
    length: int | None = None
    stride: int | None = None
    targets: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MemlensError(f"unknown context {self.kind!r}: choose {_SYNTAX}")
        sized = self.kind in ("segment", "window")
        if sized != (self.length is not None):
            raise MemlensError(f"context {self.kind} {'needs' if sized else 'takes no'} a "
                               f"length: choose {_SYNTAX}")
        for name in ("length", "stride"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_POSITIONS):
                raise MemlensError(f"context {name} must be a positive integer (at most "
                                   f"2**62), got {value!r}")
        if self.kind != "window" and (self.stride is not None or self.targets != "all"):
            raise MemlensError(f"stride= and targets= belong to window:N, not {self.kind}")
        if self.targets not in TARGETS:
            raise MemlensError(f"context targets must be all or last, got {self.targets!r}")
        if self.stride is not None and self.stride == self.length:
            object.__setattr__(self, "stride", None)  # windows side by side: the default

    @classmethod
    def parse(cls, value: Context | str | int | None, default: str = "stream") -> Context:
        """A Context from its spelling (``"window:40,stride=20,targets=last"``), a bare integer
        N (``window:N``), a Context, or None (``default``). One-line MemlensError otherwise."""
        if value is None:
            value = default
        if isinstance(value, Context):
            return value
        if _is_int(value):
            return cls("window", int(value))
        if not isinstance(value, str):
            raise MemlensError(f"context must be a string such as 'window:40', got {value!r}")
        text = value.strip().lower()
        if re.fullmatch(r"\d+", text):
            return cls("window", _number(text, value))
        kind, _, rest = text.partition(":")
        if kind not in KINDS:
            raise MemlensError(f"unknown context {value!r}: choose {_SYNTAX}")
        if not rest:
            return cls(kind)
        parts = rest.split(",")
        extra = {}
        for part in parts[1:]:
            key, eq, val = part.partition("=")
            if not eq or key.strip() not in ("stride", "targets") or key.strip() in extra:
                raise MemlensError(f"cannot read context {value!r}: choose {_SYNTAX}")
            extra[key.strip()] = val.strip()
        stride = _number(extra["stride"], value) if "stride" in extra else None
        return cls(kind, _number(parts[0], value), stride, extra.get("targets", "all"))

    def __str__(self) -> str:
        if self.length is None:
            return self.kind
        text = f"{self.kind}:{self.length}"
        if self.stride is not None and self.stride != self.length:
            text += f",stride={self.stride}"
        if self.targets != "all":
            text += f",targets={self.targets}"
        return text

    @property
    def resets(self) -> bool:
        """Whether the state restarts from the initial state at each segment start."""
        return self.kind in ("sentence", "window")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(text: str, whole) -> int:
    text = text.strip()
    if not re.fullmatch(r"\d{1,19}", text):
        raise MemlensError(f"cannot read context {whole!r}: choose {_SYNTAX}")
    return int(text)


@dataclass
class Layout:
    """How a stream of T positions is read under a context regime (T' rows).

    ``positions`` (T' int64): the stream position read at each row; ``starts`` (T' bool or
    None): a segment starts at this row (None: one segment); ``reset``: the state restarts
    from the model's initial state at every start (else it is carried and only the pairs are
    cut); ``targets`` (T' bool or None): rows that are targets (None: all). Row r's segment
    begins at row ``segment_start()[r]``; a pair (target row r, delay tau) counts when
    tau <= r - segment_start()[r].
    """

    context: Context
    positions: np.ndarray
    starts: np.ndarray | None
    reset: bool
    targets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def identity(self) -> bool:
        """True for ``stream``: the rows are the stream itself, nothing cut or reset."""
        return self.starts is None and self.targets is None

    def segment_start(self) -> np.ndarray:
        """T' int64: the first row of each row's segment."""
        n = len(self.positions)
        if self.starts is None:
            return np.zeros(n, dtype=np.int64)
        first = np.where(self.starts, np.arange(n), 0)
        return np.maximum.accumulate(first)

    def offsets(self) -> np.ndarray:
        """T' int64: each row's index inside its segment (the longest delay it has)."""
        return np.arange(len(self.positions)) - self.segment_start()

    def lag_targets(self, classes: np.ndarray, max_delay: int) -> np.ndarray:
        """T' x (K+1) class ids: entry (r, k) the class of the input k rows before row r in
        its segment (``classes`` per stream position, -1 = none); -1 where k reaches before
        the segment start or row r is not a target."""
        cls = np.asarray(classes, dtype=np.int64)[self.positions]
        n, offsets = len(cls), self.offsets()
        out = np.full((n, max_delay + 1), -1, dtype=np.int64)
        for k in range(max_delay + 1):
            ok = offsets >= k
            out[ok, k] = cls[np.nonzero(ok)[0] - k]
        if self.targets is not None:
            out[~self.targets] = -1
        return out


def check_model_regime(context: Context, model: object | None) -> None:
    """Refuse a regime that carries the state across the whole stream (``stream``,
    ``segment:S``) for a model with layers whose state grows with the context (attention
    blocks of a hybrid: ``layer.context_grows``): one-line MemlensError naming the layers.
    Every analysis that takes ``context=`` calls it right after parsing the regime."""
    grows = [i for i, lay in enumerate(getattr(model, "layers", None) or ())
             if getattr(lay, "context_grows", False)]
    if not grows or context.resets:
        return
    name = getattr(model, "model_type", None) or type(model).__name__
    raise MemlensError(f"{name} has attention blocks (layers {', '.join(map(str, grows))}): "
                       f"its context grows without bound in the {context.kind} regime; use "
                       "--context window:N (e.g. window:256) or sentence (context= in the API)")


def layout(context: Context, length: int, sentence_starts: np.ndarray | None = None,
           what: str = "the stream") -> Layout:
    """The :class:`Layout` of ``context`` over a stream of ``length`` positions.
    ``sentence_starts``: sorted positions where a sentence begins (needed by ``sentence``;
    position 0 always begins one)."""
    T = int(length)
    pos = np.arange(T, dtype=np.int64)
    if context.kind == "stream":
        return Layout(context, pos, None, False, None)
    if context.kind == "segment":
        return Layout(context, pos, pos % context.length == 0, False, None)
    if context.kind == "sentence":
        if sentence_starts is None:
            raise MemlensError(f"context sentence needs sentence boundaries, and {what} has "
                               "none (no <eos> in the vocabulary, no utterances, no "
                               "sentence_starts): use window:N or stream")
        starts = np.zeros(T, dtype=bool)
        idx = np.asarray(sentence_starts, dtype=np.int64)
        starts[idx[(idx >= 0) & (idx < T)]] = True
        starts[:1] = True
        return Layout(context, pos, starts, True, None)
    N, M = context.length, context.stride or context.length
    if N > T:
        raise MemlensError(f"context {context} is longer than {what} ({T} positions)")
    count = (T - N) // M + 1
    if count * N > MAX_POSITIONS:
        raise MemlensError(f"context {context} makes {count} windows of {N}: too many rows")
    first = np.arange(count, dtype=np.int64) * M
    rows = (first[:, None] + np.arange(N)).reshape(-1)
    starts = np.zeros(count * N, dtype=bool)
    starts[::N] = True
    targets = None
    if context.targets == "last":
        targets = np.zeros(count * N, dtype=bool)
        targets[N - 1::N] = True
    return Layout(context, rows, starts, True, targets)


__all__ = ["KINDS", "Context", "Layout", "check_model_regime", "layout"]
