"""The planted-memory study: a synthetic experiment with a known answer (``memlens demo``).

What is planted: in a stream of sentences ``noun filler x (distance-1) verb``, the verb
(``is``/``are``) agrees in number with the noun ``distance`` steps earlier, so a language model
must carry the noun's number for exactly ``distance`` steps (and nothing else: fillers are
uniform noise). The input embeddings are fixed and built by hand: the number feature lives on
one low-variance coordinate (plural nouns +1, singular nouns -1), while an irrelevant
coordinate has ``irrelevant_scale`` times the spread of the other coordinates, so that the
embedding space's variance is dominated by a direction that carries no information
(DESIGN.md section 3). The planted direction is the difference of the class-mean embeddings of
plural and singular nouns.

What is measured, for a small LSTM and a GRU trained on the corpus (``memlens.training.lm``), three
ways; every reading gives the first delay / lag / distance at which the memory is *over*
(held through d - 1 for planted distance d: the state that predicts the verb):

* state gradients (``memlens.state_gradients``, class "noun" at the source): the strength
  |Gn(tau) dn| of the state's reaction along the planted direction; recovered = 1 + the last
  delay at which it is at least half its peak (:func:`end_of_strength`). Beside it, as
  contrasts, the relative memory |G d| / sigma_1 in normalised and raw embedding space;
  1 + the last delay at which it is >= 0.9 (:func:`end_of_dominance`);
* memory signatures (``memlens.memory_signature``) of the number of the noun k steps back, for
  the trained model, a random-init control (same fixed embeddings, untrained recurrent weights)
  and a trigram window (an oracle that sees exactly the last 2 tokens). Recovered = the first
  lag >= 1 at which accuracy falls to that of the random-init control (memory that training
  added); as a contrast, the first lag at which it falls to the majority baseline (the verb
  repeats the number, so past the planted distance every network can read the number off the
  verb for a while);
* context ablation (``memlens.context_ablation`` through the LM's next-token head) at the verb
  positions: the tokens farther than k before the verb are swapped for those before another
  verb (``swap``) or dropped (``drop``, from a zero state: a contrast); recovered = the
  effective context, the smallest k from which the verb's loss rises by at most half a bit
  (:class:`PlantedAblation`).

Every output is a :class:`~memlens.results.Result` written by ``save``: per model a gradients
and a signatures result directory, and one ``planted-memory`` result (kind of its own) with the
per-delay readings as declared series, what each method recovered, and the findings as
sentences. Everything is generated in the package; nothing is downloaded.

The package, by concern (each module imports only from those above it in this list):

* :mod:`~memlens.studies.planted.config`: :class:`PlantedConfig` and the analyses' fixed sizes;
* :mod:`~memlens.studies.planted.corpus`: the planted corpus, embeddings and direction;
* :mod:`~memlens.studies.planted.rules`: what each reading is (:data:`METHODS`), the recovery
  rules and the expected-vs-found records (:func:`recovered_rows`);
* :mod:`~memlens.studies.planted.prose`: the findings and the description as sentences;
* :mod:`~memlens.studies.planted.plots`: the figures;
* :mod:`~memlens.studies.planted.results`: the :class:`~memlens.results.Result` subclasses;
* :mod:`~memlens.studies.planted.training`: training a model with the planted embeddings;
* :mod:`~memlens.studies.planted.analyses`: the three analyses of a trained model;
* :mod:`~memlens.studies.planted.study`: :func:`run_planted`, the whole study.
"""

from memlens.studies.planted.analyses import (
    measure_ablation,
    measure_gradients,
    measure_signatures,
)
from memlens.studies.planted.config import (
    ABLATION_BOOTSTRAP,
    GRADIENT_BOOTSTRAP,
    MAX_DISTANCE,
    NGRAM_ORDER,
    SIGNATURE_RESAMPLES,
    PlantedConfig,
)
from memlens.studies.planted.corpus import (
    IRRELEVANT_COORD,
    NOUN_COORD,
    NUMBER_COORD,
    planted_corpus,
    planted_direction,
    planted_embeddings,
)
from memlens.studies.planted.plots import ABLATION_LABELS
from memlens.studies.planted.prose import description, findings, recovered_text
from memlens.studies.planted.results import (
    PlantedAblation,
    PlantedGradients,
    PlantedResult,
    PlantedSignatures,
    curve_rows,
)
from memlens.studies.planted.rules import (
    ABLATION_TOLERANCE_BITS,
    DOMINANCE,
    METHODS,
    STRENGTH_FRACTION,
    end_of_dominance,
    end_of_strength,
    first_delay_not_first,
    first_delay_weak,
    first_lag_at_baseline,
    planted_ranks,
    recovered_rows,
)
from memlens.studies.planted.study import run_planted

__all__ = ["ABLATION_BOOTSTRAP", "ABLATION_LABELS", "ABLATION_TOLERANCE_BITS", "DOMINANCE",
           "GRADIENT_BOOTSTRAP", "IRRELEVANT_COORD", "MAX_DISTANCE", "METHODS", "NGRAM_ORDER",
           "NOUN_COORD", "NUMBER_COORD", "SIGNATURE_RESAMPLES", "STRENGTH_FRACTION",
           "PlantedAblation", "PlantedConfig", "PlantedGradients", "PlantedResult",
           "PlantedSignatures", "curve_rows", "description", "end_of_dominance",
           "end_of_strength", "findings", "first_delay_not_first", "first_delay_weak",
           "first_lag_at_baseline", "measure_ablation", "measure_gradients",
           "measure_signatures", "planted_corpus", "planted_direction", "planted_embeddings",
           "planted_ranks", "recovered_rows", "recovered_text", "run_planted"]
