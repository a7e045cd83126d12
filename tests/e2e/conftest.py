"""A gateway whose `support` route has every tier (a rule, a classifier, two LLMs) and a store,
for the tests of the model APIs other than Chat Completions: one per module, so it does not keep
serving (and shipping records) while later tests run; some of them measure the process's heap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import DEMO_KEY, OTHER_KEY, make_config, store_settings
from tests.intents import noisy_rows
from tests.servers import gateway_server
from tiers.classifier.training import train


@pytest.fixture(scope="module")
def tiered_gateway(simulator: tuple[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("tiered")
    model = tmp / "intents.joblib"
    # four intents, no labels held out: calibrated to the point estimates
    train(noisy_rows(), target_precision=0.95, class_rounds=0, bound=False).save(model)
    routes = [
        {
            "name": "support",
            "rules": [
                {"when": {"last_user_matches": "(?i)reset (my )?password"}, "answer": "account_access"}
            ],
            "classifier": {"model": str(model)},
            "llm": ["small", "large"],
        },
        {"name": "auto", "llm": ["small", "large"]},
    ]
    agents = [
        {"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 1_000_000}},
        {"id": "other", "api_key": OTHER_KEY},
    ]
    store = store_settings(f"sqlite:///{tmp}/store.db", tmp)
    with gateway_server(make_config(simulator[0], routes=routes, agents=agents, store=store)) as url:
        yield url
