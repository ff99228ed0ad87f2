"""Shared fixtures: paths to ../shared/data (tests skip cleanly where it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
WIKITEXT = SHARED_DATA / "wikitext-2"
EWT = SHARED_DATA / "ud-english-ewt"

torch.set_num_threads(2)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (../shared/data absent)")
    return path


@pytest.fixture
def wikitext_valid() -> Path:
    return need(WIKITEXT / "valid.txt")


@pytest.fixture
def wikitext_test() -> Path:
    return need(WIKITEXT / "test.txt")


@pytest.fixture
def ewt_dev() -> Path:
    return need(EWT / "en_ewt-ud-dev.conllu")


@pytest.fixture
def ewt_test() -> Path:
    return need(EWT / "en_ewt-ud-test.conllu")
