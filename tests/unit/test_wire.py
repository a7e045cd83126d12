"""The edge decoder: valid OpenAI requests pass; every invalid one is a 400 naming its field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.http.wire import InputLimits, decode_chat_request

LIMITS = InputLimits(max_body_bytes=10_000, max_messages=5, max_total_chars=1_000)


def decode(body: object) -> object:
    return decode_chat_request(json.dumps(body).encode(), LIMITS)


def bad(body: object) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode(body)
    return info.value


def test_a_full_openai_request_decodes() -> None:
    request = decode(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "temperature": 0,
            "max_completion_tokens": 10,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert request.last_user_text() == "hi"  # type: ignore[attr-defined]
    assert request.completion_cap() == 10  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "colour": 1}]}, "messages[0].colour"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "best_of": 2}, "best_of"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "stream_options": {"include_usage": True},
            },
            "stream_options",
        ),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}] * 6}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x" * 1001}]}, "messages"),
    ],
)
def test_invalid_requests_name_the_field(body: object, param: str) -> None:
    error = bad(body)
    assert error.param == param
    assert error.status == 400


def test_a_body_over_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_chat_request(b" " * 10_001, LIMITS)


def test_invalid_utf8_is_a_400() -> None:
    with pytest.raises(BadRequest):
        decode_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "\xff"}]}', LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_gateway_error_or_a_request_never_a_crash(body: bytes) -> None:
    try:
        decode_chat_request(body, LIMITS)
    except GatewayError as exc:
        assert exc.status in (400, 413)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["model", "messages", "stream", "temperature", "tools", "n"]), json_values
    )
)
def test_arbitrary_json_objects_never_crash_the_decoder(body: dict[str, object]) -> None:
    try:
        decode_chat_request(json.dumps(body).encode(), LIMITS)
    except GatewayError as exc:
        assert exc.status in (400, 413)
