"""Anthropic's Messages API as agents built on Anthropic's SDK speak it: the official `anthropic`
client (plain, streamed, tool use) against a real gateway, with every tier answering."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
ASK = [{"role": "user", "content": "Which queue should this go to?"}]
LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order",
    "input_schema": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


@pytest.fixture()
def gateway(tiered_gateway: str) -> str:
    return tiered_gateway


def client_of(gateway: str, key: str = DEMO_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key=key, max_retries=0)


@pytest.fixture()
def client(gateway: str) -> anthropic.Anthropic:
    return client_of(gateway)


def used_tokens(gateway: str) -> int:
    usage = httpx.get(
        f"{gateway.removesuffix('/v1')}/admin/usage",
        params={"agent": "agent"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    return int(usage["windows"][0]["used_tokens"])


def test_rules_and_the_classifier_answer_as_messages_without_the_upstream(
    client: anthropic.Anthropic, simulator: tuple[str, Any]
) -> None:
    before = simulator[1].stats.requests
    raw = client.messages.with_raw_response.create(
        model="support", max_tokens=64, messages=[{"role": "user", "content": "please reset my password"}]
    )
    message = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "rules"
    assert message.content[0].type == "text" and message.content[0].text == "account_access"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 0
    assert message.id == f"msg_{raw.headers['x-tiergate-decision-id']}"
    classified = client.messages.create(
        model="support", max_tokens=64, messages=[{"role": "user", "content": "my card has not arrived yet"}]
    )
    assert classified.content[0].text == "card_arrival"  # type: ignore[union-attr]
    assert simulator[1].stats.requests == before


def test_an_llm_answer_matches_the_chat_path_and_is_charged_exactly(
    client: anthropic.Anthropic, gateway: str
) -> None:
    before = used_tokens(gateway)
    message = client.messages.create(model="auto", max_tokens=200, system="Answer briefly.", messages=ASK)  # type: ignore[arg-type]
    chat = openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0).chat.completions.create(
        model="auto",
        max_tokens=200,
        messages=[{"role": "system", "content": "Answer briefly."}, *ASK],  # type: ignore[list-item]
    )
    assert chat.usage is not None
    assert message.content[0].text == chat.choices[0].message.content  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    assert used_tokens(gateway) - before == message.usage.input_tokens + message.usage.output_tokens + (
        chat.usage.total_tokens
    )


def test_max_tokens_stops_the_answer_with_stop_reason_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="auto", max_tokens=5, messages=ASK)  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens <= 5


def test_a_stream_has_anthropics_events_and_the_whole_answers_text_and_usage(
    client: anthropic.Anthropic, gateway: str
) -> None:
    whole = client.messages.create(model="auto", max_tokens=200, messages=ASK)  # type: ignore[arg-type]
    before = used_tokens(gateway)
    with client.messages.stream(model="auto", max_tokens=200, messages=ASK) as stream:  # type: ignore[arg-type]
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )
    assert used_tokens(gateway) - before == final.usage.input_tokens + final.usage.output_tokens


def test_tool_use_and_a_tool_result_make_a_two_turn_exchange(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model="auto", max_tokens=200, tools=[LOOKUP], messages=ASK)  # type: ignore[list-item,arg-type]
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "lookup_order" and use.input == {"order_id": "example"}
    second = client.messages.create(
        model="auto",
        max_tokens=200,
        tools=[LOOKUP],  # type: ignore[list-item]
        messages=[
            *ASK,  # type: ignore[list-item]
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "shipped"},
                    {"type": "text", "text": "Thanks, summarise please."},
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text.startswith("Simulated answer:")  # type: ignore[union-attr]


def test_a_streamed_tool_use_arrives_as_input_json_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="auto", max_tokens=200, tools=[LOOKUP], messages=ASK) as stream:  # type: ignore[list-item,arg-type]
        deltas = [e for e in stream if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        final = stream.get_final_message()
    [use] = [block for block in final.content if block.type == "tool_use"]
    assert len(deltas) >= 2 and use.input == {"order_id": "example"}
    assert final.stop_reason == "tool_use"


def test_the_key_may_come_in_authorization_too(gateway: str) -> None:
    response = httpx.post(
        f"{gateway}/messages",
        headers={"authorization": f"Bearer {DEMO_KEY}"},
        json={
            "model": "support",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "reset my password"}],
        },
    )
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "account_access"


@pytest.mark.parametrize(
    ("request_body", "wanted"),
    [
        ({"model": "auto", "messages": ASK}, "max_tokens"),
        ({"model": "auto", "max_tokens": 10, "messages": ASK, "top_k": 5}, "top_k"),
        ({"model": "auto", "max_tokens": 10, "messages": ASK, "temperature": 1.5}, "temperature"),
        (
            {
                "model": "auto",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            "video",
        ),
        (
            {
                "model": "auto",
                "max_tokens": 10,
                "messages": ASK,
                "tools": [{"name": "web", "type": "web_search_20250305"}],
            },
            "tools.0",
        ),
        ({"model": "nope", "max_tokens": 10, "messages": ASK}, "nope"),
    ],
)
def test_bad_requests_get_anthropics_error_shape_and_exception(
    client: anthropic.Anthropic, request_body: dict[str, Any], wanted: str
) -> None:
    with pytest.raises(
        (anthropic.BadRequestError, anthropic.NotFoundError, anthropic.PermissionDeniedError)
    ) as info:
        client.post("/v1/messages", body=request_body, cast_to=httpx.Response)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] in ("invalid_request_error", "not_found_error", "permission_error")
    assert wanted in body["error"]["message"]


def test_a_wrong_key_and_an_exhausted_budget_map_to_the_sdks_exceptions(
    gateway: str, simulator: tuple[str, Any]
) -> None:
    with pytest.raises(anthropic.AuthenticationError) as denied:
        client_of(gateway, "wrong").messages.create(model="auto", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 60}}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = client_of(url)
        with pytest.raises(anthropic.RateLimitError) as info:
            for _ in range(10):
                client.messages.create(model="auto", max_tokens=20, messages=ASK)  # type: ignore[arg-type]
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(info.value.response.headers["retry-after"]) >= 1


async def test_the_async_client_streams_too(gateway: str) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.removesuffix("/v1"), api_key=DEMO_KEY, max_retries=0)
    async with client.messages.stream(model="auto", max_tokens=50, messages=ASK) as stream:  # type: ignore[arg-type]
        text = "".join([piece async for piece in stream.text_stream])
    assert text.startswith("Simulated answer:")
    await client.close()


def test_anthropics_sdk_lists_the_agents_models_in_its_own_shape(
    client: anthropic.Anthropic, gateway: str
) -> None:
    listed = [model.id for model in client.models.list()]
    assert "support" in listed and "auto" in listed
    assert client.models.retrieve("auto").display_name == "auto"
    openai_listed = [
        m.id for m in openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0).models.list()
    ]
    assert openai_listed == listed
