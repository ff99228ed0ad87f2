"""The layer-type registry: the architectures a :class:`~memlens.models.lm.LanguageModel` (and
so a checkpoint) can be built from.

A layer type is a name (``config["arch"]``, the CLI's ``--arch``) and a factory
``build(input_size, hidden_size, config) -> RecurrentLayer``, plus an optional
``check(config)`` that refuses impossible configs with a one-line :class:`MemlensError`
before anything is allocated. Adding a recurrent layer type is one subclass of
:class:`~memlens.protocol.RecurrentLayer` and one line::

    register_layer("diag", lambda i, h, cfg: DiagonalLayer(i, h))

after which ``LanguageModel({"arch": "diag", ...}, V)`` builds it, checkpoints of it save and
load (in a process that registered it; a checkpoint holds no code), and every analysis reads
it through the layer protocol (docs/recipes.md). ``memlens.wrap(embedding, [layer, ...])``
takes such layers without registration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memlens.core.errors import MemlensError
from memlens.models.layers import FactorizedLSTMLayer, GroupedLSTMLayer, TorchLayer
from memlens.protocol import RecurrentLayer

Builder = Callable[[int, int, Mapping[str, Any]], RecurrentLayer]


@dataclass(frozen=True)
class LayerType:
    """A registered architecture: ``build(input_size, hidden_size, config)`` makes one layer;
    ``check(config)`` (optional) refuses an impossible config before allocation."""

    name: str
    build: Builder
    check: Callable[[Mapping[str, Any]], None] | None = None
    description: str = ""


LAYER_TYPES: dict[str, LayerType] = {}


def register_layer(name: str, build: Builder, *, check: Callable[[Mapping[str, Any]], None]
                   | None = None, description: str = "", replace: bool = False) -> LayerType:
    """Register the layer type ``name`` (see module docstring); ``replace=True`` overrides an
    existing registration. Returns the :class:`LayerType`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise MemlensError(f"a layer type needs an identifier as its name, got {name!r}")
    if not callable(build) or (check is not None and not callable(check)):
        raise MemlensError("register_layer() needs a callable build (and check)")
    if name in LAYER_TYPES and not replace:
        raise MemlensError(f"layer type {name!r} is already registered (replace=True to "
                           "override it)")
    LAYER_TYPES[name] = LayerType(name, build, check, description)
    return LAYER_TYPES[name]


def unregister_layer(name: str) -> None:
    """Remove the layer type ``name`` (no error if it is not registered)."""
    LAYER_TYPES.pop(name, None)


def architectures() -> tuple[str, ...]:
    """The registered architecture names, in registration order."""
    return tuple(LAYER_TYPES)


def layer_type(name: str) -> LayerType:
    """The registered layer type ``name``, or a one-line error naming the choices."""
    if not isinstance(name, str) or name not in LAYER_TYPES:
        raise MemlensError(f"unknown architecture {name!r}: choose from "
                           f"{', '.join(LAYER_TYPES)}")
    return LAYER_TYPES[name]


def build_layer(name: str, input_size: int, hidden_size: int, config: Mapping[str, Any]
                ) -> RecurrentLayer:
    """One layer of type ``name`` (input I -> output H), checked against the contract."""
    layer = layer_type(name).build(input_size, hidden_size, config)
    if not isinstance(layer, RecurrentLayer):
        raise MemlensError(f"layer type {name!r} built a {type(layer).__name__}, not a "
                           "RecurrentLayer")
    if layer.input_size != input_size or layer.hidden_size != hidden_size:
        raise MemlensError(f"layer type {name!r} built a layer {layer.input_size} -> "
                           f"{layer.hidden_size}, asked for {input_size} -> {hidden_size}")
    return layer


# -- the built-in types ---------------------------------------------------------------------

def _check_glstm(cfg: Mapping[str, Any]) -> None:
    g = int(cfg["groups"] or 0)
    if g < 1 or cfg["emb"] % g or cfg["hidden"] % g:
        raise MemlensError(f"grouped LSTM needs --emb ({cfg['emb']}) and --hidden "
                           f"({cfg['hidden']}) divisible by --groups ({g})")


def _check_flstm(cfg: Mapping[str, Any]) -> None:
    if cfg["rank"] is not None and not 1 <= cfg["rank"] <= cfg["hidden"]:
        raise MemlensError(f"--rank must be in 1..{cfg['hidden']}, got {cfg['rank']}")


register_layer("lstm", lambda i, h, cfg: TorchLayer.create("lstm", i, h),
               description="LSTM (nn.LSTM)")
register_layer("gru", lambda i, h, cfg: TorchLayer.create("gru", i, h),
               description="GRU (nn.GRU)")
register_layer("rnn", lambda i, h, cfg: TorchLayer.create("rnn_tanh", i, h),
               description="Elman RNN, tanh (nn.RNN)")
register_layer("flstm", lambda i, h, cfg: FactorizedLSTMLayer(
    i, h, cfg.get("rank") or max(1, h // 4)), check=_check_flstm,
    description="LSTM with a rank-r recurrent kernel W_hh = B A (--rank)")
register_layer("glstm", lambda i, h, cfg: GroupedLSTMLayer(i, h, int(cfg.get("groups") or 2)),
               check=_check_glstm, description="LSTM of --groups independent groups")
