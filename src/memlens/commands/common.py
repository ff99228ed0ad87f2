"""What several sub-commands share: the model and corpus options and the ONE loader of a run's
inputs (:func:`inputs_from_args`), arguments declared by the runtime option schema
(:func:`add_option`), ``--overwrite``, and the output directory of a run that may be sharded
over torchrun processes.

Validation lives in the API each command calls (the option schema, the analyses, the loader in
:mod:`memlens.models.run_inputs`); a command only parses and passes values on, and
:mod:`memlens.cli` turns a :class:`~memlens.core.errors.MemlensError` into one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from memlens.models.run_inputs import RunInputs, load_run_inputs, load_vectors
from memlens.runtime.options import OPTIONS

T = TypeVar("T")


def add_model_arguments(p) -> None:
    """--model, --vocab and --unit: the same on every command that analyses a model."""
    from memlens.models.loading import SPEC_HELP

    p.add_argument("--model", required=True, help=SPEC_HELP)
    p.add_argument("--vocab", help="the model's symbols, one per line in id order (optionally "
                   "symbol<TAB>count); needed for your own token models")
    p.add_argument("--unit", choices=["word", "char"], help="read corpora as words or "
                   "characters (default: the checkpoint's unit; word for your own models)")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    """The ``--overwrite`` option of every command that writes an output."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier memlens output at --out (only the files memlens "
                   "wrote; anything else there is never replaced)")


def add_option(parser: argparse.ArgumentParser, name: str, *aliases: str,
               flag: str | None = None, **overrides: Any) -> argparse.Action:
    """Add the option ``name`` of the runtime schema (:data:`memlens.runtime.options.OPTIONS`)
    to ``parser``: its flag (``--name-with-dashes``, or ``flag``; ``aliases``: more spellings),
    type, default, choices and help from the declaration, ``overrides`` replacing any of them
    (a command's own ``default`` or ``help``). The parsed value lands in ``args.<name>``.

    A bool option is a switch: ``--name`` sets True (store_true); a ``flag`` spelled
    ``--no-...`` sets False (store_false, default True), e.g. ``add_option(p, "progress",
    flag="--no-progress")``. argparse only converts the type; the API validates the value.
    """
    opt = OPTIONS.get(name)
    if opt is None:
        raise KeyError(f"no option {name!r} in the runtime option schema")
    flag = flag or opt.cli_flag
    kwargs = opt.argparse_kwargs()
    if opt.type is bool:
        kwargs = {**kwargs, "dest": name,
                  "action": "store_false" if flag.startswith("--no-") else "store_true"}
    schema_check = overrides.pop("schema_check", True)  # False: the API's own, stricter check
    kwargs.update(overrides)
    action = parser.add_argument(flag, *aliases, **kwargs)
    if schema_check:
        declared = parser.get_default(SCHEMA_DEST) or ()
        parser.set_defaults(**{SCHEMA_DEST: (*declared, (name, flag))})
    return action


SCHEMA_DEST = "_memlens_schema_options"  # args.<this>: the (name, flag) pairs of add_option


def check_schema_options(args: argparse.Namespace) -> None:
    """Validate every option a command took from the runtime schema (:func:`add_option`)
    against its declaration (:func:`memlens.runtime.options.check_option`), before the
    command runs: an option declared once is checked on every command that offers it (e.g.
    ``--seed -1`` of train, demo, speech-corpus and train-asr)."""
    from memlens.runtime.options import check_option

    for name, flag in getattr(args, SCHEMA_DEST, None) or ():
        check_option(name, getattr(args, name), flag)


