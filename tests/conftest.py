from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config.loading import parse_config
from gateway.config.models import GatewayConfig
from tests.servers import simulator_server

DEMO_KEY = "sk-test-agent"
OTHER_KEY = "sk-test-other"
ADMIN_KEY = "sk-test-admin"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # CI sets TIERGATE_REQUIRE_REDIS so that a missing redis-server fails the run instead of skipping.
    if os.environ.get("TIERGATE_REQUIRE_REDIS"):
        import shutil

        if shutil.which("redis-server") is None:
            raise pytest.UsageError("redis-server is required (TIERGATE_REQUIRE_REDIS is set)")


def make_config(sim_url: str, **overrides: Any) -> GatewayConfig:
    """A small config around the simulator: agents `agent` and `other`, routes `triage` and `auto`."""
    upstream_extra = overrides.pop("upstream_extra", {})
    raw: dict[str, Any] = {
        "server": {"admin_key": ADMIN_KEY, "max_body_bytes": 64 * 1024},
        "upstreams": [
            {
                "name": "small",
                "base_url": sim_url,
                "model": "sim-small",
                "retry_base_s": 0.01,
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                **upstream_extra.get("small", {}),
            },
            {
                "name": "large",
                "base_url": sim_url,
                "model": "sim-large",
                "retry_base_s": 0.01,
                "price": {"input_per_mtok": 10.0, "output_per_mtok": 20.0},
                **upstream_extra.get("large", {}),
            },
        ],
        "agents": [
            {"id": "agent", "api_key": DEMO_KEY, "routes": ["triage", "auto", "small"]},
            {"id": "other", "api_key": OTHER_KEY, "routes": ["auto"]},
        ],
        "routes": [
            {
                "name": "triage",
                "rules": [
                    {"when": {"last_user_matches": "(?i)reset (my )?password"}, "answer": "account_access"}
                ],
                "llm": ["small", "large"],
            },
            {"name": "auto", "llm": ["small", "large"]},
        ],
        "cache": {"backend": "memory"},
    }
    for key, value in overrides.items():
        raw[key] = value
    import yaml

    return parse_config(yaml.safe_dump(raw), {})


def store_settings(store_url: str, tmp_path: Any, **extra: Any) -> dict[str, Any]:
    """A store for an end-to-end test: its own spool folder, shipped every 50 ms."""
    return {
        "url": store_url,
        "spool_dir": str(tmp_path / "spool"),
        "ship_interval_s": 0.05,
        "auto_upgrade": True,
        **extra,
    }


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A three-master Redis Cluster for the whole session (tests flush what they use)."""
    from tests.cluster import redis_cluster

    with redis_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def simulator() -> Iterator[tuple[str, Any]]:
    with simulator_server() as running:
        yield running


POSTGRES_ADMIN_URL = os.environ.get("TIERGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards (a real server: never skipped)."""
    import secrets

    from tests.databases import create_database, drop_database

    name = "tiergate_test_" + secrets.token_hex(6)
    url = create_database(POSTGRES_ADMIN_URL, name)
    try:
        yield url
    finally:
        drop_database(POSTGRES_ADMIN_URL, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The store's URL on each engine it supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("postgres_url"))
