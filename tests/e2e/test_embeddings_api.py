"""`POST /v1/embeddings` with the official `openai` client: passed to the route's embedding
upstreams (the next one when one fails), charged to the agent's budget, cached, recorded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def gateway(simulator: tuple[str, Any]) -> Iterator[str]:
    sim = simulator[0]
    upstreams = [
        {
            "name": "broken",
            "base_url": sim,
            "model": "sim-embed+fault=500",
            "max_retries": 0,
            "circuit": {"cooldown_s": 300},  # once open, it stays open for the module
        },
        {"name": "embed", "base_url": sim, "model": "sim-embed", "price": {"input_per_mtok": 20.0}},
        {"name": "small", "base_url": sim, "model": "sim-small"},
        {"name": "flaky", "base_url": sim, "model": "sim-embed+fail-first=1", "retry_base_s": 0.01},
    ]
    routes = [
        {"name": "vectors", "embeddings": ["broken", "embed"]},
        {"name": "plain", "embeddings": ["embed"], "cache": {"enabled": False}},
        {"name": "retried", "embeddings": ["flaky"]},
        {"name": "auto", "llm": ["small"]},
    ]
    agents = [
        {"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 200}},
        {"id": "other", "api_key": OTHER_KEY, "routes": ["auto"]},
    ]
    with gateway_server(make_config(sim, upstreams=upstreams, routes=routes, agents=agents)) as url:
        yield url


@pytest.fixture()
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)


def used_tokens(gateway: str) -> int:
    usage = httpx.get(f"{gateway.removesuffix('/v1')}/admin/usage", params={"agent": "agent"}, headers=ADMIN)
    return int(usage.json()["windows"][0]["used_tokens"])


def record(gateway: str, raw: Any) -> dict[str, Any]:
    decision = raw.headers["x-tiergate-decision-id"]
    return dict(httpx.get(f"{gateway.removesuffix('/v1')}/admin/decisions/{decision}", headers=ADMIN).json())


def test_vectors_come_from_the_next_upstream_when_one_fails_and_the_input_tokens_are_charged(
    client: openai.OpenAI, gateway: str, simulator: tuple[str, Any]
) -> None:
    before, embedded = used_tokens(gateway), simulator[1].stats.embedded_tokens
    raw = client.embeddings.with_raw_response.create(
        model="vectors", input=["the first text", "another one"], encoding_format="float"
    )
    answer = raw.parse()
    assert [item.index for item in answer.data] == [0, 1]
    assert len(answer.data[0].embedding) == 16 and answer.data[0].embedding != answer.data[1].embedding
    charged = simulator[1].stats.embedded_tokens - embedded
    assert answer.usage.prompt_tokens == charged > 0
    assert used_tokens(gateway) - before == charged
    assert raw.headers["x-tiergate-tier"] == "embeddings" and raw.headers["x-tiergate-cache"] == "miss"
    found = record(gateway, raw)
    assert found["upstream"] == "embed" and found["prompt_tokens"] == charged
    assert found["cost_usd"] == pytest.approx(charged * 20.0 / 1e6)


def test_a_repeated_request_is_a_cache_hit_that_costs_nothing_unless_the_client_says_no_cache(
    client: openai.OpenAI, gateway: str, simulator: tuple[str, Any]
) -> None:
    first = client.embeddings.create(model="vectors", input="cache me", encoding_format="float")
    before, calls = used_tokens(gateway), simulator[1].stats.requests
    raw = client.embeddings.with_raw_response.create(
        model="vectors", input="cache me", encoding_format="float"
    )
    assert raw.headers["x-tiergate-cache"] == "hit"
    assert raw.parse().data[0].embedding == first.data[0].embedding
    assert (used_tokens(gateway), simulator[1].stats.requests) == (before, calls)
    fresh = client.embeddings.with_raw_response.create(
        model="vectors",
        input="cache me",
        encoding_format="float",
        extra_headers={"cache-control": "no-cache"},
    )
    assert fresh.headers["x-tiergate-cache"] == "miss" and used_tokens(gateway) > before
    uncached = client.embeddings.with_raw_response.create(model="plain", input="cache me")
    assert uncached.headers["x-tiergate-cache"] == "bypass"


def test_base64_vectors_decode_to_the_float_ones_and_token_ids_are_counted_by_length(
    client: openai.OpenAI, gateway: str
) -> None:
    floats = client.embeddings.create(model="vectors", input="same text", encoding_format="float")
    decoded = client.embeddings.create(model="vectors", input="same text")  # the SDK asks for base64
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    before = used_tokens(gateway)
    ids = client.embeddings.create(model="vectors", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert ids.usage.prompt_tokens == 5 and used_tokens(gateway) - before == 5


def test_an_exhausted_budget_refuses_before_the_upstream_is_called(
    client: openai.OpenAI, gateway: str, simulator: tuple[str, Any]
) -> None:
    long_text = " ".join(f"word{i}" for i in range(400))
    calls = simulator[1].stats.requests
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model="vectors", input=long_text)
    assert info.value.body["code"] == "budget_exhausted"  # type: ignore[index]
    assert simulator[1].stats.requests == calls


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "vectors", "input": []}, 400, "input"),
        ({"model": "vectors", "input": ["text", 3]}, 400, "input"),
        ({"model": "vectors", "input": ""}, 400, "input"),
        ({"model": "vectors", "input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"model": "vectors", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
        ({"model": "vectors", "input": "x", "truncate": True}, 400, "truncate"),
        ({"model": "auto", "input": "x"}, 404, "model"),
    ],
)
def test_bad_requests_are_refused_in_openais_shape_and_charge_nothing(
    gateway: str, body: dict[str, Any], status: int, param: str
) -> None:
    before = used_tokens(gateway)
    response = httpx.post(f"{gateway}/embeddings", headers={"authorization": f"Bearer {DEMO_KEY}"}, json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert used_tokens(gateway) == before


def test_an_upstream_is_retried_and_a_failing_one_opens_its_circuit_as_for_completions(
    client: openai.OpenAI, gateway: str, simulator: tuple[str, Any]
) -> None:
    calls = simulator[1].stats.by_path["/v1/embeddings"]
    raw = client.embeddings.with_raw_response.create(
        model="retried", input="retry me", encoding_format="float"
    )
    assert record(gateway, raw)["upstream"] == "flaky"
    assert simulator[1].stats.by_path["/v1/embeddings"] == calls + 2  # a 503, then the answer
    for i in range(6):  # the broken upstream fails each time until its circuit opens
        client.embeddings.create(model="vectors", input=f"text {i}", encoding_format="float")
    circuits = httpx.get(f"{gateway.removesuffix('/v1')}/admin/circuits", headers=ADMIN).json()
    assert circuits["broken"]["state"] == "open"
    calls = simulator[1].stats.by_path["/v1/embeddings"]
    client.embeddings.create(model="vectors", input="after the circuit opened", encoding_format="float")
    assert simulator[1].stats.by_path["/v1/embeddings"] == calls + 1  # the broken one is skipped


def test_the_routes_of_each_kind_say_what_they_serve(client: openai.OpenAI, gateway: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="vectors", messages=[{"role": "user", "content": "hi"}])
    assert "embeddings only" in info.value.message
    other = openai.OpenAI(base_url=gateway, api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        other.embeddings.create(model="vectors", input="hi")
    assert "vectors" in [model.id for model in client.models.list()]