def inputs_from_args(args: argparse.Namespace, need: str = "any", *,
                     device: str | torch.device | None = None, what: str | None = None
                     ) -> RunInputs:
    """The run's model and stream from ``args.model``, ``args.corpus``, ``args.vocab``,
    ``args.unit``, ``args.format`` and ``args.max_tokens`` (those a command lacks are not
    given) through :func:`memlens.models.run_inputs.load_run_inputs`, on ``device`` (default:
    ``args.device`` resolved, else cpu). ``need="tokens"`` refuses a model with continuous
    inputs ("memlens COMMAND needs a token model"). Warnings go through :func:`log`."""
    if device is None:
        from memlens.runtime.options import resolve_device

        device = resolve_device(getattr(args, "device", None) or "cpu")
    command = getattr(args, "command", None)
    return load_run_inputs(args.model, args.corpus, vocab=getattr(args, "vocab", None),
                           unit=getattr(args, "unit", None),
                           format=getattr(args, "format", None) or "text",
                           max_tokens=getattr(args, "max_tokens", None), device=device,
                           need=need, what=what or (f"memlens {command}" if command
                                                    else "this command"), log=log)


__all__ = ["RunInputs", "add_model_arguments", "add_option", "add_overwrite",
           "check_schema_options", "inputs_from_args", "load_vectors", "log", "sharded_output",
           "train_into"]


_QUIET = [False]  # set by sharded_output on ranks other than 0


def train_into(out: str, overwrite: bool, resume: bool, fit: Callable[[], T]) -> T:
    """Run ``fit()``, a training that writes the checkpoint OUT and keeps its per-epoch state
    in :func:`memlens.training.progress_path` (OUT), with OUT claimed as memlens output (refused
    if it is not one, unless ``overwrite``); an interrupt names the saved state and says how to
    continue (``memlens train`` and ``memlens train-asr``)."""
    from memlens.runtime.io import claim_output
    from memlens.training import progress_path

    with claim_output(out, overwrite, resume, directory=False, scratch=(".pt",)) as path:
        try:
            return fit()
        except KeyboardInterrupt:
            partial = progress_path(path)
            if partial.exists():
                raise KeyboardInterrupt(f"interrupted; finished epochs are saved in {partial}; "
                                        "rerun with --resume to continue") from None
            raise


def log(msg: str) -> None:
    """A message on stderr, from rank 0 only inside :func:`sharded_output`."""
    if not _QUIET[0]:
        print(msg, file=sys.stderr)


@contextlib.contextmanager
def sharded_output(out: str, overwrite: bool, resume: bool, device: torch.device,
                   scratch: str = ".pt") -> Iterator[tuple[Path, torch.device, object]]:
    """Claim ``--out`` for a command that shards its work under torchrun.

    Yields (out, device, group): without torchrun, ``io.claim_output`` as every command uses it
    and group None. Under torchrun it initialises the process group (gloo on CPU, NCCL on
    GPU; ``device`` becomes cuda:LOCAL_RANK), only rank 0 claims OUT (the others learn its
    path, and stop with a one-line error when rank 0 could not claim it), and the group is
    destroyed on the way out. Inside, :func:`log` is silent on ranks other than 0.
    ``scratch``: the suffix of the command's checkpoint (".pt" or ".npz"), whose names
    beside OUT must be free or hold a memlens checkpoint.
    """
    from memlens.runtime import distributed
    from memlens.runtime.io import claim_output

    created = distributed.launched() and distributed.current() is None
    device = distributed.init_from_env(device)
    group = distributed.current()
    try:
        with contextlib.ExitStack() as stack:
            claimed, err = None, None
            if group is None or group.rank == 0:
                try:
                    claimed = stack.enter_context(claim_output(out, overwrite, resume,
                                                                   scratch=(scratch,)))
                except BaseException as exc:
                    if group is None:
                        raise
                    err = exc
            if group is not None:
                distributed.agree(group, err, "checking --out")
                if err is not None:
                    raise err
                claimed = Path(distributed.broadcast_object(group, str(claimed)))
            _QUIET[0] = group is not None and group.rank != 0
            yield claimed, device, group
    finally:
        _QUIET[0] = False
        if created:
            distributed.finish()
