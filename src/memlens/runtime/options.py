"""Run options shared by every analysis, and the one schema that validates them.

:class:`RunOptions` bundles what is not about the question an analysis answers but about how it
runs: the device and dtype, the block bootstrap (:class:`Bootstrap`), checkpointing
(:class:`Checkpointing`), the progress bar and sharding over a process group.

The option schema: every option is declared once in :data:`OPTIONS` as an :class:`Option`
(name, Python type, bounds, choices, default, help). :func:`check_option` validates a value
against its declaration with a one-line :class:`MemlensError` naming the option; the
dataclasses here validate their fields with it in ``__post_init__``, analyses call it for their
own options (``check_option("max_delay", 20)``) and the CLI builds its arguments from the same
declarations. Semantics (those of :func:`memlens.core.limits.check_int`): a bool is not a
number, an int option takes ints (numpy integers too), a float option takes finite ints or
floats (NaN and inf are refused), bounds are inclusive unless declared open.

torch is imported only by the functions that need it (the CLI reads the schema without it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlens.core.errors import MemlensError
from memlens.core.limits import MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**63 - 1          # seeds: 0 <= seed < 2**63
MAX_COUNT = 1 << 20           # resamples, blocks, batch sizes
MAX_EPOCHS = 100_000          # training epochs
MAX_ORDER = 64                # n-gram orders, window-LM widths
MAX_LM_EPOCHS = 10_000        # epochs of the signatures study's comparison LMs
MAX_LR = 1e4                  # learning rates
MAX_MINUTES = 1e7             # --time-limit (about 19 years)
MAX_THREADS = 4096            # --threads
MAX_STACK = 1024              # frames stacked per ASR step
MAX_UTTERANCES = 1_000_000    # speech-corpus --utterances
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Option:
    """The declaration of one option.

    ``type``: int, float, bool, str or Path (a str or os.PathLike); ``low`` / ``high``: bounds
    (inclusive unless ``low_open`` / ``high_open``; None: unbounded); ``choices``: the allowed
    values of a str option; ``optional``: None is accepted (meaning "not given" / "default");
    ``parse``: a custom check ``parse(value, name) -> value`` used instead of the generic one
    (device, dtype); ``flag``: the CLI spelling (default ``--name-with-dashes``).
    """

    name: str
    type: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    help: str = ""
    optional: bool = False
    low_open: bool = False
    high_open: bool = False
    parse: Callable[[Any, str], Any] | None = None
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def argparse_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of ``parser.add_argument(opt.cli_flag, **kwargs)``: a bool option
        is a ``store_true`` flag; others take ``type``, ``default``, ``choices`` and ``help``
        (``overrides`` replace any of them, e.g. a command's own ``default``). argparse only
        converts the type; validate the parsed value with :func:`check_option`."""
        if self.type is bool:
            kwargs: dict[str, Any] = {"action": "store_true", "help": self.help}
        else:
            kwargs = {"type": {Path: str}.get(self.type, self.type), "default": self.default,
                      "help": self.help, "dest": self.name}
            if self.choices is not None:
                kwargs["choices"] = list(self.choices)
        kwargs.update(overrides)
        return kwargs


def _range_text(opt: Option) -> str:
    """"in 0..20", "in [0, 1)", ">= 0" or "> 0" for the error messages."""
    lo, hi = opt.low, opt.high
    if opt.type is int and lo == 1 and hi is not None and hi >= MAX_POSITIONS:
        return "positive"  # max_tokens: "must be positive", as before the schema
    if opt.type is int and lo is not None and hi is not None:
        return f"in {int(lo)}..{int(hi)}"
    if lo is not None and hi is not None:
        return f"in {'(' if opt.low_open else '['}{lo:g}, {hi:g}{')' if opt.high_open else ']'}"
    if lo is not None:
        return f"{'>' if opt.low_open else '>='} {lo:g}"
    return f"{'<' if opt.high_open else '<='} {hi:g}"


def _check_number(opt: Option, value: Any, name: str) -> int | float:
    """``value`` as the option's int or finite float within its bounds."""
    if opt.type is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise MemlensError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise MemlensError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise MemlensError(f"{name} must be a finite number, got {value!r}")
    too_low = opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low)
    too_high = opt.high is not None and (value >= opt.high if opt.high_open
                                         else value > opt.high)
    if too_low or too_high:
        raise MemlensError(f"{name} must be {_range_text(opt)}, got {value}")
    return value


