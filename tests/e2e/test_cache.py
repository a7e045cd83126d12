"""The response cache through the gateway: hits, stream replay, controls, isolation, single flight."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.cluster import flush
from tests.conftest import DEMO_KEY, OTHER_KEY, make_config
from tests.integration.test_shared_budget import gateway_process
from tests.servers import gateway_server, simulator_server
from tiers.llm.simulator import SimulatorSettings

pytestmark = pytest.mark.e2e
ASK = [{"role": "user", "content": "Classify: my parcel never came"}]
AGENTS = [{"id": "agent", "api_key": DEMO_KEY}, {"id": "other", "api_key": OTHER_KEY}]


def create(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=ASK, temperature=0, **extra
    )


def test_a_repeated_deterministic_request_is_a_hit_that_costs_nothing(simulator: tuple[str, Any]) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 100_000}}, AGENTS[1]]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        before = simulator[1].stats.requests
        first, second = create(client), create(client)
        assert (first.headers["x-tiergate-cache"], second.headers["x-tiergate-cache"]) == ("miss", "hit")
        assert simulator[1].stats.requests == before + 1
        assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
        assert (
            second.headers["x-tiergate-budget-remaining-tokens"]
            == first.headers["x-tiergate-budget-remaining-tokens"]
        )
        plain = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
        assert plain.headers["x-tiergate-cache"] == "bypass"  # not deterministic: not cached


def test_a_cached_answer_is_replayed_as_a_stream_and_a_stream_is_cached(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0], agents=AGENTS)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        plain = create(client).parse().choices[0].message.content
        replay = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, temperature=0, stream=True, stream_options={"include_usage": True}
        )
        assert replay.headers["x-tiergate-cache"] == "hit"
        chunks = list(replay.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
        assert chunks[-1].usage is not None
        other = [{"role": "user", "content": "a different question, streamed first"}]
        streamed = list(
            client.chat.completions.create(model="auto", messages=other, temperature=0, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        again = client.chat.completions.with_raw_response.create(model="auto", messages=other, temperature=0)
        assert again.headers["x-tiergate-cache"] == "hit"
        assert again.parse().choices[0].message.content == text


def test_cache_control_headers_skip_the_read_or_the_whole_cache(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0], agents=AGENTS)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        assert (
            create(client, extra_headers={"cache-control": "no-store"}).headers["x-tiergate-cache"]
            == "bypass"
        )
        assert create(client).headers["x-tiergate-cache"] == "miss"  # no-store wrote nothing
        refreshed = create(client, extra_headers={"cache-control": "no-cache"})
        assert refreshed.headers["x-tiergate-cache"] == "miss"  # skipped the read
        assert create(client).headers["x-tiergate-cache"] == "hit"
        with pytest.raises(openai.BadRequestError):
            create(client, extra_headers={"x-tiergate-cache-ttl": "later"})


def test_one_agent_never_receives_another_agents_entry(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0], agents=AGENTS)) as url:
        mine = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        theirs = openai.OpenAI(base_url=url, api_key=OTHER_KEY, max_retries=0)
        assert create(mine).headers["x-tiergate-cache"] == "miss"
        assert create(theirs).headers["x-tiergate-cache"] == "miss"


async def _ten_at_once(urls: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{urls[i % len(urls)]}/chat/completions",
                    headers={"authorization": f"Bearer {DEMO_KEY}"},
                    json={"model": "auto", "messages": ASK, "temperature": 0},
                )
                for i in range(10)
            )
        )


def test_ten_concurrent_identical_misses_cost_one_upstream_call() -> None:
    with (
        simulator_server(SimulatorSettings(latency_ms=300)) as (sim_url, simulated),
        gateway_server(make_config(sim_url, agents=AGENTS)) as url,
    ):
        responses = asyncio.run(_ten_at_once([url]))
        assert simulated.stats.requests == 1
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1


@pytest.mark.redis
@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_ten_concurrent_identical_misses_across_two_gateways_on_redis_cost_one_call(
    request: pytest.FixtureRequest, tmp_path: Path, cluster: bool
) -> None:
    if cluster:
        redis_url = request.getfixturevalue("cluster_url")
        flush(redis_url)
    else:
        proc = request.getfixturevalue("redis_proc")
        redis_url = f"redis://{proc.host}:{proc.port}/4"
    with simulator_server(SimulatorSettings(latency_ms=400)) as (sim_url, simulated):
        config = make_config(sim_url, agents=AGENTS).model_dump(mode="json")
        config["agents"] = AGENTS
        config["server"]["admin_key"] = "sk-test-admin"
        config["state"] = {"backend": "redis", "url": redis_url}
        config["cache"] = {"backend": "redis"}
        with gateway_process(config, tmp_path) as first, gateway_process(config, tmp_path) as second:
            httpx.post(f"{first}/v1/chat/completions", json={})  # warm both processes' connections
            httpx.post(f"{second}/v1/chat/completions", json={})
            responses = asyncio.run(_ten_at_once([f"{first}/v1", f"{second}/v1"]))
        assert simulated.stats.requests == 1
    assert all(r.status_code == 200 for r in responses)
    assert sorted(r.headers["x-tiergate-cache"] for r in responses).count("miss") == 1
