"""Prompt tokens are counted when something needs them: a budget, the complexity score, an
upstream that reports no usage; not for a rules answer to an agent without limits."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from budgets.tokens import PromptTokens
from gateway.runtime.build import build_gateway
from tests.conftest import DEMO_KEY, OTHER_KEY, make_config
from tiers.types import ChatRequest, Message


def test_a_prompt_is_counted_once_and_only_when_asked() -> None:
    calls: list[int] = []
    tokens = PromptTokens(lambda: calls.append(1) or 42)
    assert calls == []
    assert tokens() == 42 and tokens() == 42
    assert calls == [1]


async def test_only_an_agent_with_limits_pays_for_counting_a_rules_answers_prompt(
    simulator: tuple[str, Any],
) -> None:
    agents = [
        {"id": "free", "api_key": DEMO_KEY, "routes": ["triage"]},
        {"id": "metered", "api_key": OTHER_KEY, "routes": ["triage"], "budget": {"tokens_per_day": 100_000}},
    ]
    config = make_config(simulator[0], agents=agents)
    async with AsyncExitStack() as stack:
        gateway = await build_gateway(config, stack)
        counted = gateway.chat._counter._counts  # the counter's cache of texts it has counted
        by_id = {a.id: a for a in config.agents}
        for agent, text in (
            ("free", "please reset my password, code 7781"),
            ("metered", "reset password 9921"),
        ):
            request = ChatRequest(model="triage", messages=[Message(role="user", content=text)])
            result = await gateway.chat.complete(by_id[agent], request)
            assert result.headers["x-tiergate-tier"] == "rules"
            assert (text in counted) == (agent == "metered"), agent