def check_option(name: str, value: Any, what: str | None = None) -> Any:
    """Validate ``value`` for the option ``name`` of :data:`OPTIONS`; return it normalised
    (numpy integers -> int, ints -> float for float options, paths as given). ``what``: the
    name used in the error message (default ``name``; the CLI passes its flag)."""
    opt = OPTIONS.get(name)
    if opt is None:
        raise MemlensError(f"unknown option {name!r}")
    what = what or name
    if value is None:
        if opt.optional:
            return None
        raise MemlensError(f"{what} must be given (None is not allowed)")
    if opt.parse is not None:
        return opt.parse(value, what)
    if opt.type in (int, float):
        return _check_number(opt, value, what)
    if opt.type is bool:
        if type(value).__name__ not in ("bool", "bool_"):
            raise MemlensError(f"{what} must be True or False, got {value!r}")
        return bool(value)
    if opt.type is Path:
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise MemlensError(f"{what} must be a file path, got {value!r}")
        return value
    if not isinstance(value, str):
        raise MemlensError(f"{what} must be a string, got {value!r}")
    if opt.choices is not None and value not in opt.choices:
        raise MemlensError(f"{what} must be one of {', '.join(opt.choices)}, got {value!r}")
    return value


# -- device and dtype ----------------------------------------------------------------------------
def _parse_device(value: Any, what: str) -> Any:
    """A device name (auto, cpu, cuda, cuda:N) or a torch.device; checked, not resolved."""
    # one place for every device argument: memlens.models.devices
    from memlens.models.devices import parse_device

    return parse_device(value, what)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on: None or "auto" -> cuda if available, else cpu; "cpu",
    "cuda", "cuda:N" or a torch.device as given, once checked (a cuda device must exist)."""
    from memlens.models.devices import resolve_device as resolve

    return resolve(device)


def _parse_dtype(value: Any, what: str) -> Any:  # noqa: ARG001 - the message names the dtype
    resolve_dtype(value)
    return value


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32"/"float64" (or the torch dtype) -> torch dtype; anything else is refused."""
    import torch

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise MemlensError(f"unknown dtype {dtype!r}: choose float32 or float64")
        return getattr(torch, dtype)
    if dtype not in (torch.float32, torch.float64):
        raise MemlensError(f"unknown dtype {dtype!r}: choose float32 or float64")
    return dtype


def _parse_context(value: Any, what: str) -> Any:  # noqa: ARG001 - the message names it
    from memlens.runtime.context import Context

    return str(Context.parse(value))


