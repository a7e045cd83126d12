"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade
from gateway.store.sql import SqlStore


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """A store at the schema's head, on each engine (`store_url`)."""
    engine = create_engine(store_url)
    await upgrade(engine, store_url)
    store = SqlStore(engine)
    yield store
    await store.close()
