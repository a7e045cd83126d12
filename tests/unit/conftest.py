"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest

from tiers.classifier.embeddings import StaticEmbeddings


@pytest.fixture(scope="session")
def loaded() -> StaticEmbeddings:
    """The installed static word-piece embeddings, loaded once."""
    return StaticEmbeddings.load()
