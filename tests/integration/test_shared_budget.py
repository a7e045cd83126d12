"""Budgets across processes: two real gateway processes sharing one real Redis."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster import flush
from tests.conftest import ADMIN_KEY
from tests.servers import free_port, simulator_server

pytestmark = pytest.mark.redis
KEY = "sk-racer"


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"gateway on {port} did not start")


@contextmanager
def gateway_process(config: dict[str, Any], tmp_path: Path, workers: int = 1) -> Iterator[str]:
    port = free_port()
    path = tmp_path / f"gateway-{port}.yaml"
    config = {**config, "server": {**config["server"], "port": port, "workers": workers}}
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(params=["redis", "cluster"])
def shared_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    """State settings for one real Redis, or for a real three-master Redis Cluster; emptied."""
    if request.param == "cluster":
        url = request.getfixturevalue("cluster_url")
        flush(url)
        return {"url": url}
    proc = request.getfixturevalue("redis_proc")
    subprocess.run(["redis-cli", "-p", str(proc.port), "-n", "6", "flushdb"], check=True, capture_output=True)
    return {"url": f"redis://{proc.host}:{proc.port}/6"}


def shared_config(sim_url: str, redis_url: str, **state: Any) -> dict[str, Any]:
    return {
        "server": {"admin_key": ADMIN_KEY},
        "state": {"backend": "redis", "url": redis_url, "timeout_s": 0.3, **state},
        "upstreams": [{"name": "small", "base_url": sim_url, "model": "sim-small", "max_retries": 0}],
        "agents": [{"id": "racer", "api_key": KEY, "budget": {"tokens_per_day": 3000}}],
        "routes": [{"name": "auto", "llm": ["small"]}],
        "cache": {"backend": "none"},
    }


async def race(urls: list[str], requests: int, max_tokens: int | None = 20) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:

        async def one(i: int) -> httpx.Response:
            return await client.post(
                f"{urls[i % len(urls)]}/v1/chat/completions",
                headers={"authorization": f"Bearer {KEY}"},
                json={
                    "model": "auto",
                    **({"max_tokens": max_tokens} if max_tokens is not None else {}),
                    "stream": i % 3 == 0,
                    "messages": [{"role": "user", "content": f"ticket number {i}: where is my parcel?"}],
                },
            )

        return await asyncio.gather(*(one(i) for i in range(requests)))


def used_tokens(gateway: str, until: int, wait_s: float = 5.0) -> int:
    """The racer's tokens this day, read until they reach `until` or `wait_s` passes: another
    gateway's last settlements land about a Redis round trip after its last answer."""
    deadline = time.monotonic() + wait_s
    while True:
        usage = httpx.get(
            f"{gateway}/admin/usage",
            params={"agent": "racer"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
        used = int(next(w for w in usage["windows"] if w["window"] == "day")["used_tokens"])
        if used == until or time.monotonic() > deadline:
            return used
        time.sleep(0.05)


def test_two_gateways_sharing_redis_never_overspend_a_budget(
    shared_state: dict[str, Any], tmp_path: Path
) -> None:
    with simulator_server() as (sim_url, simulated):
        config = shared_config(sim_url, shared_state["url"])
        with gateway_process(config, tmp_path) as first, gateway_process(config, tmp_path) as second:
            before = simulated.stats.prompt_tokens + simulated.stats.completion_tokens
            responses = asyncio.run(race([first, second], 200))
            served = simulated.stats.prompt_tokens + simulated.stats.completion_tokens - before
            used_tokens(second, until=served, wait_s=0)  # each worker reads back its own settlements
            used = used_tokens(first, until=served, wait_s=0)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) > 20 and statuses.count(429) > 20
    for refused in (r for r in responses if r.status_code == 429):
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "budget_exhausted"
    assert served <= 3000  # the upstream never served more than the budget
    assert used == served  # the ledger equals what the upstream reports


def test_a_burst_the_budget_can_afford_is_served_not_refused_for_what_is_held(
    shared_state: dict[str, Any], tmp_path: Path
) -> None:
    """48 requests at once with no max_tokens, across two gateways: each reserves its prompt and
    1,024 completion tokens, so only a couple fit at a time; the rest wait for them to settle."""
    with simulator_server() as (sim_url, simulated):
        config = shared_config(
            sim_url, shared_state["url"]
        )  # 3,000 tokens a day: the burst needs about 2,500
        with gateway_process(config, tmp_path) as first, gateway_process(config, tmp_path) as second:
            before = simulated.stats.prompt_tokens + simulated.stats.completion_tokens
            responses = asyncio.run(race([first, second], 48, max_tokens=None))
            served = simulated.stats.prompt_tokens + simulated.stats.completion_tokens - before
    statuses = [r.status_code for r in responses]
    assert served <= 3000
    assert statuses.count(200) >= 44, statuses  # at least 90 % of the affordable burst
    for refused in (r for r in responses if r.status_code == 429):
        assert int(refused.headers["retry-after"]) <= 5  # not "come back tomorrow"
        assert refused.json()["error"]["code"] == "budget_contended"


def test_a_redis_outage_fails_closed_then_recovers_by_itself(tmp_path: Path) -> None:
    port = free_port()
    redis_cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        with (
            simulator_server() as (sim_url, _),
            gateway_process(shared_config(sim_url, f"redis://127.0.0.1:{port}/0"), tmp_path) as url,
        ):
            ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"authorization": f"Bearer {KEY}"}
            assert httpx.post(f"{url}/v1/chat/completions", json=ask, headers=headers).status_code == 200
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            down = httpx.post(f"{url}/v1/chat/completions", json=ask, headers=headers, timeout=10)
            assert down.status_code == 503
            assert "budget state is unavailable" in down.json()["error"]["message"]
            assert httpx.get(f"{url}/readyz").status_code == 503
            server = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            deadline = time.monotonic() + 10
            status = 0
            while time.monotonic() < deadline and status != 200:
                status = httpx.post(f"{url}/v1/chat/completions", json=ask, headers=headers).status_code
                time.sleep(0.1)
            assert status == 200
            assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        server.terminate()
        server.wait(10)


