"""Upstreams that speak another API (`api: responses`, `api: anthropic`) answer exactly as a chat
upstream does: the same text, usage, tool calls, streams and validated structured output, whichever
API the agent speaks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import DEMO_KEY, make_config
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
APIS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}
ASK = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Which queue?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        },
    }
]


@pytest.fixture(scope="module")
def gateway(simulator: tuple[str, Any]) -> Iterator[str]:
    sim = simulator[0]
    upstreams = [
        {"name": api, "base_url": sim, "model": "sim-small", "api": api, "api_key": f"sk-upstream-{api}-key"}
        for api in APIS
    ]
    routes = [{"name": "auto", "llm": ["chat"]}]
    agents = [{"id": "agent", "api_key": DEMO_KEY}]
    with gateway_server(make_config(sim, upstreams=upstreams, routes=routes, agents=agents)) as url:
        yield url


@pytest.fixture()
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)


def test_each_api_gets_its_own_endpoint_and_answers_as_the_chat_upstream_does(
    client: openai.OpenAI, simulator: tuple[str, Any]
) -> None:
    answers = {}
    for api, path in APIS.items():
        before = simulator[1].stats.by_path[path]
        answers[api] = client.chat.completions.create(model=api, messages=ASK, max_tokens=50)  # type: ignore[arg-type]
        assert simulator[1].stats.by_path[path] == before + 1
    reference = answers["chat"]
    for api in ("responses", "anthropic"):
        answer = answers[api]
        assert answer.choices[0].message.content == reference.choices[0].message.content
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None and reference.usage is not None
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
            reference.usage.prompt_tokens,
            reference.usage.completion_tokens,
        )


@pytest.mark.parametrize("api", ["responses", "anthropic"])
def test_streams_and_tool_calls_come_back_as_chat_chunks(client: openai.OpenAI, api: str) -> None:
    whole = client.chat.completions.create(model=api, messages=ASK)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model=api,
            messages=ASK,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == whole.choices[0].message.content
    )
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    called = client.chat.completions.create(model=api, messages=ASK, tools=TOOLS)  # type: ignore[arg-type]
    [call] = called.choices[0].message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("lookup", '{"id":"example"}')
    assert called.choices[0].finish_reason == "tool_calls"
    streamed = list(client.chat.completions.create(model=api, messages=ASK, tools=TOOLS, stream=True))  # type: ignore[arg-type]
    pieces = [
        c.choices[0].delta.tool_calls[0] for c in streamed if c.choices and c.choices[0].delta.tool_calls
    ]
    assert (pieces[0].id or "").startswith("call_") and pieces[0].function.name == "lookup"
    assert "".join(p.function.arguments or "" for p in pieces) == call.function.arguments
    # the tool's result goes back in the upstream's own terms, and the answer is words
    followed = client.chat.completions.create(
        model=api,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *ASK,  # type: ignore[list-item]
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "queue 7"},
        ],
    )
    assert followed.choices[0].message.content.startswith("Simulated answer:")  # type: ignore[union-attr]


def test_structured_output_through_a_responses_upstream_is_validated(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"queue": {"type": "string"}}, "required": ["queue"]}
    raw = client.chat.completions.with_raw_response.create(
        model="responses",
        messages=ASK,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
    )
    assert raw.parse().choices[0].message.content == '{"queue":"example"}'


def test_an_anthropic_agent_reaches_an_anthropic_upstream(gateway: str) -> None:
    claude = anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key=DEMO_KEY, max_retries=0)
    message = claude.messages.create(
        model="anthropic", max_tokens=100, messages=[{"role": "user", "content": "Which queue?"}]
    )
    assert message.content[0].text.startswith("Simulated answer:")  # type: ignore[union-attr]
    assert message.usage.output_tokens > 0


def test_an_upstream_failure_mid_translation_is_a_clean_error(simulator: tuple[str, Any]) -> None:
    sim = simulator[0]
    upstreams = [
        {
            "name": "broken",
            "base_url": sim,
            "model": "sim-small+fault=500",
            "api": "anthropic",
            "max_retries": 0,
        }
    ]
    routes = [{"name": "auto", "llm": ["broken"]}]
    agents = [{"id": "agent", "api_key": DEMO_KEY}]
    with gateway_server(make_config(sim, upstreams=upstreams, routes=routes, agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="auto", messages=ASK)  # type: ignore[arg-type]
    assert info.value.status_code == 502
