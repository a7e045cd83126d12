"""Budgets as an agent meets them: refusals, downgrades, soft-limit alerts, headers, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config
from tests.servers import aiohttp_server, gateway_server, webhook_server

pytestmark = pytest.mark.e2e
ASK = [{"role": "user", "content": "Which queue should this ticket go to?"}]


def test_an_exhausted_budget_is_429_with_retry_after_and_remaining_tokens_shrink(
    simulator: tuple[str, Any],
) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "routes": ["*"], "budget": {"tokens_per_day": 400}}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        remaining = []
        with pytest.raises(openai.RateLimitError) as info:
            for _ in range(50):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=ASK, max_tokens=30
                )
                remaining.append(int(raw.headers["x-tiergate-budget-remaining-tokens"]))
        assert remaining == sorted(remaining, reverse=True) and len(remaining) >= 3
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.body["code"] == "budget_exhausted"  # type: ignore[index]
        usage = httpx.get(
            f"{url.removesuffix('/v1')}/admin/usage",
            params={"agent": "agent"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
    day = usage["windows"][0]
    assert day["limit_tokens"] == 400 and day["used_tokens"] <= 400
    assert day["remaining_tokens"] == 400 - day["used_tokens"]
    assert day["resets_at"].endswith("Z")


def test_max_tokens_is_lowered_to_what_the_agent_can_afford(simulator: tuple[str, Any]) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 35}}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        completion = client.chat.completions.create(model="auto", messages=ASK, max_tokens=500)
    assert completion.usage is not None
    assert completion.usage.total_tokens <= 35
    assert completion.choices[0].finish_reason == "length"


def test_downgrade_answers_from_a_cheaper_upstream_then_from_free_tiers(simulator: tuple[str, Any]) -> None:
    # per token: small costs 1 micro-dollar in and 2 out, large 10 and 20. With 100 micro-dollars
    # a day the ~14-token prompt alone is too dear for large, but small still fits.
    agents = [
        {
            "id": "agent",
            "api_key": DEMO_KEY,
            "routes": ["*"],
            "budget": {"usd_per_day": 0.0001, "on_exhausted": "downgrade"},
        }
    ]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="triage", messages=ASK, max_tokens=20)
        assert raw.headers["x-tiergate-tier"] == "llm:small"
        assert raw.headers["x-tiergate-downgraded"] == "budget: llm:small"
        for _ in range(20):
            try:
                client.chat.completions.create(model="triage", messages=ASK, max_tokens=20)
            except openai.RateLimitError:
                break
        rule = client.chat.completions.with_raw_response.create(
            model="triage", messages=[{"role": "user", "content": "reset my password"}], max_tokens=20
        )
        assert rule.headers["x-tiergate-tier"] == "rules"
        assert rule.headers["x-tiergate-downgraded"] == "budget: free tiers only"
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="triage", messages=ASK, max_tokens=20)


def test_crossing_warn_at_posts_one_alert_per_window(simulator: tuple[str, Any]) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 1000, "warn_at": 0.2}}]
    with webhook_server() as (hook, received):
        config = make_config(simulator[0], agents=agents, budget_alerts={"webhook_url": hook})
        with gateway_server(config) as url:
            client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
            for _ in range(8):
                client.chat.completions.create(model="auto", messages=ASK, max_tokens=40)
            deadline = time.monotonic() + 5
            while not received and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            metrics = httpx.get(f"{url.removesuffix('/v1')}/metrics").text
    assert len(received) == 1
    assert received[0]["event"] == "budget.soft_limit_crossed"
    assert received[0]["subject"] == "agent:agent" and received[0]["window"] == "day"
    assert 'tiergate_budget_warnings_total{metric="tokens",subject="agent:agent",window="day"} 1.0' in metrics


def test_metrics_count_requests_tokens_and_tiers(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0])) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        client.chat.completions.create(model="auto", messages=ASK)
        client.chat.completions.create(
            model="triage", messages=[{"role": "user", "content": "reset password"}]
        )
        text = httpx.get(f"{url.removesuffix('/v1')}/metrics").text
    assert 'tiergate_requests_total{route="auto",status="200",tier="llm:small"} 1.0' in text
    assert 'tiergate_requests_total{route="triage",status="200",tier="rules"} 1.0' in text
    assert 'tiergate_tokens_total{kind="completion",route="auto",tier="llm:small"}' in text


def test_requests_held_back_by_reservations_in_flight_wait_for_them(simulator: tuple[str, Any]) -> None:
    """48 requests at once with no max_tokens and 2,000 tokens a day: each reserves its prompt and
    1,024 completion tokens, so two fit at a time; the others wait for room, not a day."""
    agents = [{"id": "agent", "api_key": DEMO_KEY, "routes": ["*"], "budget": {"tokens_per_day": 2000}}]
    with gateway_server(make_config(simulator[0], agents=agents, cache={"backend": "none"})) as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{url}/chat/completions",
                            headers={"authorization": f"Bearer {DEMO_KEY}"},
                            json={"model": "auto", "messages": [{"role": "user", "content": f"ticket {i}"}]},
                        )
                        for i in range(48)
                    )
                )

        responses = asyncio.run(burst())
        usage = httpx.get(
            f"{url.removesuffix('/v1')}/admin/usage",
            params={"agent": "agent"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
    used = usage["windows"][0]["used_tokens"]
    served = [r for r in responses if r.status_code == 200]
    assert used <= 2000
    affordable = min(48, 2000 // max(1, used // max(1, len(served))))
    assert len(served) >= 0.9 * affordable, (len(served), used)
    for refused in (r for r in responses if r.status_code == 429):
        code = refused.json()["error"]["code"]
        assert code in ("budget_contended", "budget_exhausted")
        if code == "budget_contended":
            assert int(refused.headers["retry-after"]) <= 5
            assert "in flight hold" in refused.json()["error"]["message"]


def test_reserve_recent_reserves_and_caps_what_the_routes_answers_use() -> None:
    """An upstream that records the cap it is sent: after enough answers of about 40 tokens, a
    request naming no cap reserves (and sends) a high percentile of them, not 1,024."""
    caps: list[int | None] = []

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        caps.append(body.get("max_tokens"))
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 40, "total_tokens": 50},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    budget = {"tokens_per_day": 1_000_000, "reserve": "recent"}
    agents = [{"id": "agent", "api_key": DEMO_KEY, "routes": ["*"], "budget": budget}]
    with aiohttp_server(app) as upstream:
        config = make_config(f"{upstream}/v1", agents=agents, cache={"backend": "none"})
        with gateway_server(config) as url:
            client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
            for i in range(60):
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"q{i}"}])
    assert caps[0] == 1024  # too few answers seen yet: the default
    assert caps[-1] == 50  # the 99th percentile (40) with its margin (1.25)


def test_lanes_a_background_request_leaves_the_last_share_of_a_budget_to_critical_work(
    simulator: tuple[str, Any],
) -> None:
    budget = {"tokens_per_day": 1000, "reserve_for_critical": 0.5}
    agents = [
        {"id": "agent", "api_key": DEMO_KEY, "routes": ["*"], "budget": budget, "priority": "background"},
        {"id": "other", "api_key": OTHER_KEY, "routes": ["*"], "max_priority": "normal"},
    ]
    config = make_config(simulator[0], agents=agents, cache={"backend": "none"})
    with gateway_server(config) as url, httpx.Client(base_url=url.removesuffix("/v1")) as http:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(50):  # background by the agent's default
                client.chat.completions.create(model="auto", messages=ASK, max_tokens=60)
        assert "the last 500 are kept for critical work" in refused.value.message
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, max_tokens=60, extra_headers={"x-tiergate-priority": "critical"}
        )
        decision = raw.headers["x-tiergate-decision-id"]
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        assert http.get(f"/admin/decisions/{decision}", headers=admin).json()["lane"] == "critical"
        used = http.get("/admin/usage", params={"agent": "agent"}, headers=admin).json()["windows"][0]
        assert 500 - 100 < used["used_tokens"] - raw.parse().usage.total_tokens <= 500
        metrics = http.get("/metrics").text
        assert 'tiergate_lane_requests_total{lane="critical"} 1.0' in metrics
        assert 'tiergate_lane_wait_seconds_count{lane="background"}' in metrics
        for header, status, param in (("urgent", 400, "x-tiergate-priority"), ("critical", 403, None)):
            answer = http.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": ASK},
                headers={"authorization": f"Bearer {OTHER_KEY}", "x-tiergate-priority": header},
            )
            assert answer.status_code == status
            if param:
                assert answer.json()["error"]["param"] == param
            else:
                assert answer.json()["error"]["code"] == "lane_not_allowed"


def test_lanes_under_a_flood_a_critical_request_takes_the_place_kept_for_it(
    simulator: tuple[str, Any],
) -> None:
    """An upstream that takes 300 ms and two places, one kept for critical work: eight background
    requests queue for the other, and a critical one sent after them is answered at once."""
    slow = {
        "model": "sim-small+latency=300",
        "max_concurrency": 2,
        "reserve_for_critical": 0.5,
        "queue_timeout_s": 30,
    }
    agents = [{"id": "agent", "api_key": DEMO_KEY, "routes": ["*"], "priority": "background"}]
    config = make_config(
        simulator[0], agents=agents, cache={"backend": "none"}, upstream_extra={"small": slow}
    )

    async def flood(url: str) -> tuple[list[float], float]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def ask(lane: str | None, delay: float) -> float:
                await asyncio.sleep(delay)
                headers = {"authorization": f"Bearer {DEMO_KEY}"}
                if lane:
                    headers["x-tiergate-priority"] = lane
                began = time.perf_counter()
                reply = await client.post(
                    f"{url}/chat/completions", json={"model": "small", "messages": ASK}, headers=headers
                )
                assert reply.status_code == 200
                return time.perf_counter() - began

            background = [asyncio.ensure_future(ask(None, 0)) for _ in range(8)]
            critical = await ask("critical", 0.2)
            return list(await asyncio.gather(*background)), critical

    with gateway_server(config) as url:
        background, critical = asyncio.run(flood(url))
    assert critical < 0.6  # one upstream call: it did not queue behind the flood
    assert max(background) > 2.0  # eight calls one at a time through the one place background may use


def test_past_max_waiting_a_held_back_request_is_refused_at_once_as_contended(
    simulator: tuple[str, Any],
) -> None:
    budget = {"tokens_per_day": 2000, "max_waiting": 0}
    agents = [{"id": "agent", "api_key": DEMO_KEY, "routes": ["*"], "budget": budget}]
    with gateway_server(make_config(simulator[0], agents=agents, cache={"backend": "none"})) as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                ask = {"model": "auto", "messages": ASK}
                headers = {"authorization": f"Bearer {DEMO_KEY}"}
                return await asyncio.gather(
                    *(client.post(f"{url}/chat/completions", json=ask, headers=headers) for _ in range(10))
                )

        responses = asyncio.run(burst())
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all(r.json()["error"]["code"] == "budget_contended" for r in refused)
    assert all(int(r.headers["retry-after"]) <= 5 for r in refused)
    assert "budget busy" in refused[0].json()["error"]["message"]