def test_a_redis_outage_with_fail_open_admits_requests(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    with (
        simulator_server() as (sim_url, _),
        gateway_process(
            shared_config(sim_url, f"redis://127.0.0.1:{port}/0", on_state_error="fail_open"), tmp_path
        ) as url,
    ):
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        assert response.status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 503  # it says so


def test_an_agent_without_limits_never_waits_on_budget_state(tmp_path: Path) -> None:
    """Nothing to reserve, so no state is touched: an outage that refuses the limited agent
    (fail_closed), and opens the state backend's breaker, does not refuse it."""
    config = shared_config("", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    config["agents"].append({"id": "free", "api_key": "sk-free-agent"})
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    with simulator_server() as (sim_url, _):
        config["upstreams"][0]["base_url"] = sim_url
        with gateway_process(config, tmp_path) as url:
            limited = [
                httpx.post(
                    f"{url}/v1/chat/completions",
                    json=ask,
                    headers={"authorization": f"Bearer {KEY}"},
                    timeout=10,
                )
                for _ in range(4)  # the breaker opens after three failures
            ]
            free = httpx.post(
                f"{url}/v1/chat/completions", json=ask, headers={"authorization": "Bearer sk-free-agent"}
            )
    assert [r.status_code for r in limited] == [503] * 4
    assert "circuit open" in limited[-1].json()["error"]["message"]
    assert free.status_code == 200, free.text


def test_serve_runs_several_workers_on_one_port(tmp_path: Path) -> None:
    with simulator_server() as (sim_url, _):
        config = shared_config(sim_url, "redis://127.0.0.1:1/0", on_state_error="fail_open")
        with gateway_process(config, tmp_path, workers=2) as url:
            pids = set()
            for _ in range(40):
                response = httpx.get(f"{url}/healthz", headers={"connection": "close"})
                pids.add(response.json()["worker"])
            assert len(pids) == 2, pids


def test_a_frozen_redis_costs_requests_a_timeout_not_a_hang_and_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.3)
        with simulator_server() as (sim_url, simulated):
            config = shared_config(sim_url, f"redis://127.0.0.1:{port}/0")
            with gateway_process(config, tmp_path) as first, gateway_process(config, tmp_path) as second:
                before = simulated.stats.prompt_tokens + simulated.stats.completion_tokens
                assert all(r.status_code == 200 for r in asyncio.run(race([first, second], 10)))
                server.send_signal(signal.SIGSTOP)  # frozen: connections stay open, nothing answers
                # budget leases the warm-up earned grant for up to their ttl_s (their room is held
                # already: no overspend); once they have ended, every request needs Redis
                time.sleep(0.6)
                began = time.monotonic()
                frozen = asyncio.run(race([first, second], 20))
                took = time.monotonic() - began
                assert {r.status_code for r in frozen} == {503}
                assert took < 5  # bounded by the 0.3 s state timeout, not hung
                # after a few failures the breaker around Redis answers at once, without waiting
                quick = time.monotonic()
                refused = httpx.post(
                    f"{first}/v1/chat/completions",
                    headers={"authorization": f"Bearer {KEY}"},
                    json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert refused.status_code == 503 and time.monotonic() - quick < 0.25
                assert "circuit open" in refused.json()["error"]["message"]
                server.send_signal(signal.SIGCONT)
                deadline = time.monotonic() + 10
                statuses: set[int] = set()
                while time.monotonic() < deadline:
                    statuses = {r.status_code for r in asyncio.run(race([first, second], 4))}
                    if statuses == {200}:
                        break
                    time.sleep(0.2)
                assert statuses == {200}
                served = simulated.stats.prompt_tokens + simulated.stats.completion_tokens - before
                # Reservations sent to the frozen server ran when it woke; each gateway takes back
                # the ones it had given up on, in the background: the ledger converges on what was served.
                used = used_tokens(first, until=served, wait_s=15)
        assert used == served
    finally:
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(10)


def test_a_circuit_opened_on_one_gateway_is_open_on_the_other_at_once(
    shared_state: dict[str, Any], tmp_path: Path
) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    with simulator_server() as (sim_url, simulated):
        config = shared_config(sim_url, shared_state["url"])
        config["upstreams"][0].update(model="sim-small+fault=500", circuit={"failures": 2, "cooldown_s": 60})
        with gateway_process(config, tmp_path) as first, gateway_process(config, tmp_path) as second:
            for _ in range(2):  # the first gateway finds the upstream failing
                failed = httpx.post(
                    f"{first}/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {KEY}"}
                )
                assert failed.status_code >= 500
            circuits = httpx.get(f"{first}/admin/circuits", headers=admin).json()
            assert circuits["small"]["state"] == "open"

            def open_on_second() -> bool:
                return bool(
                    httpx.get(f"{second}/admin/circuits", headers=admin).json()["small"]["state"] == "open"
                )

            deadline = time.monotonic() + 5
            while not open_on_second() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert open_on_second()
            calls = simulated.stats.requests
            skipped = httpx.post(
                f"{second}/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {KEY}"}
            )
            assert skipped.status_code == 503 and "circuit open" in skipped.json()["error"]["message"]
            assert simulated.stats.requests == calls  # the second gateway never called it
            # a gateway started now learns of the opening from Redis
            with gateway_process(config, tmp_path) as third:
                assert httpx.get(f"{third}/admin/circuits", headers=admin).json()["small"]["state"] == "open"


