"""Behaviours reached through config alone: keys given as digests, per-agent permissions, teams,
the decision-record sink and its redaction, and the circuits admin view."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config
from tests.servers import aiohttp_server, gateway_server

pytestmark = pytest.mark.e2e
USER = [{"role": "user", "content": "a secret customer detail"}]


def test_an_agent_key_given_as_its_sha256_authenticates(simulator: tuple[str, Any]) -> None:
    digest = hashlib.sha256(b"sk-hashed-agent").hexdigest()
    agents = [{"id": "hashed", "key_sha256": digest}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        answer = openai.OpenAI(
            base_url=url, api_key="sk-hashed-agent", max_retries=0
        ).chat.completions.create(model="auto", messages=USER)
        assert answer.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key=digest, max_retries=0).models.list()  # the digest is no key


def test_logprobs_and_logit_bias_pass_only_where_allowed(simulator: tuple[str, Any]) -> None:
    agents = [{"id": "agent", "api_key": DEMO_KEY, "allow_logprobs": False, "allow_logit_bias": False}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="auto", messages=USER, logprobs=True)
        assert info.value.body["param"] == "logprobs"  # type: ignore[index]
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="auto", messages=USER, logit_bias={"50256": -100})
        assert info.value.body["param"] == "logit_bias"  # type: ignore[index]


def test_two_agents_of_a_team_draw_on_the_teams_budget(simulator: tuple[str, Any]) -> None:
    agents = [
        {"id": "a", "api_key": "sk-team-a", "team": "support"},
        {"id": "b", "api_key": "sk-team-b", "team": "support"},
    ]
    teams = [{"id": "support", "budget": {"tokens_per_day": 120}}]
    with gateway_server(make_config(simulator[0], agents=agents, teams=teams)) as url:
        first = openai.OpenAI(base_url=url, api_key="sk-team-a", max_retries=0)
        second = openai.OpenAI(base_url=url, api_key="sk-team-b", max_retries=0)
        first.chat.completions.create(model="auto", messages=USER, max_tokens=40)
        with pytest.raises(openai.RateLimitError) as info:
            for _ in range(5):
                second.chat.completions.create(model="auto", messages=USER, max_tokens=40)
        assert "team:support" in info.value.message


def test_decision_records_go_to_the_file_sink_and_can_leave_message_text_out(
    simulator: tuple[str, Any], tmp_path: Path
) -> None:
    for redact in (False, True):
        path = tmp_path / f"records-{redact}.jsonl"
        config = make_config(simulator[0], records={"sink": "file", "path": str(path), "redact": redact})
        with gateway_server(config) as url:
            client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=USER)
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="nope", messages=USER)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["status"] for r in lines] == [200, 404]
        assert lines[0]["id"] == raw.headers["x-tiergate-decision-id"]
        assert lines[0]["tier"] == "llm:small" and lines[0]["prompt_tokens"] > 0
        assert ("secret customer" in path.read_text()) is not redact
        assert DEMO_KEY not in path.read_text()  # keys never reach records


def test_the_admin_api_shows_each_upstreams_circuit(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0])) as url:
        root = url.removesuffix("/v1")
        assert httpx.get(f"{root}/admin/circuits").status_code == 401
        circuits = httpx.get(
            f"{root}/admin/circuits", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ).json()
    assert circuits == {
        "small": {"state": "closed", "retry_after_s": 0.0, "times_opened": 0},
        "large": {"state": "closed", "retry_after_s": 0.0, "times_opened": 0},
    }


def test_the_chat_path_answers_alike_directly_and_through_the_framework(simulator: tuple[str, Any]) -> None:
    """The exact path goes straight to the handler; a trailing slash goes through Litestar's router."""
    with gateway_server(make_config(simulator[0])) as url:
        body = {"model": "auto", "messages": USER}
        headers = {"authorization": f"Bearer {DEMO_KEY}"}
        direct = httpx.post(f"{url}/chat/completions", json=body, headers=headers)
        routed = httpx.post(f"{url}/chat/completions/", json=body, headers=headers)
        assert direct.status_code == routed.status_code == 200
        assert direct.json()["object"] == routed.json()["object"] == "chat.completion"
        assert httpx.post(f"{url}/chat/completions", json=body).status_code == 401
        assert httpx.get(f"{url}/chat/completions", headers=headers).status_code == 405


def test_whole_answers_and_errors_carry_their_length(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0])) as url:
        headers = {"authorization": f"Bearer {DEMO_KEY}"}
        answered = httpx.post(
            f"{url}/chat/completions", json={"model": "auto", "messages": USER}, headers=headers
        )
        refused = httpx.post(
            f"{url}/chat/completions", json={"model": "auto", "messages": []}, headers=headers
        )
        streamed = httpx.post(
            f"{url}/chat/completions",
            json={"model": "auto", "messages": USER, "stream": True},
            headers=headers,
        )
        for response, status in ((answered, 200), (refused, 400)):
            assert response.status_code == status
            assert "transfer-encoding" not in response.headers
            assert int(response.headers["content-length"]) == len(response.content) > 0
        assert streamed.status_code == 200 and "content-length" not in streamed.headers


def test_an_upstreams_cookie_never_rides_along_on_another_request() -> None:
    """The upstream session is shared by every agent: it keeps no cookies."""
    seen: list[str | None] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append(request.headers.get("cookie"))
        response = web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        )
        response.set_cookie("session", "belongs-to-the-first-caller")
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", completions)
    with (
        aiohttp_server(upstream) as base,
        gateway_server(
            make_config(base.replace("127.0.0.1", "localhost") + "/v1")  # a cookie jar would skip an IP
        ) as url,
    ):
        for key in (DEMO_KEY, OTHER_KEY):
            openai.OpenAI(base_url=url, api_key=key, max_retries=0).chat.completions.create(
                model="auto", messages=USER
            )
    assert seen == [None, None]


def test_models_that_are_no_route_share_one_metrics_label(simulator: tuple[str, Any]) -> None:
    """Label values come from the config only: made-up model names cannot grow the metrics."""
    with gateway_server(make_config(simulator[0])) as url:
        headers = {"authorization": f"Bearer {DEMO_KEY}"}
        for i in range(5):
            missing = httpx.post(
                f"{url}/chat/completions", json={"model": f"made-up-{i}", "messages": USER}, headers=headers
            )
            assert missing.status_code == 404
        assert httpx.post(
            f"{url}/chat/completions", json={"model": "auto", "messages": USER}, headers=headers
        )
        metrics = httpx.get(f"{url.removesuffix('/v1')}/metrics").text
    assert "made-up" not in metrics
    assert 'tiergate_requests_total{route="unknown",status="404",tier="none"} 5.0' in metrics
    assert 'route="auto"' in metrics
