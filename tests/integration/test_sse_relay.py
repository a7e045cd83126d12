"""The SSE relay against an upstream that splits its stream at arbitrary points (property-based)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.servers import aiohttp_server
from tiers.errors import UpstreamError
from tiers.llm.upstream import OpenAICompatibleUpstream, UpstreamSettings
from tiers.types import ChatRequest, Message

WORDS = ["Hel", "lo", " wor", "ld", " — ", "ünï", "cødé", "\\n", ' {"a": 1}', "!"]


def upstream_body(words: list[str], usage: bool) -> bytes:
    events = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
        }
        for w in words
    ]
    if usage:
        events.append(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(words),
                    "total_tokens": 5 + len(words),
                },
            }
        )
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return body.encode()


async def split_handler(request: web.Request) -> web.StreamResponse:
    plan = json.loads(request.headers["x-plan"])
    body = upstream_body(plan["words"], plan["usage"])
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    if plan.get("close_at") is not None:  # the connection drops at an arbitrary byte
        body = body[: plan["close_at"]]
    cuts = sorted({min(c, len(body)) for c in plan["cuts"]})
    start = 0
    for cut in [*cuts, len(body)]:
        if cut > start:
            await response.write(body[start:cut])
            await asyncio.sleep(0)
            start = cut
    if plan.get("close_at") is not None:
        assert request.transport is not None
        request.transport.close()
        return response
    await response.write_eof()
    return response


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", split_handler)
    with aiohttp_server(app) as url:
        yield f"{url}/v1"


async def relay_once(url: str, plan: dict[str, Any], include_usage: bool) -> tuple[list[bytes], Any]:
    async with aiohttp.ClientSession(headers={"x-plan": json.dumps(plan)}) as session:
        upstream = OpenAICompatibleUpstream(UpstreamSettings(name="u", base_url=url, model="m"), session, len)
        request = ChatRequest(model="m", messages=[Message(role="user", content="hi")], stream=True)
        relay = await upstream.stream(request, include_usage=include_usage, prompt_tokens=lambda: 5)
        frames = [frame async for frame in relay]
        return frames, relay


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    usage=st.booleans(),
    include_usage=st.booleans(),
)
def test_events_survive_any_split_and_usage_is_right(
    server: str, words: list[str], cuts: list[int], usage: bool, include_usage: bool
) -> None:
    frames, relay = asyncio.run(
        relay_once(server, {"words": words, "cuts": cuts, "usage": usage}, include_usage)
    )
    assert frames[-1] == b"data: [DONE]\n\n"
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])
    assert text == "".join(words)
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == (1 if include_usage else 0)  # synthesised when the upstream sent none
    assert relay.usage().completion_tokens == (len(words) if usage else len("".join(words)))
    assert relay.completed


async def relay_until_broken(url: str, plan: dict[str, Any]) -> tuple[list[bytes], Any] | None:
    try:
        return await relay_once(url, plan, include_usage=True)
    except UpstreamError:
        return None  # dropped before the first event: the ladder retries or escalates


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
    close_fraction=st.floats(min_value=0.0, max_value=0.999),
)
@example(words=["Hel", "lo"], cuts=[], close_fraction=0.999)  # all but the blank line after [DONE]
def test_a_connection_dropped_at_any_byte_ends_the_stream_with_an_error_event(
    server: str, words: list[str], cuts: list[int], close_fraction: float
) -> None:
    body = upstream_body(words, usage=False)
    close_at = min(int(len(body) * close_fraction), len(body) - 1)
    outcome = asyncio.run(
        relay_until_broken(server, {"words": words, "cuts": cuts, "usage": False, "close_at": close_at})
    )
    if outcome is None:
        return
    frames, relay = outcome
    # the body never holds a complete "data: [DONE]" event, so the relay can never call it complete
    assert not relay.completed
    assert json.loads(frames[-1][6:])["error"]["code"] == "upstream_error"
    relayed = "".join(json.loads(f[6:])["choices"][0]["delta"]["content"] for f in frames[:-1])
    assert "".join(words).startswith(relayed)
    assert relay.usage().completion_tokens == len(relayed)  # charged exactly what was relayed
