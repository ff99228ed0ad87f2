"""The three analyses of a model trained on the planted corpus, each through the public API:

* state gradients (``memlens.state_gradients``, class "noun" at the source), with the planted
  direction's readings (:func:`measure_gradients`);
* memory signatures (``memlens.memory_signature``) of the number of the noun k steps back, for
  the trained model, a random-init control (same fixed embeddings, untrained recurrent
  weights) and a trigram window (:func:`measure_signatures`);
* context ablation (``memlens.context_ablation`` through the LM's next-token head) at the verb
  positions (:func:`measure_ablation`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from memlens.analyses.ablation import context_ablation
from memlens.analyses.gradients import state_gradients
from memlens.analyses.signatures import (
    Signature,
    build_symbols,
    memory_signature,
    random_init_copy,
    signature_from_states,
)
from memlens.core.errors import MemlensError
from memlens.data import Corpus
from memlens.models.lm import LanguageModel
from memlens.models.ngram import window_states
from memlens.protocol import Site
from memlens.runtime.options import Bootstrap, as_options
from memlens.studies.planted.config import (
    ABLATION_BOOTSTRAP,
    GRADIENT_BOOTSTRAP,
    NGRAM_ORDER,
    SIGNATURE_RESAMPLES,
    PlantedConfig,
)
from memlens.studies.planted.corpus import corpus_info, planted_direction
from memlens.studies.planted.results import PlantedAblation, PlantedGradients, PlantedSignatures
from memlens.studies.planted.rules import ABLATION_TOLERANCE_BITS


def model_info(model: LanguageModel, path: str) -> dict[str, Any]:
    """The ``model_meta`` of a result measured on ``model`` (checkpoint ``path``)."""
    c = model.config
    return {"path": path, "arch": c["arch"], "layers": c["layers"], "emb": c["emb"],
            "hidden": c["hidden"], "unit": c["unit"]}


def measure_gradients(model: LanguageModel, ckpt: str, corpus: Corpus, cfg: PlantedConfig
                      ) -> PlantedGradients:
    """State gradients of ``model`` on ``corpus`` with the planted direction's ranks."""
    readout = "cell" if model.config["arch"] == "lstm" else "hidden"
    opts = as_options(device="cpu", bootstrap=GRADIENT_BOOTSTRAP, progress=bool(cfg.progress))
    res = state_gradients(model, model.vocab.encode(corpus.tokens), cfg.max_delay,
                                  site=Site(-1, readout), classes=corpus.tags["role"],
                                  options=opts)
    out = PlantedGradients.of(res, planted_direction(model, cfg.n_nouns), cfg.distance,
                              model.config["arch"])
    out.model_meta = model_info(model, ckpt)
    out.corpus_meta = corpus_info(corpus, cfg.gradient_sentences, cfg)
    return out


def measure_signatures(model: LanguageModel, ckpt: str, dec_c: Corpus, held_c: Corpus,
                       cfg: PlantedConfig) -> PlantedSignatures:
    """Signatures of the noun's number: trained model, random-init control, trigram window."""
    K, opts = cfg.max_delay, {"site": Site(-1, "hidden"), "symbols": "upos", "seed": cfg.seed,
                              "options": as_options(bootstrap=SIGNATURE_RESAMPLES)}
    sig = memory_signature(model, dec_c, held_c, K, **opts)
    control = random_init_copy(model, seed=cfg.seed + 1)
    with torch.no_grad():  # same fixed embeddings: only the recurrent weights are untrained
        control.encoder.embedding.weight.copy_(model.encoder.embedding.weight)
    ctrl = memory_signature(control, dec_c, held_c, K, **opts)
    window = _window_signature(model, dec_c, held_c, cfg)
    settings = {"max_delay": K, "layer": -1, "readout": "hidden", "decoder": "linear",
                "symbols": "number of the noun (sg/pl); other positions excluded",
                "control": "same model, recurrent weights untrained (seeded), same fixed "
                           "embeddings", "ngram_order": NGRAM_ORDER,
                "bootstrap_resamples": SIGNATURE_RESAMPLES, "margin": cfg.margin}
    return PlantedSignatures(sig, ctrl, window, model.config["arch"].upper(), cfg.distance,
                             cfg.margin, model_info(model, ckpt),
                             {**corpus_info(held_c, cfg.heldout_sentences, cfg),
                              "decoder_training_tokens": len(dec_c)}, settings)


def _window_signature(model: LanguageModel, dec_c: Corpus, held_c: Corpus,
                      cfg: PlantedConfig) -> Signature:
    """The oracle: the signature of an n-gram window (one-hot of the last NGRAM_ORDER - 1
    tokens), decoders trained on ``dec_c`` and scored on ``held_c``."""
    V = len(model.vocab)
    tr_ids = model.vocab.encode(dec_c.tokens).numpy()
    he_ids = model.vocab.encode(held_c.tokens).numpy()
    sym = build_symbols("upos", "word", tr_ids, dec_c.tags["upos"], model.vocab.itos)
    return signature_from_states(window_states(tr_ids, NGRAM_ORDER, V),
                                 sym.classes(tr_ids, dec_c.tags["upos"]),
                                 window_states(he_ids, NGRAM_ORDER, V),
                                 sym.classes(he_ids, held_c.tags["upos"]), cfg.max_delay, sym,
                                 seed=cfg.seed,
                                 bootstrap=Bootstrap(SIGNATURE_RESAMPLES, seed=cfg.seed))


def measure_ablation(model: LanguageModel, ckpt: str, corpus: Corpus, cfg: PlantedConfig
                     ) -> PlantedAblation:
    """Context ablation of ``model`` at the verbs of ``corpus`` (``memlens.context_ablation``
    through the model's next-token head): distances 1..max_delay, a window of max_delay + 1
    tokens, the far tokens swapped for another verb's or dropped (see
    :class:`PlantedAblation`)."""
    L = cfg.max_delay + 1
    roles = corpus.tags["role"]
    verbs = [t for t, r in enumerate(roles) if r == "verb" and t >= L]
    if not verbs:
        raise MemlensError("the ablation corpus has no verb with a full context window")
    if len(verbs) > cfg.ablation_targets:  # evenly spaced over the stream
        verbs = [verbs[i] for i in np.linspace(0, len(verbs) - 1, cfg.ablation_targets)
                 .round().astype(int)]
    ids = model.vocab.encode(corpus.tokens).numpy()
    from memlens.runtime.options import Bootstrap, RunOptions

    res = context_ablation(
        model, ids, distances=list(range(1, cfg.max_delay + 1)), perturbation=["swap", "drop"],
        context=L, targets=verbs, seed=cfg.seed, batch_size=1024,
        options=RunOptions(bootstrap=Bootstrap(ABLATION_BOOTSTRAP, 20, cfg.seed)))
    out = PlantedAblation.of(res, cfg.distance, model.config["arch"], ABLATION_TOLERANCE_BITS)
    out.model_meta = {**model_info(model, ckpt), **out.model_meta}
    out.corpus_meta = {**corpus_info(corpus, cfg.heldout_sentences, cfg),
                       "targets": f"{len(verbs)} verbs"}
    return out


__all__ = ["measure_ablation", "measure_gradients", "measure_signatures", "model_info"]
