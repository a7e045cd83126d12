"""A bare forwarder, the floor of the stack tiergate is built on: a raw ASGI app under uvicorn
(uvloop, httptools) that posts the request body to the upstream with aiohttp and returns its
answer. No authentication, parsing, budget, cache, records or metrics.

    python benchmarks/reference/forwarder.py PORT UPSTREAM_CHAT_URL
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn


def make_app(upstream: str) -> Any:
    sessions: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    sessions.append(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await sessions[0].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with sessions[0].post(upstream, data=body, headers={"content-type": "application/json"}) as r:
            answer = await r.read()
            status = r.status
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


if __name__ == "__main__":
    uvicorn.run(
        make_app(sys.argv[2]), port=int(sys.argv[1]), log_level="warning", access_log=False, loop="uvloop"
    )
