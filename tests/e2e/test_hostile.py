"""Hostile clients and upstreams: a real gateway and the simulated upstream's hostile faults. Each
case failed before it was fixed: a budget bypassed through the second cap field or an upstream
that ignores the cap, a huge stream line, deep nesting, an upstream echoing its key, a client
that leaves before a whole answer."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
import yaml

from gateway.config.loading import parse_config
from gateway.config.models import GatewayConfig
from tests.conftest import ADMIN_KEY, DEMO_KEY
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
USER = [{"role": "user", "content": "tell me about the parcel"}]
UPSTREAM_KEY = "sk-upstream-secret-0123456789"


def hostile_config(sim_url: str, records: Path | None = None, **budget: Any) -> GatewayConfig:
    def upstream(name: str, model: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "base_url": sim_url, "model": model, "retry_base_s": 0.01, **extra}

    raw = {
        "server": {"admin_key": ADMIN_KEY, "max_body_bytes": 10**6},
        "upstreams": [
            upstream("good", "sim"),
            upstream("ignore-cap", "sim+fault=ignore-cap"),
            upstream("low-usage", "sim+fault=low-usage"),
            upstream("huge-line", "sim+fault=huge-line", max_retries=0),
            upstream("echo-auth", "sim+fault=echo-auth", api_key=UPSTREAM_KEY, max_retries=0),
            upstream("slow", "sim+latency=3000"),
            upstream("bounded", "sim+fault=ignore-cap", max_answer_bytes=1024, max_retries=0),
        ],
        "agents": [{"id": "agent", "api_key": DEMO_KEY, "budget": budget or {"tokens_per_day": 10**7}}],
        "routes": [
            {"name": "failover", "llm": ["huge-line", "good"]},
            {"name": "too-long", "llm": ["bounded", "good"]},
        ],
        "records": {"sink": "file", "path": str(records)} if records else {"sink": "none"},
        "cache": {"backend": "none"},
    }
    return parse_config(yaml.safe_dump(raw), {})


def used_tokens(url: str) -> int:
    usage = httpx.get(
        f"{url.removesuffix('/v1')}/admin/usage",
        params={"agent": "agent"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    return max(int(w["used_tokens"]) for w in usage["windows"] if w["metric"] == "tokens")


def records_in(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def test_a_stream_past_the_granted_cap_is_cut_and_charged_no_further(simulator: Any) -> None:
    with gateway_server(hostile_config(simulator[0], tokens_per_minute=5000)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        received = []
        with pytest.raises(openai.APIError, match="completion cap of 40 tokens"):
            for chunk in client.chat.completions.create(
                model="ignore-cap", messages=USER, stream=True, max_completion_tokens=40, max_tokens=1_000_000
            ):
                received.append(chunk.choices[0].delta.content if chunk.choices else "")
        assert 0 < len(received) <= 45
        assert used_tokens(url) < 100  # the prompt, and the cap plus the chunk that passed it


def test_usage_reported_far_below_the_text_is_counted_again(simulator: Any) -> None:
    with gateway_server(hostile_config(simulator[0])) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        answer = client.chat.completions.create(model="low-usage", messages=USER, max_tokens=200)
        assert answer.usage is not None and answer.usage.completion_tokens > 20  # not the reported 1
        assert used_tokens(url) == answer.usage.total_tokens


def test_an_oversized_stream_line_fails_over_to_the_next_tier(simulator: Any, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    with gateway_server(hostile_config(simulator[0], records)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="failover", messages=USER, stream=True)
        assert raw.headers["x-tiergate-tier"] == "llm:good"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        with pytest.raises(openai.APIStatusError) as info:
            list(client.chat.completions.create(model="huge-line", messages=USER, stream=True))
        assert info.value.status_code == 502 and "over the size limit" in info.value.message
    failover, alone = records_in(records)
    assert [a["outcome"] for a in failover["attempts"]] == ["escalated", "answered"]
    assert alone["status"] == 502 and "over the size limit" in alone["error"]


@pytest.mark.parametrize("where", ["tools", "response_format"])
def test_deep_nesting_is_a_400_not_a_crash(simulator: Any, where: str) -> None:
    deep = '{"type": "object", "properties": {"a": ' * 1500 + "{}" + "}}" * 1500
    if where == "tools":
        extra = f'"tools": [{{"type": "function", "function": {{"name": "f", "parameters": {deep}}}}}]'
    else:
        extra = (
            f'"response_format": {{"type": "json_schema", "json_schema": {{"name": "s", "schema": {deep}}}}}'
        )
    body = f'{{"model": "good", "messages": [{{"role": "user", "content": "hi"}}], {extra}}}'
    with gateway_server(hostile_config(simulator[0])) as url:
        response = httpx.post(
            f"{url}/chat/completions",
            content=body.encode(),
            headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_an_upstream_echoing_its_key_never_passes_it_on(simulator: Any, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    with gateway_server(hostile_config(simulator[0], records)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as info:
                response = client.chat.completions.create(model="echo-auth", messages=USER, stream=stream)
                if stream:
                    list(response)
            assert "Incorrect API key provided" in info.value.message
            assert UPSTREAM_KEY not in info.value.message and "Bearer sk-" not in info.value.message
    text = records.read_text()
    assert "Incorrect API key provided" in text and UPSTREAM_KEY not in text


def test_a_client_that_leaves_before_a_whole_answer_cancels_it_and_pays_nothing(
    simulator: Any, tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    with gateway_server(hostile_config(simulator[0], records, tokens_per_minute=100_000)) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/chat/completions",
                json={"model": "slow", "messages": USER, "max_tokens": 300},
                headers={"authorization": f"Bearer {DEMO_KEY}"},
                timeout=0.5,
            )
        deadline = time.monotonic() + 5
        while used_tokens(url) and time.monotonic() < deadline:  # the hold is released at once
            time.sleep(0.05)
        assert used_tokens(url) == 0
    [record] = records_in(records)
    assert record["status"] == 499 and record["error"] == "client disconnected"


def test_a_huge_model_name_is_clipped_in_the_error_and_the_record(simulator: Any, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    with gateway_server(hostile_config(simulator[0], records)) as url:
        response = httpx.post(
            f"{url}/chat/completions",
            json={"model": "m" * 500_000, "messages": USER},
            headers={"authorization": f"Bearer {DEMO_KEY}"},
        )
        assert response.status_code == 404 and len(response.content) < 2_000
        assert "more characters]" in response.json()["error"]["message"]
    assert records.stat().st_size < 5_000


def connection_config(sim_url: str, **server: Any) -> GatewayConfig:
    config = hostile_config(sim_url)
    return config.model_copy(update={"server": config.server.model_copy(update=server)})


def raw_exchange(url: str, *chunks: bytes, pause_s: float = 0.0, timeout_s: float = 5.0) -> bytes:
    """What the gateway answers to these bytes, sent in turn over one connection, until it closes
    the connection (or the timeout passes)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause_s)
        received = b""
        try:
            while data := conn.recv(65536):
                received += data
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def test_oversized_headers_get_431_before_they_are_read_and_the_worker_serves_on(simulator: Any) -> None:
    with gateway_server(connection_config(simulator[0], max_header_bytes=16 * 1024)) as url:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        answer = raw_exchange(url, head, *([b"a" * 65536] * 64))  # 4 MiB of one header, if read
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert b"headers_too_large" in answer
        assert httpx.get(f"{url.removesuffix('/v1')}/healthz").status_code == 200
        fine = httpx.get(
            f"{url}/models", headers={"authorization": f"Bearer {DEMO_KEY}", "x-pad": "p" * 8000}
        )
        assert fine.status_code == 200


