"""The SSE relay against an upstream that splits its stream at arbitrary points (property-based)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import aiohttp_server
from tiers.types import ChatRequest, Message
from tiers.upstream import OpenAICompatibleUpstream, UpstreamSettings

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
    cuts = sorted({min(c, len(body)) for c in plan["cuts"]})
    start = 0
    for cut in [*cuts, len(body)]:
        if cut > start:
            await response.write(body[start:cut])
            await asyncio.sleep(0)
            start = cut
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
        relay = await upstream.stream(request, include_usage=include_usage, prompt_tokens=5)
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