def test_a_busy_agent_is_granted_from_budget_leases_and_charged_exactly(
    shared_state: dict[str, Any], tmp_path: Path
) -> None:
    """With the default budget leases, a busy agent's requests are held in process (the metrics say
    where each hold came from), and the ledger still ends at exactly what the upstream served."""
    with simulator_server() as (sim_url, simulated):
        config = shared_config(sim_url, shared_state["url"])
        config["agents"][0]["budget"] = {"tokens_per_day": 1_000_000}
        with gateway_process(config, tmp_path) as gateway:
            before = simulated.stats.prompt_tokens + simulated.stats.completion_tokens
            with httpx.Client(timeout=10) as client:
                for i in range(60):
                    answer = client.post(
                        f"{gateway}/v1/chat/completions",
                        headers={"authorization": f"Bearer {KEY}"},
                        json={
                            "model": "auto",
                            "max_tokens": 20,
                            "messages": [{"role": "user", "content": f"n{i}"}],
                        },
                    )
                    assert answer.status_code == 200
                metrics = client.get(f"{gateway}/metrics").text
            served = simulated.stats.prompt_tokens + simulated.stats.completion_tokens - before
            used = used_tokens(gateway, until=served, wait_s=0)
    holds = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("tiergate_budget_holds_total{")
    }
    assert holds.get("lease", 0) >= 40 and holds.get("ledger", 0) <= 20, holds
    assert used == served
