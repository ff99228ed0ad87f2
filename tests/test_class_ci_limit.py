"""Per-class bootstrap intervals under the memory limit of their block sums: the default delays
are cut to those that fit, with one TrustWarning naming the rest; delays asked for by name
that do not fit are refused in one line (before any accumulation)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import memlens
from memlens.analyses.gradients import api
from memlens.analyses.gradients.engine import EngineSettings
from memlens.core.errors import MemlensError, TrustWarning
from memlens.models import LanguageModel
from memlens.runtime.options import as_options

K = 4
BLOCKS = 8


def run(**kw):
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 5}, 8).eval()
    ids = torch.randint(0, 8, (200,), generator=torch.Generator().manual_seed(1))
    tags = ["a", "b", "c", "a", "b", "c", "a", "b"]
    return memlens.state_gradients(model, ids, K, classes=[tags[i] for i in ids.tolist()],
                                   options=as_options(blocks=BLOCKS), **kw)


def per_delay_bytes(classes=3, hidden=5, emb=3):
    return BLOCKS * hidden * (classes + 1) * emb * 8


def test_default_delays_cut_to_what_fits_with_one_warning(monkeypatch):
    full = run()
    assert full.raw.ci_delays == [0, 1, 2, K]
    monkeypatch.setattr(api, "CI_MEMORY_LIMIT", 2.5 * per_delay_bytes())
    with pytest.warns(TrustWarning, match=r"only at delays \[0, 1\], not at \[2, 4\]"):
        cut = run()
    assert cut.raw.ci_delays == [0, 1]
    # the kept delays' intervals are those of the full run; the others have none
    a, b = full.to_frame(), cut.to_frame()
    rows = a["class"].notna() & (a["class"] != "all") & a.delay.isin([0, 1])
    assert np.allclose(a[rows]["ci_low"], b[rows]["ci_low"])
    later = b["class"].isin(["a", "b", "c"]) & b.delay.isin([2, 3, 4])
    assert b[later]["ci_low"].isna().all()


def test_none_fits_says_none(monkeypatch):
    monkeypatch.setattr(api, "CI_MEMORY_LIMIT", 0.5 * per_delay_bytes())
    with pytest.warns(TrustWarning, match="only at delays none"):
        assert run().raw.ci_delays == []


def test_named_delays_that_do_not_fit_are_refused(monkeypatch):
    monkeypatch.setattr(api, "CI_MEMORY_LIMIT", 1.5 * per_delay_bytes())
    with pytest.raises(MemlensError) as err:
        run(engine=EngineSettings(class_ci_delays=(1, 3)))
    assert "\n" not in str(err.value) and "would need" in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrustWarning)
        assert run(engine=EngineSettings(class_ci_delays=(3,))).raw.ci_delays == [3]
