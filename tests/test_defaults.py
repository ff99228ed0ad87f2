"""Issue 21, item 7: defaults a user expects. Word-level signatures pick the fast decoder
when there are 1,000 symbols or more (``decoder="auto"``, the default of the API and the CLI);
``linear`` stays selectable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from memlens import memory_signature, wrap
from memlens.analyses.signatures.decoders import AUTO_FAST_SYMBOLS, choose_decoder
from memlens.core.errors import MemlensError
from memlens.runtime.options import as_options


def test_choose_decoder_rule():
    assert AUTO_FAST_SYMBOLS == 1000
    assert choose_decoder("auto", 999) == "linear"
    assert choose_decoder("auto", 1000) == "linear-fast"
    assert choose_decoder("linear", 5000) == "linear"  # an explicit choice is kept
    with pytest.raises(MemlensError, match="unknown decoder 'fast'"):
        choose_decoder("fast", 10)


@pytest.mark.parametrize("n_labels,expected", [(12, "linear"), (1000, "linear-fast")])
def test_memory_signature_auto_decoder_follows_the_symbol_count(n_labels, expected):
    torch.manual_seed(0)
    model = wrap(None, nn.GRU(4, 8))
    rng = np.random.default_rng(0)
    n = 3 * n_labels
    labels = [rng.permutation(n) % n_labels, rng.permutation(n) % n_labels]
    x = [torch.randn(n, 4), torch.randn(n, 4)]
    sig = memory_signature(model, x[0], x[1], 0, labels=(labels[0], labels[1]),
                           decoder_options={"max_epochs": 1},
                           options=as_options(bootstrap=0))
    assert sig.decoder == expected