def test_slow_headers_and_bodies_are_cut_off(simulator: Any) -> None:
    config = connection_config(simulator[0], header_timeout_s=0.5, body_timeout_s=0.5)
    with gateway_server(config) as url:
        began = time.monotonic()
        answer = raw_exchange(url, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # never finished
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - began < 3
        began = time.monotonic()
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {DEMO_KEY}\r\ncontent-length: 500\r\n\r\n".encode()
        )
        answer = raw_exchange(url, head, b'{"model": "good"', pause_s=0.1)  # the rest never comes
        assert answer == b"" and time.monotonic() - began < 3  # closed; nobody to answer
        assert httpx.get(f"{url.removesuffix('/v1')}/healthz").status_code == 200


def test_connections_beyond_the_limit_get_503_and_idle_ones_are_closed(simulator: Any) -> None:
    config = connection_config(simulator[0], max_connections=4, keep_alive_s=1)
    with gateway_server(config) as url:
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(4)]
        try:
            time.sleep(0.2)
            refused = raw_exchange(url, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert refused.startswith(b"HTTP/1.1 503 ")
        finally:
            for conn in idle:
                conn.close()
        time.sleep(0.2)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
            began = time.monotonic()
            assert conn.recv(65536) == b""  # the idle keep-alive connection is closed by the gateway
            assert time.monotonic() - began < 3


def test_a_request_with_two_authorization_headers_is_refused(simulator: Any) -> None:
    with gateway_server(hostile_config(simulator[0])) as url:
        request = (
            f"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEMO_KEY}\r\n"
            "authorization: Bearer sk-someone-else\r\n\r\n"
        )
        answer = raw_exchange(url, request.encode())
        assert answer.startswith(b"HTTP/1.1 400 ") and b"one Authorization header" in answer
        one = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {DEMO_KEY}"})
        assert one.status_code == 200


def test_a_whole_answer_over_its_size_limit_fails_over_and_a_long_one_arrives_whole(simulator: Any) -> None:
    with gateway_server(hostile_config(simulator[0])) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        long = client.chat.completions.create(model="ignore-cap", messages=USER)  # read in many chunks
        assert long.choices[0].message.content is not None
        assert len(long.choices[0].message.content.split()) == 3000
        raw = client.chat.completions.with_raw_response.create(model="too-long", messages=USER)
        assert raw.headers["x-tiergate-tier"] == "llm:good"
