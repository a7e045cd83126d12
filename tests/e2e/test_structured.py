"""Structured outputs through the gateway: validation, repair, escalation, streams, tool arguments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "shipping"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["category", "urgent"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "triage", "schema": SCHEMA}}
ASK = [{"role": "user", "content": "My parcel is late, classify it"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
                "additionalProperties": False,
            },
        },
    }
]


@contextmanager
def gateway(sim_url: str, small: str = "", large: str = "", repair: bool = True) -> Iterator[openai.OpenAI]:
    config = make_config(
        sim_url,
        upstream_extra={
            "small": {"model": f"sim-small{small}", "max_retries": 0},
            "large": {"model": f"sim-large{large}", "max_retries": 0},
        },
        routes=[{"name": "auto", "llm": ["small", "large"], "repair": repair}],
        agents=[{"id": "agent", "api_key": DEMO_KEY}],
    )
    with gateway_server(config) as url:
        yield openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)


def record_of(client: openai.OpenAI, raw: Any) -> dict[str, Any]:
    root = str(client.base_url).rstrip("/").removesuffix("/v1")
    return dict(
        httpx.get(
            f"{root}/admin/decisions/{raw.headers['x-tiergate-decision-id']}",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
    )


def test_a_valid_structured_answer_passes(simulator: tuple[str, Any]) -> None:
    with gateway(simulator[0]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, response_format=FORMAT
        )
        assert json.loads(raw.parse().choices[0].message.content) == {"category": "billing", "urgent": False}
        assert record_of(client, raw)["validation"] == "passed"


def test_a_failed_answer_is_repaired_once_by_the_same_upstream(simulator: tuple[str, Any]) -> None:
    with gateway(simulator[0], small="+wrong-first=1+r1") as client:
        before = simulator[1].stats.by_model["sim-small+wrong-first=1+r1"]
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, response_format=FORMAT
        )
        assert raw.headers["x-tiergate-tier"] == "llm:small"
        assert json.loads(raw.parse().choices[0].message.content)["category"] == "billing"
        assert simulator[1].stats.by_model["sim-small+wrong-first=1+r1"] == before + 2
        record = record_of(client, raw)
    # both calls were paid for
    assert record["completion_tokens"] > 0 and record["prompt_tokens"] > 2 * len(ASK[0]["content"]) // 8


def test_without_repair_a_failed_answer_escalates_to_the_next_tier(simulator: tuple[str, Any]) -> None:
    with gateway(simulator[0], small="+fault=wrong-schema", repair=False) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, response_format=FORMAT
        )
        assert raw.headers["x-tiergate-tier"] == "llm:large"
        attempts = record_of(client, raw)["attempts"]
    assert attempts[0]["outcome"] == "escalated" and "failed validation" in attempts[0]["reason"]


def test_when_every_tier_fails_validation_the_answer_is_502_listing_the_errors(
    simulator: tuple[str, Any],
) -> None:
    with (
        gateway(simulator[0], small="+fault=invalid-json", large="+fault=wrong-schema") as client,
        pytest.raises(openai.InternalServerError) as info,
    ):
        client.chat.completions.create(model="auto", messages=ASK, response_format=FORMAT)
    assert info.value.status_code == 502
    assert "not JSON" in info.value.message and "llm:large" in info.value.message


def test_a_streamed_structured_answer_that_fails_ends_with_an_error_event(simulator: tuple[str, Any]) -> None:
    with gateway(simulator[0], small="+fault=wrong-schema") as client:
        with pytest.raises(openai.APIError) as info:
            list(
                client.chat.completions.create(
                    model="auto", messages=ASK, response_format=FORMAT, stream=True
                )
            )
        assert "failed validation" in str(info.value)
        good = list(
            client.chat.completions.create(model="large", messages=ASK, response_format=FORMAT, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in good if c.choices)
        assert json.loads(text)["urgent"] is False


def test_tool_arguments_are_validated_against_the_tools_parameters(simulator: tuple[str, Any]) -> None:
    with gateway(simulator[0], small="+fault=wrong-schema", repair=False) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, tools=TOOLS, tool_choice="required"
        )
        assert raw.headers["x-tiergate-tier"] == "llm:large"
        call = raw.parse().choices[0].message.tool_calls[0]
        assert json.loads(call.function.arguments) == {"order_id": "example"}


def test_a_request_with_an_invalid_schema_is_400_naming_it(simulator: tuple[str, Any]) -> None:
    with gateway(simulator[0]) as client:
        bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="auto", messages=ASK, response_format=bad)
        assert info.value.body["param"] == "response_format.json_schema.schema"  # type: ignore[index]
        bad_tool = [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="auto", messages=ASK, tools=bad_tool)  # type: ignore[arg-type]
        assert info.value.body["param"] == "tools[0].function.parameters"  # type: ignore[index]
