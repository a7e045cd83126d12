"""The gateway as an agent sees it: a real server, the simulated upstream, the official openai client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config
from tests.servers import gateway_server, simulator_server
from tiers.llm.simulator import SimulatorSettings

pytestmark = pytest.mark.e2e
USER = [{"role": "user", "content": "Which queue should this ticket go to?"}]


@pytest.fixture(scope="module")
def gateway(simulator: tuple[str, Any]) -> Iterator[str]:
    with gateway_server(make_config(simulator[0])) as url:
        yield url


@pytest.fixture()
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)


def test_a_plain_completion_is_answered_by_the_first_upstream_with_usage_and_decision_headers(
    client: openai.OpenAI,
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=USER)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Simulated answer:")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert raw.headers["x-tiergate-tier"] == "llm:small"
    assert len(raw.headers["x-tiergate-decision-id"]) == 32
    assert float(raw.headers["x-tiergate-confidence"]) == 1.0
    assert raw.headers["x-tiergate-cache"] == "bypass"


async def test_the_async_client_gets_the_same_answer_as_the_sync_one(
    client: openai.OpenAI, gateway: str
) -> None:
    async_client = openai.AsyncOpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)
    answer = await async_client.chat.completions.create(model="auto", messages=USER)
    sync_answer = client.chat.completions.create(model="auto", messages=USER)
    assert answer.choices[0].message.content == sync_answer.choices[0].message.content
    await async_client.close()


def test_a_stream_ends_with_usage_when_asked_and_its_text_equals_the_plain_answer(
    client: openai.OpenAI,
) -> None:
    plain = client.chat.completions.create(model="auto", messages=USER)
    chunks = list(
        client.chat.completions.create(
            model="auto", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


def test_a_stream_without_include_usage_carries_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=USER, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


async def test_async_streaming_relays_every_chunk(gateway: str) -> None:
    async_client = openai.AsyncOpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)
    stream = await async_client.chat.completions.create(model="auto", messages=USER, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 5
    await async_client.close()


def test_streams_are_relayed_chunk_by_chunk_as_they_arrive() -> None:
    with (
        simulator_server(SimulatorSettings(per_token_ms=25, reply_words=24)) as (sim_url, _),
        gateway_server(make_config(sim_url)) as url,
    ):
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        began = time.monotonic()
        arrivals = [
            time.monotonic() - began
            for _ in client.chat.completions.create(model="auto", messages=USER, stream=True)
        ]
    total = arrivals[-1]
    assert total > 0.5  # about 30 tokens at 25 ms each
    # buffered whole, every chunk would arrive at the end; relayed, the first comes early
    assert arrivals[1] < total * 0.3
    assert len({round(t, 2) for t in arrivals}) > 10


def test_models_lists_only_what_the_agent_may_call(gateway: str) -> None:
    other = openai.OpenAI(base_url=gateway, api_key=OTHER_KEY, max_retries=0)
    assert [m.id for m in other.models.list()] == ["auto"]
    agent = openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)
    assert sorted(m.id for m in agent.models.list()) == ["auto", "small", "triage"]


def test_a_rule_answers_without_calling_any_upstream(
    client: openai.OpenAI, simulator: tuple[str, Any]
) -> None:
    before = simulator[1].stats.requests
    raw = client.chat.completions.with_raw_response.create(
        model="triage", messages=[{"role": "user", "content": "Please reset my password"}]
    )
    assert raw.parse().choices[0].message.content == "account_access"
    assert raw.headers["x-tiergate-tier"] == "rules"
    assert simulator[1].stats.requests == before


def test_a_request_that_no_rule_matches_goes_to_the_llm(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="triage", messages=USER)
    assert raw.headers["x-tiergate-tier"] == "llm:small"


def test_an_upstream_can_be_called_by_name(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="small", messages=USER)
    assert raw.headers["x-tiergate-tier"] == "llm:small"


# -- errors, each the exception class the official SDK maps its status to -----------------------


def test_a_missing_or_wrong_key_is_401(gateway: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=gateway, api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="auto", messages=USER
        )
    assert info.value.status_code == 401
    response = httpx.post(f"{gateway}/chat/completions", json={"model": "auto", "messages": USER})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_model_the_agent_may_not_use_is_403(gateway: str) -> None:
    other = openai.OpenAI(base_url=gateway, api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as info:
        other.chat.completions.create(model="triage", messages=USER)
    assert info.value.body["param"] == "model"  # type: ignore[index]


def test_an_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=USER)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_an_unsupported_parameter_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=USER, extra_body={"frobnicate": True})
    assert info.value.body["param"] == "frobnicate"  # type: ignore[index]


def test_a_wrongly_typed_field_is_400_naming_its_path(gateway: str) -> None:
    response = httpx.post(
        f"{gateway}/chat/completions",
        headers={"authorization": f"Bearer {DEMO_KEY}"},
        json={"model": "auto", "messages": [{"role": "user", "content": 5}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content"


def test_malformed_json_is_400(gateway: str) -> None:
    response = httpx.post(
        f"{gateway}/chat/completions", headers={"authorization": f"Bearer {DEMO_KEY}"}, content=b'{"model": '
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_over_the_limit_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x" * 70_000}])
    assert info.value.status_code == 413


def _faulty_client(sim_url: str, fault: str, **extra: Any) -> Iterator[openai.OpenAI]:
    config = make_config(
        sim_url,
        upstream_extra={
            "small": {"model": f"sim-small+{fault}", **extra},
            "large": {"model": f"sim-large+{fault}", **extra},
        },
    )
    with gateway_server(config) as url:
        yield openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)


def test_an_upstream_error_on_every_tier_is_502(simulator: tuple[str, Any]) -> None:
    for client in _faulty_client(simulator[0], "fault=500", max_retries=1):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="auto", messages=USER)
        assert info.value.status_code == 502
        assert "llm:small" in info.value.message and "llm:large" in info.value.message


def test_an_upstream_timeout_is_504(simulator: tuple[str, Any]) -> None:
    for client in _faulty_client(simulator[0], "fault=hang", timeout_s=0.3, max_retries=0):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="auto", messages=USER)
        assert info.value.status_code == 504


def test_a_failing_small_model_falls_back_to_the_large_one(simulator: tuple[str, Any]) -> None:
    config = make_config(
        simulator[0], upstream_extra={"small": {"model": "sim-small+fault=503", "max_retries": 0}}
    )
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=USER)
        assert raw.headers["x-tiergate-tier"] == "llm:large"
        decision = httpx.get(
            f"{url.removesuffix('/v1')}/admin/decisions/{raw.headers['x-tiergate-decision-id']}",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
    assert [a["outcome"] for a in decision["attempts"]] == ["escalated", "answered"]
    assert "503" in decision["attempts"][0]["reason"]


def test_a_transient_upstream_error_is_retried_on_the_same_upstream(simulator: tuple[str, Any]) -> None:
    config = make_config(simulator[0], upstream_extra={"small": {"model": "sim-small+fail-first=1"}})
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=USER)
    assert raw.headers["x-tiergate-tier"] == "llm:small"


def test_when_the_upstream_sends_no_usage_the_gateway_counts_it(simulator: tuple[str, Any]) -> None:
    for client in _faulty_client(simulator[0], "fault=no-usage"):
        completion = client.chat.completions.create(model="auto", messages=USER)
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(
                model="auto", messages=USER, stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_a_stream_cut_by_the_upstream_ends_with_an_error_the_sdk_raises(simulator: tuple[str, Any]) -> None:
    for client in _faulty_client(simulator[0], "fault=cut"):
        received = []
        with pytest.raises(openai.APIError):
            for chunk in client.chat.completions.create(model="auto", messages=USER, stream=True):
                received.append(chunk)
        assert received  # what came before the cut was relayed


def test_health_and_readiness(gateway: str) -> None:
    root = gateway.removesuffix("/v1")
    assert httpx.get(f"{root}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{root}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_admin_endpoints_need_the_admin_key(gateway: str) -> None:
    root = gateway.removesuffix("/v1")
    assert httpx.get(f"{root}/admin/usage", params={"agent": "agent"}).status_code == 401
    agent_key = httpx.get(
        f"{root}/admin/usage", params={"agent": "agent"}, headers={"authorization": f"Bearer {DEMO_KEY}"}
    )
    assert agent_key.status_code == 401
    ok = httpx.get(
        f"{root}/admin/usage", params={"agent": "agent"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert ok.status_code == 200 and ok.json()["agent"] == "agent"


def test_an_unknown_path_is_404_in_openai_shape(gateway: str) -> None:
    response = httpx.get(f"{gateway}/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


STREAMED = {
    "chat/completions": {"model": "auto", "stream": True, "messages": USER},
    "responses": {"model": "auto", "stream": True, "input": USER[0]["content"]},
    "messages": {"model": "auto", "stream": True, "max_tokens": 1024, "messages": USER},
}


@pytest.mark.parametrize("path", list(STREAMED))
def test_a_client_that_disconnects_mid_stream_is_charged_what_was_generated(path: str) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 100_000}}]
    with (
        simulator_server(SimulatorSettings(per_token_ms=40, reply_words=60)) as (sim_url, _),
        gateway_server(make_config(sim_url, agents=agents)) as url,
    ):
        root = url.removesuffix("/v1")
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.stream(
            "POST",
            f"{url}/{path}",
            headers={"authorization": f"Bearer {DEMO_KEY}"},
            json=STREAMED[path],
        ) as response:
            decision_id = response.headers["x-tiergate-decision-id"]
            lines = response.iter_lines()
            received = [next(lines) for _ in range(8)]
        assert any(line.startswith("data: ") for line in received)
        deadline = time.monotonic() + 5
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = httpx.get(f"{root}/admin/decisions/{decision_id}", headers=admin)
            if found.status_code == 200:
                record = found.json()
                break
            time.sleep(0.05)
        usage = httpx.get(f"{root}/admin/usage", params={"agent": "agent"}, headers=admin).json()
    assert record["error"] == "client disconnected"
    generated = record["completion_tokens"]
    assert 0 < generated < 40  # cut well before the ~70-token answer was complete
    day = next(w for w in usage["windows"] if w["window"] == "day")
    # charged exactly what was generated, not the 1024-token reservation, nor nothing
    assert day["used_tokens"] == record["prompt_tokens"] + generated


def test_an_open_circuit_skips_its_upstream_and_all_open_is_503_with_retry_after(
    simulator: tuple[str, Any],
) -> None:
    circuit = {"failures": 2, "cooldown_s": 30}
    config = make_config(
        simulator[0],
        upstream_extra={
            "small": {"model": "sim-small+fault=500+c1", "max_retries": 0, "circuit": circuit},
            "large": {"model": "sim-large+fault=500+c1", "max_retries": 0, "circuit": circuit},
        },
    )
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="auto", messages=USER)
        sent = simulator[1].stats.by_model["sim-small+fault=500+c1"]
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="auto", messages=USER)
        assert info.value.status_code == 503
        assert 25 <= int(info.value.response.headers["retry-after"]) <= 30
        assert "circuit open" in info.value.message
        assert simulator[1].stats.by_model["sim-small+fault=500+c1"] == sent  # not hammered
        root = url.removesuffix("/v1")
        ready = httpx.get(f"{root}/readyz")
        assert ready.status_code == 503 and ready.json()["circuits"] == {"small": "open", "large": "open"}
        assert 'tiergate_circuit_open{upstream="small"} 1.0' in httpx.get(f"{root}/metrics").text


def test_a_tool_the_agent_may_not_use_is_refused(simulator: tuple[str, Any]) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "tools": ["lookup_order"]}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        tool = {"type": "function", "function": {"name": "refund_order", "parameters": {"type": "object"}}}
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="auto", messages=USER, tools=[tool])  # type: ignore[list-item]
        assert info.value.body["param"] == "tools[0].function.name"  # type: ignore[index]
        allowed = {**tool, "function": {**tool["function"], "name": "lookup_order"}}  # type: ignore[dict-item]
        client.chat.completions.create(model="auto", messages=USER, tools=[allowed])  # type: ignore[list-item]


def test_an_agent_repeating_itself_or_running_past_its_steps_is_stopped_as_a_loop(
    simulator: tuple[str, Any],
) -> None:
    agents = [
        {"id": "agent", "api_key": DEMO_KEY, "loops": {"max_repeats": 3, "window_s": 60, "max_steps": 2}}
    ]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="auto", messages=USER)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="auto", messages=USER)
        assert info.value.body["code"] == "loop_detected_repeat"  # type: ignore[index]
        assert "loop" in info.value.message
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "something new"}])
        conversation = {"x-tiergate-conversation-id": "conv-1"}
        for step in range(2):
            client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": f"step {step}"}],
                extra_headers=conversation,
            )
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "step 3"}], extra_headers=conversation
            )
        assert info.value.body["code"] == "loop_detected_steps"  # type: ignore[index]
        metrics = httpx.get(f"{url.removesuffix('/v1')}/metrics").text
    assert 'tiergate_loops_stopped_total{agent="agent",kind="repeat"} 1.0' in metrics


def test_a_busy_upstream_sends_the_excess_to_the_next_tier_and_streams_free_their_place() -> None:
    with simulator_server(SimulatorSettings(latency_ms=400)) as (sim_url, _):
        limits = {"max_concurrency": 1, "queue_timeout_s": 0.05}
        config = make_config(sim_url, upstream_extra={"small": limits, "large": limits})
        with gateway_server(config) as url:

            async def three() -> list[str]:
                client = openai.AsyncOpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
                calls = [
                    client.chat.completions.with_raw_response.create(model="auto", messages=USER)
                    for _ in range(3)
                ]
                done = await asyncio.gather(*calls, return_exceptions=True)
                await client.close()
                return [
                    d.headers["x-tiergate-tier"] if not isinstance(d, Exception) else type(d).__name__
                    for d in done
                ]

            tiers = asyncio.run(three())
            assert sorted(tiers) == ["InternalServerError", "llm:large", "llm:small"]
            client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
            for _ in range(3):  # each finished stream gives its place back
                list(client.chat.completions.create(model="small", messages=USER, stream=True))


def test_an_agent_over_its_concurrency_limit_gets_503_with_retry_after() -> None:
    with simulator_server(SimulatorSettings(latency_ms=400)) as (sim_url, _):
        agents = [{"id": "agent", "api_key": DEMO_KEY, "max_concurrency": 2, "queue_timeout_s": 0.05}]
        with gateway_server(make_config(sim_url, agents=agents)) as url:

            async def four() -> list[int]:
                async with httpx.AsyncClient(timeout=10) as client:
                    calls = [
                        client.post(
                            f"{url}/chat/completions",
                            headers={"authorization": f"Bearer {DEMO_KEY}"},
                            json={"model": "auto", "messages": USER},
                        )
                        for _ in range(4)
                    ]
                    responses = await asyncio.gather(*calls)
                assert all(r.headers.get("retry-after") == "1" for r in responses if r.status_code == 503)
                return sorted(r.status_code for r in responses)

            assert asyncio.run(four()) == [200, 200, 503, 503]
