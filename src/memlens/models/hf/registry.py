"""The Hugging Face family registry: which transformers ``model_type`` memlens reads, and how.

A family is one module (its :class:`HFBlockLayer` subclass and its :class:`HFFamily`
adapter) and one registry line in :mod:`memlens.models.hf`::

    register_family("mamba", MambaFamily())

The adapter finds the blocks of a loaded model and wraps each as a layer:
``parts(model) -> (backbone, layers, head)``; :func:`~memlens.models.hf.from_hf` and
:func:`~memlens.models.hf.load_hf` accept exactly the registered model types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from memlens.core.errors import MemlensError
from memlens.models.hf.block import HFBlockLayer


class HFFamily:
    """Adapter of one transformers family (see module docstring).

    Subclasses set ``causal_lm`` (the causal-LM class name, e.g. "MambaForCausalLM") and
    ``backbone_attr`` (the base model's attribute in the causal LM), and define
    :meth:`layers` (one :class:`HFBlockLayer` per block) and :meth:`head`. ``own_forward``:
    whether the block outputs of sequences from the initial state may be read through the
    model's own forward (:mod:`.own_forward`; False where a block's hooked output is not the
    adapter's ``hidden``).
    """

    causal_lm: str = ""
    own_forward: bool = True
    backbone_attr: str = "backbone"
    model_type: str = ""  # set by register_family

    def accepts(self, model: nn.Module) -> bool:
        """Whether ``model`` is this family's causal LM or base model (the class name starts
        with the model type, underscores dropped: MambaForCausalLM, FalconMambaModel)."""
        return type(model).__name__.lower().startswith(self.model_type.lower().replace("_", ""))

    def layers(self, backbone: nn.Module, config: Any) -> Sequence[HFBlockLayer]:
        """One layer per block of the base model ``backbone``."""
        raise NotImplementedError

    def head(self, model: nn.Module, backbone: nn.Module) -> nn.Module | None:
        """The next-token head (B x H -> B x V logits) of the causal LM ``model``."""
        return None

    def parts(self, model: nn.Module) -> tuple[nn.Module, list[HFBlockLayer], nn.Module | None]:
        """(backbone, layers, head) of a causal LM (head None for a base model)."""
        causal = type(model).__name__.endswith("ForCausalLM")
        backbone = getattr(model, self.backbone_attr) if causal else model
        layers = list(self.layers(backbone, model.config))
        return backbone, layers, self.head(model, backbone) if causal else None


FAMILIES: dict[str, HFFamily] = {}


def register_family(model_type: str, adapter: HFFamily, replace: bool = False) -> HFFamily:
    """Register ``adapter`` for the transformers ``model_type`` (``replace=True`` overrides an
    existing registration). Returns the adapter."""
    if not isinstance(adapter, HFFamily):
        raise MemlensError(f"register_family() needs an HFFamily adapter, got "
                           f"{type(adapter).__name__}")
    if model_type in FAMILIES and not replace:
        raise MemlensError(f"Hugging Face model type {model_type!r} is already registered "
                           "(replace=True to override it)")
    adapter.model_type = model_type
    FAMILIES[model_type] = adapter
    return adapter


def unregister_family(model_type: str) -> None:
    """Remove the family of ``model_type`` (no error if it is not registered)."""
    FAMILIES.pop(model_type, None)


def supported_text() -> str:
    """"Hugging Face recurrent causal LMs: MambaForCausalLM (mamba), ..." for messages."""
    return "Hugging Face recurrent causal LMs: " + ", ".join(
        f"{f.causal_lm} ({t})" for t, f in FAMILIES.items())


def unsupported(what: str) -> MemlensError:
    """The one-line error for a model memlens cannot read, naming what it can: "<what> is not
    supported yet; supported: mamba, falcon_mamba, ... (MambaForCausalLM, ...)"."""
    return MemlensError(f"{what} is not supported yet; supported: {', '.join(FAMILIES)} "
                        f"({', '.join(f.causal_lm for f in FAMILIES.values())})")


def model_type_of(model: nn.Module) -> str:
    """``model.config.model_type`` (the class name for a model without a config)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def family_of(model: nn.Module) -> HFFamily:
    """The registered adapter of a loaded model, or the one-line unsupported error."""
    mt = model_type_of(model)
    family = FAMILIES.get(mt)
    if family is None or not family.accepts(model):
        raise unsupported(f"{mt} ({type(model).__name__})")
    return family
