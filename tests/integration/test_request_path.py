"""The request path releases what a request holds exactly once, whichever way it ends: a whole
answer, a stream read to the end, a stream never read, a refusal, a request no tier could answer.
A real gateway built in process, against the simulated upstream over HTTP."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from budgets.tokens import PromptTokens
from gateway.config.models import GatewayConfig
from gateway.errors import BudgetExhausted, GatewayError
from gateway.runtime.build import Gateway, build_gateway
from tests.conftest import DEMO_KEY, make_config
from tiers.types import ChatRequest, Message, ResponseFormat, StreamOptions

ASK = [Message(role="user", content="summarise the last ticket for me")]


def metered_config(sim_url: str, records: Path, **budget: Any) -> GatewayConfig:
    agents = [
        {
            "id": "agent",
            "api_key": DEMO_KEY,
            "routes": ["*"],
            "budget": budget or {"tokens_per_day": 1_000_000},
        }
    ]
    return make_config(
        sim_url,
        agents=agents,
        records={"sink": "file", "path": str(records)},
        routes=[
            {
                "name": "strict",
                "llm": ["small"],
                "output_schema": {
                    "type": "object",
                    "properties": {"category": {"type": "string", "enum": ["billing"]}},
                    "required": ["category"],
                },
                "cache": {"enabled": False},
            }
        ],
        upstream_extra={"small": {"model": "sim-small+fault=wrong-schema"}},
        cache={"backend": "none"},
    )


async def tokens_used(gateway: Gateway) -> int:
    return max(w.used for w in await gateway.ledger.usage("agent") if w.metric == "tokens")


def records_of(path: Path, decision_id: str) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [r for r in map(msgspec.json.decode, lines) if r["id"] == decision_id]


async def test_a_stream_never_read_is_settled_and_recorded_once(simulator: Any, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    async with AsyncExitStack() as stack:
        gateway = await build_gateway(metered_config(simulator[0], records), stack)
        agent = gateway.config.agents[0]
        request = ChatRequest(model="large", messages=ASK, stream=True, max_tokens=200)
        result = await gateway.chat.complete(agent, request)
        assert result.stream is not None
        held = await tokens_used(gateway)
        assert held >= 200  # the whole completion cap is held while the stream is open
        await result.stream.aclose()  # the client left before the first frame
        await result.stream.aclose()
        after = await tokens_used(gateway)
        assert after < held  # the hold was released down to what was generated
        decision = result.headers["x-tiergate-decision-id"]
        await stack.aclose()  # flushes the record file
    [record] = records_of(records, decision)
    assert record["error"] == "client disconnected"
    assert record.get("prompt_tokens", 0) + record.get("completion_tokens", 0) == after


async def test_a_stream_read_to_the_end_settles_what_it_reported(simulator: Any, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    async with AsyncExitStack() as stack:
        gateway = await build_gateway(metered_config(simulator[0], records), stack)
        agent = gateway.config.agents[0]
        request = ChatRequest(
            model="large", messages=ASK, stream=True, stream_options=StreamOptions(include_usage=True)
        )
        result = await gateway.chat.complete(agent, request)
        assert result.stream is not None
        frames = [frame async for frame in result.stream]
        await result.stream.aclose()  # the edge closes every stream: a second ending changes nothing
        usage = msgspec.json.decode(frames[-2].removeprefix(b"data: "))["usage"]
        assert await tokens_used(gateway) == usage["total_tokens"]
        decision = result.headers["x-tiergate-decision-id"]
        await stack.aclose()
    [record] = records_of(records, decision)
    assert record["status"] == 200 and "error" not in record
    assert record["completion_tokens"] == usage["completion_tokens"]


async def test_no_tier_answering_records_its_attempts_and_charges_the_rejected_answers(
    simulator: Any, tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    async with AsyncExitStack() as stack:
        gateway = await build_gateway(metered_config(simulator[0], records), stack)
        agent = gateway.config.agents[0]
        request = ChatRequest(
            model="strict", messages=ASK, response_format=ResponseFormat(type="json_object")
        )
        with pytest.raises(GatewayError) as info:
            await gateway.chat.complete(agent, request)
        assert info.value.status == 502
        spent = await tokens_used(gateway)
        await stack.aclose()
    [record] = [r for r in map(msgspec.json.decode, records.read_bytes().splitlines())]
    assert record["status"] == 502 and "validation" in record["error"]
    assert [a["outcome"] for a in record["attempts"]] == ["escalated"]
    # the answer and its repair were generated, and both are charged
    assert record["completion_tokens"] > 0 and record["cost_usd"] > 0
    assert spent == record["prompt_tokens"] + record["completion_tokens"]


async def test_a_budget_refusal_is_recorded_and_counted_by_its_type(simulator: Any, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    async with AsyncExitStack() as stack:
        config = metered_config(simulator[0], records, tokens_per_minute=5)
        gateway = await build_gateway(config, stack)
        with pytest.raises(BudgetExhausted):
            await gateway.chat.complete(config.agents[0], ChatRequest(model="large", messages=ASK))
        metrics = gateway.metrics.render().decode()
        await stack.aclose()
    assert 'tiergate_budget_refusals_total{agent="agent"} 1.0' in metrics
    [record] = [msgspec.json.decode(line) for line in records.read_bytes().splitlines()]
    assert record["status"] == 429 and record["error_code"] == "budget_exhausted"


async def test_both_completion_caps_are_lowered_to_what_was_granted(simulator: Any, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        config = metered_config(simulator[0], tmp_path / "r.jsonl", tokens_per_minute=5_000)
        gateway = await build_gateway(config, stack)
        agent = config.agents[0]
        request = ChatRequest(model="large", messages=ASK, max_completion_tokens=1, max_tokens=1_000_000)
        route = gateway.chat.routes.resolve(agent, "large")
        plan = await gateway.chat._planner.plan(agent, route, request, PromptTokens(lambda: 10))
        assert plan.grant.reservation is not None and plan.grant.reservation.completion_tokens == 1
        assert plan.grant.request.max_completion_tokens == 1 and plan.grant.request.max_tokens == 1
        await gateway.ledger.settle(plan.grant.reservation, 0, 0)


@pytest.mark.redis
async def test_a_redis_budget_is_settled_after_the_answer_has_gone_out(
    simulator: Any, redis_proc: Any, tmp_path: Path
) -> None:
    config = metered_config(simulator[0], tmp_path / "records.jsonl")
    url = f"redis://{redis_proc.host}:{redis_proc.port}/0"
    config = config.model_copy(
        update={"state": config.state.model_copy(update={"backend": "redis", "url": url, "timeout_s": 3.0})}
    )
    admin = aioredis.Redis(host=redis_proc.host, port=redis_proc.port)
    await admin.flushdb()
    async with AsyncExitStack() as stack:
        gateway = await build_gateway(config, stack)
        request = ChatRequest(
            model="large", messages=ASK, stream=True, stream_options=StreamOptions(include_usage=True)
        )
        result = await gateway.chat.complete(gateway.config.agents[0], request)  # reserved
        assert result.stream is not None
        await admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")  # Redis answers nothing for 1 s
        began = time.monotonic()
        frames = [frame async for frame in result.stream]  # ends with the settlement handed over
        assert time.monotonic() - began < 0.5  # the answer did not wait for Redis
        usage = msgspec.json.decode(frames[-2].removeprefix(b"data: "))["usage"]
        assert await tokens_used(gateway) == usage["total_tokens"]  # settled once Redis answered
    await admin.aclose()
