"""The translations between the internal chat request and answer and the other APIs' shapes, case
by case (the official clients exercise them end to end in tests/e2e)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dialects import chat_view
from gateway.dialects.messages import EventWriter as MessageEvents
from gateway.dialects.messages_request import chat_request as messages_chat_request
from gateway.dialects.messages_request import decode_messages_request
from gateway.dialects.responses import EventWriter as ResponseEvents
from gateway.dialects.responses import ResponseObject, ResponseWriter
from gateway.dialects.responses_request import chat_request, decode_responses_request, input_messages
from gateway.errors import BadRequest
from gateway.http.wire import InputLimits
from tiers.llm.sse import DONE, error_frame, frame
from tiers.llm.upstream_anthropic import AnthropicApi
from tiers.llm.upstream_responses import ResponsesApi
from tiers.types import Usage

LIMITS = InputLimits(1_000_000, 100, 100_000)


def responses(body: dict[str, Any]) -> Any:
    request = decode_responses_request(json.dumps(body).encode(), LIMITS)
    return chat_request(request, input_messages(request.input), LIMITS)


def test_function_calls_join_the_assistant_turn_and_their_outputs_become_tool_messages() -> None:
    chat = responses(
        {
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "where are 1 and 2?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "find", "arguments": '{"id": 1}'},
                {"type": "function_call", "call_id": "c2", "name": "find", "arguments": '{"id": 2}'},
                {"type": "function_call_output", "call_id": "c1", "output": "here"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "there"}],
                },
            ],
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
            "max_output_tokens": 50,
        }
    )
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert [c.id for c in chat.messages[2].tool_calls] == ["c1", "c2"]
    assert chat.messages[4].content == "there" and chat.messages[1].content == "where are 1 and 2?"
    assert chat.response_format.json_schema.name == "a" and chat.max_tokens == 50


def test_an_image_part_keeps_the_message_in_parts() -> None:
    chat = responses(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                    ],
                }
            ],
        }
    )
    parts = chat.messages[0].content
    assert [p.type for p in parts] == ["text", "image_url"]
    assert parts[1].image_url == {"url": "data:image/png;base64,AAAA", "detail": "low"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ],
)
def test_what_cannot_be_translated_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        responses({"model": "m", **body})
    assert info.value.param == param


def messages(body: dict[str, Any]) -> Any:
    return messages_chat_request(decode_messages_request(json.dumps(body).encode(), LIMITS), LIMITS)


def test_tool_results_come_before_the_users_words_and_an_error_says_so() -> None:
    chat = messages(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "rules"}],
            "messages": [
                {"role": "user", "content": "find 1"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "looking"},
                        {"type": "tool_use", "id": "t1", "name": "find", "input": {"id": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and?"},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "gone", "is_error": True},
                    ],
                },
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "tools": [{"name": "find", "input_schema": {"type": "object"}}],
        }
    )
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "user"]
    assert chat.messages[2].content == "looking"
    assert json.loads(chat.messages[2].tool_calls[0].function.arguments) == {"id": 1}
    assert chat.messages[3].content == "Error: gone" and chat.messages[4].content == "and?"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False


async def _frames(chunks: list[dict[str, Any]], end: bytes = DONE) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield frame(msgspec.json.encode(chunk))
    yield end


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "choices": choices, **extra}


STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}),
]


def _events(raw: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for item in raw:
        kind, data = item.decode().strip().split("\n", 1)
        found.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


async def _collect(frames: AsyncIterator[bytes]) -> list[bytes]:
    return [item async for item in frames]


async def test_a_chat_stream_becomes_the_responses_events_in_order() -> None:
    request = decode_responses_request(b'{"model": "m", "input": "x", "stream": true}', LIMITS)
    done: list[ResponseObject] = []

    async def keep(response: ResponseObject) -> None:
        done.append(response)

    events = _events(
        await _collect(ResponseEvents(ResponseWriter(request, "d1", False), keep).write(_frames(STREAM)))
    )
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_item.added") == 2 and kinds[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data for kind, data in events if kind == "response.function_call_arguments.delta"]
    assert {d["output_index"] for d in deltas} == {1} and "".join(d["delta"] for d in deltas) == '{"x": 1}'
    completed = events[-1][1]["response"]
    assert [item["type"] for item in completed["output"]] == ["message", "function_call"]
    assert completed["output"][0]["content"][0]["text"] == "Hello"
    assert completed["usage"]["input_tokens"] == 7 and completed["usage"]["output_tokens"] == 5
    assert done[0].id == "resp_d1"


async def test_a_chat_stream_becomes_anthropics_events_one_block_at_a_time() -> None:
    events = _events(await _collect(MessageEvents("msg_1", "m").write(_frames(STREAM))))
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[6][1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}
    assert events[10][1]["delta"]["stop_reason"] == "tool_use"
    assert events[10][1]["usage"]["input_tokens"] == 7 and events[10][1]["usage"]["output_tokens"] == 5


async def test_a_failed_stream_ends_with_each_apis_error_event() -> None:
    broken = error_frame("upstream broke off", "upstream_error")
    request = decode_responses_request(b'{"model": "m", "input": "x", "stream": true}', LIMITS)

    async def keep(_: ResponseObject) -> None:
        raise AssertionError("a failed response is not kept")

    responses_events = _events(
        await _collect(
            ResponseEvents(ResponseWriter(request, "d", False), keep).write(_frames(STREAM[:2], broken))
        )
    )
    assert [kind for kind, _ in responses_events][-2:] == ["error", "response.failed"]
    assert responses_events[-2][1]["error"]["message"] == "upstream broke off"
    anthropic_events = _events(await _collect(MessageEvents("m", "m").write(_frames(STREAM[:2], broken))))
    assert anthropic_events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "upstream broke off"}},
    )


def test_a_whole_completion_is_read_with_its_tool_calls_and_usage() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    read = chat_view.completion(json.dumps(body).encode())
    assert read.tool_calls == [chat_view.ToolCall("c", "f", "{}")] and read.usage.total_tokens == 5
    assert read.finish_reason == "tool_calls" and read.text == ""


def test_an_image_beside_the_users_words_keeps_both() -> None:
    chat = messages(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                    ],
                }
            ],
        }
    )
    parts = chat.messages[0].content
    assert [p.type for p in parts] == ["text", "image_url"]
    assert parts[1].image_url == {"url": "data:image/png;base64,AAAA"}


_PIECES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def chat_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str, list[tuple[str, str]], Usage]:
    """A chat stream: text pieces, then tool calls each in argument pieces, a finish and usage."""
    pieces = draw(st.lists(_PIECES, max_size=6))
    calls = draw(
        st.lists(
            st.tuples(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.lists(_PIECES, max_size=3)),
            max_size=3,
        )
    )
    usage = Usage.of(draw(st.integers(0, 5000)), draw(st.integers(0, 5000)))
    chunks = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]
    for index, (name, arguments) in enumerate(calls):
        opening = {"index": index, "id": f"call_{index}", "function": {"name": name, "arguments": ""}}
        chunks.append(chunk({"tool_calls": [opening]}))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": a}}]}) for a in arguments]
    chunks += [chunk({}, "tool_calls" if calls else "stop"), chunk(None, usage=msgspec.to_builtins(usage))]
    return chunks, "".join(pieces), [(name, "".join(arguments)) for name, arguments in calls], usage


async def _read_back(reader: Any, events: list[bytes]) -> tuple[str, list[tuple[str, str]], Usage | None]:
    """Another API's events read by an upstream reader of that API, as the gateway reads chat."""
    payloads = [p for event in events for p in reader.read(event.split(b"\ndata: ", 1)[1].strip())]
    frames = [frame(p) for p in payloads]
    text, calls, usage = [], {}, None
    async for event in chat_view.events(_frames([json.loads(f[6:]) for f in frames if f != DONE], DONE)):
        if isinstance(event, chat_view.TextDelta):
            text.append(event.text)
        elif isinstance(event, chat_view.ToolStart):
            calls[event.index] = [event.name, ""]
        elif isinstance(event, chat_view.ToolArguments):
            calls[event.index][1] += event.arguments
        elif isinstance(event, chat_view.Used):
            usage = event.usage
    return "".join(text), [(n, a) for n, a in calls.values()], usage


@settings(max_examples=150, deadline=None)
@given(stream=chat_streams())
async def test_a_stream_survives_the_round_trip_through_each_api(
    stream: tuple[list[dict[str, Any]], str, list[tuple[str, str]], Usage],
) -> None:
    """Chat chunks written as the Responses API's (or Anthropic's) events, then read back by the
    upstream side of that API, are the same text, tool calls and usage."""
    chunks, text, calls, usage = stream
    request = decode_responses_request(b'{"model": "m", "input": "x", "stream": true}', LIMITS)

    async def keep(_: ResponseObject) -> None:
        return None

    written = await _collect(ResponseEvents(ResponseWriter(request, "d", False), keep).write(_frames(chunks)))
    assert await _read_back(ResponsesApi.stream_reader(), written) == (text, calls, usage)
    written = await _collect(MessageEvents("m", "m").write(_frames(chunks)))
    assert await _read_back(AnthropicApi.stream_reader(), written) == (text, calls, usage)