# -- the schema ----------------------------------------------------------------------------------
def _declare(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


OPTIONS: Mapping[str, Option] = _declare(
    Option("bootstrap", int, 0, MAX_COUNT, optional=True,
           help="bootstrap resamples (0: no intervals; default: the analysis' own, 200 for "
                "gradients, 1000 for the others)"),
    Option("blocks", int, 1, MAX_COUNT, default=20,
           help="contiguous blocks of the stream resampled by the bootstrap (default 20)"),
    Option("seed", int, 0, MAX_SEED, default=0, help="random seed (0 <= seed < 2**63)"),
    Option("device", str, default="auto", parse=_parse_device,
           help="auto (cuda if available), cpu, cuda or cuda:N"),
    Option("dtype", str, choices=DTYPES, default="float32", parse=_parse_dtype,
           help="compute dtype: float32 or float64"),
    Option("progress", bool, default=False, help="show a progress bar on stderr"),
    Option("distributed", bool, default=True,
           help="shard the work over the torch.distributed process group when one is up"),
    Option("checkpoint", Path, optional=True, help="checkpoint file of an interruptible run"),
    Option("checkpoint_every", float, 0.0, None, low_open=True, default=300.0,
           help="seconds between checkpoints (default 300)"),
    Option("resume", bool, default=False, help="continue an interrupted run"),
    Option("keep_checkpoint", bool, default=False,
           help="leave the final checkpoint of a finished run (the caller deletes it)"),
    Option("stop_after", int, 0, MAX_POSITIONS, optional=True,
           help="process at most this many items in this call, save and stop"),
    Option("max_delay", int, 0, MAX_COUNT, optional=True,
           help="largest delay K (default: the analysis' own)"),
    Option("warmup", int, 0, MAX_POSITIONS, optional=True,
           help="under torchrun: positions each process reads before its shard (default "
                "max(1000, 4 K))"),
    Option("columns", int, 1, MAX_WIDTH, optional=True,
           help="input columns whose tangents one pass over the stream carries (default: all "
                "when they fit in a quarter of the memory, else the most that fit)"),
    Option("max_tokens", int, 1, MAX_POSITIONS, optional=True,
           help="use only the first N tokens"),
    Option("chunk_size", int, 1, MAX_COUNT, default=256, help="positions per chunk"),
    Option("batch_size", int, 1, MAX_COUNT, default=256, help="items per forward pass"),
    Option("tolerance", float, 0.0, 1.0, high_open=True, default=0.01,
           help="a fraction in [0, 1)"),
    Option("context", str, optional=True, parse=_parse_context,
           help="context regime: stream, segment:S, sentence or window:N[,stride=M]"
                "[,targets=all|last] (default: the analysis' own)"),
    # -- what a model or a training run is: memlens train, memlens train-asr -------------
    Option("layers", int, 1, MAX_LAYERS, default=1, help="recurrent layers"),
    Option("emb", int, 1, MAX_WIDTH, default=64, help="embedding size"),
    Option("hidden", int, 1, MAX_WIDTH, default=256, help="hidden (state) size per layer"),
    Option("rank", int, 1, MAX_WIDTH, optional=True,
           help="rank of the recurrent kernel (flstm)"),
    Option("groups", int, 1, MAX_WIDTH, default=2, help="number of groups (glstm)"),
    Option("vocab_size", int, 3, MAX_VOCAB, default=10000, optional=True,
           help="word vocabulary cap (at least 3: <unk>, <eos> and one word)"),
    Option("min_freq", int, 1, MAX_POSITIONS, default=1,
           help="least count of a word kept in the vocabulary"),
    Option("epochs", int, 1, MAX_EPOCHS, default=2, help="training epochs"),
    Option("bptt", int, 1, MAX_COUNT, default=35, help="truncated backpropagation steps"),
    Option("batch", int, 1, MAX_COUNT, default=20, help="sequences (utterances) per batch"),
    Option("lr", float, 0.0, MAX_LR, low_open=True, optional=True, help="learning rate"),
    Option("clip", float, 0.0, None, low_open=True, default=5.0,
           help="gradient-norm clip (> 0)"),
    Option("dropout", float, 0.0, 1.0, high_open=True, default=0.5,
           help="dropout probability between layers, in [0, 1)"),
    Option("stack", int, 1, MAX_STACK, default=3,
           help="stack (and subsample by) this many 10 ms frames per step"),
    Option("max_train", int, 1, MAX_POSITIONS, optional=True,
           help="use only the first N training utterances"),
    Option("time_limit", float, 0.0, MAX_MINUTES, optional=True,
           help="minutes of training: stop (evaluate, save) once passed (checked before "
                "every batch)"),
    Option("threads", int, 1, MAX_THREADS, optional=True, help="torch CPU threads"),
    # -- data made or read by the commands ---------------------------------------------------
    Option("utterances", int, 2, MAX_UTTERANCES, default=100,
           help="utterances to synthesise (at least 2: training and held-out)"),
    Option("test_fraction", float, 0.0, 1.0, low_open=True, high_open=True, default=0.1,
           help="share of held-out utterances, in (0, 1)"),
    Option("workers", int, 1, 2, default=2, help="processes (at most 2)"),
    Option("train_tokens", int, 1, MAX_POSITIONS, optional=True,
           help="use only the first N training tokens"),
    Option("heldout_tokens", int, 1, MAX_POSITIONS, optional=True,
           help="use only N held-out tokens"),
    # -- what an analysis measures -----------------------------------------------------------
    Option("layer", int, -MAX_LAYERS, MAX_LAYERS - 1, default=-1,
           help="readout layer (negative: from the top; default -1, the top layer)"),
    Option("order", int, 1, MAX_ORDER, default=5, help="n-gram order"),
    Option("ngram", int, 0, MAX_ORDER, default=0,
           help="add the state of an N-gram model (N >= 2; 0: none)"),
    Option("window_lm", int, 0, MAX_ORDER, default=0,
           help="add a feed-forward window LM of N-1 previous symbols (N >= 2; 0: none)"),
    Option("lm_max_tokens", int, 1, MAX_POSITIONS, default=300000,
           help="tokens the comparison LMs train on"),
    Option("lm_epochs", int, 1, MAX_LM_EPOCHS, default=2,
           help="epochs of the comparison window LM"),
    Option("targets", int, 1, MAX_POSITIONS, default=1000, help="scored target positions"),
    Option("distance", int, 1, 100, default=5,
           help="planted memory length in steps, 1..100 (the demo's corpus and lags grow "
                "with it)"),
    Option("contrasts", str, optional=True,
           help="tag contrasts A-B (relative memory and alignment of the direction mean "
                "embedding of A minus that of B): a preset, ptb (NNS-NN, VBD-VB, ...) or upos "
                "(NOUN-VERB, ...), or pairs A-B,C-D among the --classes names"),
    Option("tagset", str, choices=("xpos", "upos"), optional=True,
           help="tag column of a CoNLL-U lexicon (--classes lexicon:FILE.conllu): xpos "
                "(default, PTB tags as the paper's lexicon) or upos"),
)


def check_fields(obj: Any, *names: str) -> None:
    """Validate the attributes ``names`` of ``obj`` (a config dataclass whose fields are
    named after options) against their declarations, the error naming the CLI flag
    (``--vocab-size``); each attribute is replaced by its normalised value."""
    for name in names:
        value = check_option(name, getattr(obj, name), OPTIONS[name].cli_flag)
        object.__setattr__(obj, name, value)


# -- the option groups ---------------------------------------------------------------------------
def _check_fields(obj: Any, names: Mapping[str, str]) -> None:
    """Validate (and normalise) the fields of a frozen dataclass: field -> option name."""
    for fname, oname in names.items():
        object.__setattr__(obj, fname, check_option(oname, getattr(obj, fname), oname))


@dataclass(frozen=True)
class Bootstrap:
    """The block bootstrap of a per-position statistic.

    The stream is cut into ``blocks`` contiguous blocks; each of the ``resamples`` resamples
    draws that many blocks with replacement (from a generator seeded with ``seed``) and
    recomputes the statistic; the intervals are percentiles of the resampled values.

    Parameters
    ----------
    resamples : int or None, optional
        Bootstrap resamples, 0 <= resamples <= 2**20 (option ``bootstrap``). None (default):
        the analysis' own default, 200 for state gradients, 1000 for the others; 0: no
        intervals.
    blocks : int, optional
        Contiguous blocks of the stream resampled, 1 <= blocks <= 2**20 (default 20).
    seed : int, optional
        Random seed, 0 <= seed < 2**63 (default 0).

    Raises
    ------
    MemlensError
        When a field is out of range or of the wrong type (a bool is not a number).
    """

    resamples: int | None = None
    blocks: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fields(self, {"resamples": "bootstrap", "blocks": "blocks", "seed": "seed"})

    def count(self, default: int) -> int:
        """The number of resamples to draw.

        Parameters
        ----------
        default : int
            The analysis' own default, used when ``resamples`` is None.

        Returns
        -------
        int
            ``resamples``, or ``default`` when ``resamples`` is None.
        """
        return default if self.resamples is None else self.resamples


@dataclass(frozen=True)
class Checkpointing:
    """Checkpointing of an interruptible run (see :mod:`memlens.runtime.progress`).

    Parameters
    ----------
    path : str or Path or None, optional
        The checkpoint file (option ``checkpoint``). None (default): no checkpoint; an
        interrupt then just stops the run.
    every : float, optional
        Seconds between saves, > 0 (option ``checkpoint_every``, default 300).
    resume : bool, optional
        Continue the interrupted run saved at ``path`` (default False).
    keep : bool, optional
        Leave the final checkpoint of a finished run, for the caller to delete (option
        ``keep_checkpoint``, default False).
    stop_after : int or None, optional
        Process at most this many items (positions, targets) in this call, then save and raise
        :class:`~memlens.runtime.progress.Interrupted`; 0 <= stop_after <= 2**62. None
        (default): no limit.

    Raises
    ------
    MemlensError
        When a field is out of range, or ``resume`` is set without a ``path``.
    """

    path: str | Path | None = None
    every: float = 300.0
    resume: bool = False
    keep: bool = False
    stop_after: int | None = None

    def __post_init__(self) -> None:
        _check_fields(self, {"path": "checkpoint", "every": "checkpoint_every",
                             "resume": "resume", "keep": "keep_checkpoint",
                             "stop_after": "stop_after"})
        if self.resume and self.path is None:
            raise MemlensError("resume needs a checkpoint path (nothing to resume from)")


@dataclass(frozen=True)
class RunOptions:
    """How an analysis runs (not what it computes).

    The context regime is not a run option but part of what is measured: the ``context=``
    keyword of each analysis (:mod:`memlens.runtime.context`).

    Parameters
    ----------
    device : str or torch.device or None, optional
        None (default): where the model is (:meth:`device_for`); "auto": cuda if available,
        else cpu (:func:`resolve_device`); or "cpu", "cuda", "cuda:N".
    dtype : str or torch.dtype, optional
        The compute dtype: "float32" (default) or "float64".
    bootstrap : Bootstrap, optional
        The block bootstrap behind every interval (default ``Bootstrap()``).
    checkpoint : Checkpointing, optional
        Checkpointing of the run (default ``Checkpointing()``: none).
    progress : bool, optional
        Show a tqdm progress bar on stderr (default False).
    distributed : bool, optional
        Shard the work over the torch.distributed process group when one is up (default
        True); False computes everything in this process.

    Raises
    ------
    MemlensError
        When a field is invalid (an unknown device or dtype, ``bootstrap`` not a
        :class:`Bootstrap`, ``checkpoint`` not a :class:`Checkpointing`).
    """

    device: str | torch.device | None = None
    dtype: str | torch.dtype = "float32"
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    checkpoint: Checkpointing = field(default_factory=Checkpointing)
    progress: bool = False
    distributed: bool = True

    def __post_init__(self) -> None:
        if self.device is not None:
            object.__setattr__(self, "device", check_option("device", self.device))
        _check_fields(self, {"dtype": "dtype", "progress": "progress",
                             "distributed": "distributed"})
        if not isinstance(self.bootstrap, Bootstrap):
            raise MemlensError(f"bootstrap must be a Bootstrap, got {self.bootstrap!r}")
        if not isinstance(self.checkpoint, Checkpointing):
            raise MemlensError(f"checkpoint must be a Checkpointing, got {self.checkpoint!r}")

    def torch_device(self) -> torch.device:
        """The torch device of ``device``.

        Returns
        -------
        torch.device
            :func:`resolve_device` of ``device`` (None and "auto": cuda if available, else
            cpu).
        """
        return resolve_device(self.device)

    def device_for(self, model: torch.nn.Module) -> torch.device:
        """The device an analysis of ``model`` runs on.

        Parameters
        ----------
        model : torch.nn.Module
            The model analysed.

        Returns
        -------
        torch.device
            ``device`` when given (resolved), else the device of the model's first parameter
            or buffer (cpu for a model without any).
        """
        import torch

        if self.device is not None:
            return resolve_device(self.device)
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of ``dtype``.

        Returns
        -------
        torch.dtype
            :func:`resolve_dtype` of ``dtype``: ``torch.float32`` or ``torch.float64``.
        """
        return resolve_dtype(self.dtype)


# flat override name -> (group, field) for as_options; group None: a RunOptions field
_FLAT = {"blocks": ("bootstrap", "blocks"), "seed": ("bootstrap", "seed"),
         "checkpoint_every": ("checkpoint", "every"),
         "resume": ("checkpoint", "resume"), "keep_checkpoint": ("checkpoint", "keep"),
         "stop_after": ("checkpoint", "stop_after")}


def as_options(options: RunOptions | None = None, **overrides: Any) -> RunOptions:
    """``options`` (default ``RunOptions()``) with ``overrides`` applied, validated.

    Overrides use the option names: the RunOptions fields (device, dtype, progress,
    distributed), ``bootstrap`` (a :class:`Bootstrap`, or an int: the resamples),
    ``blocks``, ``seed``, ``checkpoint`` (a :class:`Checkpointing`, or a path),
    ``checkpoint_every``, ``resume``, ``keep_checkpoint`` and ``stop_after``. An override
    whose value is None is not given (ignored), so an analysis can pass its keyword arguments
    through unchanged.
    """
    if options is None:
        options = RunOptions()
    if not isinstance(options, RunOptions):
        raise MemlensError(f"options must be a RunOptions, got {options!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {"bootstrap": {}, "checkpoint": {}}
    for key, value in given.items():
        if key == "bootstrap" and not isinstance(value, Bootstrap):
            groups["bootstrap"]["resamples"] = value
        elif key == "checkpoint" and not isinstance(value, Checkpointing):
            groups["checkpoint"]["path"] = value
        elif key in _FLAT:
            group, name = _FLAT[key]
            groups[group][name] = value
        elif key in {f.name for f in dataclasses.fields(RunOptions)}:
            top[key] = value
        else:
            raise MemlensError(f"unknown run option {key!r}")
    out = dataclasses.replace(options, **top)
    for group, changes in groups.items():
        if changes:
            out = dataclasses.replace(out, **{group: dataclasses.replace(getattr(out, group),
                                                                          **changes)})
    return out


__all__ = ["DTYPES", "MAX_SEED", "OPTIONS", "Bootstrap", "Checkpointing", "Option",
           "RunOptions", "as_options", "check_fields", "check_option", "resolve_device",
           "resolve_dtype"]
