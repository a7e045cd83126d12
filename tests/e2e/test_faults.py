"""Fault injection with the simulated upstream: every fault gives a clear error or a fallback, the
gateway keeps serving, and no pooled connection is leaked."""

from __future__ import annotations

import subprocess
import time

import httpx
import openai
import pytest

from gateway.config.models import GatewayConfig
from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.servers import gateway_server, simulator_server

pytestmark = pytest.mark.e2e
USER = [{"role": "user", "content": "hello"}]
BEFORE_ANY_BYTE = {  # fault -> status, streaming or not
    "fault=reset": 502,
    "fault=hang": 504,
    "fault=slow-first": 504,
    "fault=500": 502,
    "fault=429": 429,
}
MID_STREAM = ["fault=cut", "fault=broken-json"]
ALL = [*BEFORE_ANY_BYTE, *MID_STREAM]


def name(fault: str) -> str:
    return fault.replace("=", "-")


def established(port: int) -> int:
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_every_fault_is_a_clear_error_and_no_connection_leaks() -> None:
    with simulator_server() as (sim_url, _):
        port = int(sim_url.split(":")[2].split("/")[0])
        upstreams = [
            {
                "name": name(fault),
                "base_url": sim_url,
                "model": f"sim+{fault}",
                "max_retries": 1,
                "retry_base_s": 0.01,
                "timeout_s": 0.5,
                "first_token_timeout_s": 0.3,
                "circuit": {"failures": 1000},
            }
            for fault in ALL
        ] + [{"name": "healthy", "base_url": sim_url, "model": "sim"}]
        agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 10**7}}]
        config = make_config(sim_url, agents=agents, routes=[])
        config = config.model_copy(update={"upstreams": [type(config.upstreams[0])(**u) for u in upstreams]})
        with gateway_server(config) as url:
            client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0, timeout=10)

            def used_tokens() -> int:
                usage = httpx.get(
                    f"{url.removesuffix('/v1')}/admin/usage",
                    params={"agent": "agent"},
                    headers={"authorization": f"Bearer {ADMIN_KEY}"},
                ).json()
                return int(usage["windows"][0]["used_tokens"])

            for _ in range(2):
                for fault, status in BEFORE_ANY_BYTE.items():
                    for stream in (False, True):
                        with pytest.raises(openai.APIStatusError) as info:
                            response = client.chat.completions.create(
                                model=name(fault), messages=USER, stream=stream
                            )
                            if stream:
                                list(response)
                        assert info.value.status_code == status, (fault, stream)
                        assert {"message", "type", "code"} <= set(info.value.body)  # type: ignore[arg-type]
                with pytest.raises(openai.InternalServerError):  # a 200 whose body is not JSON
                    client.chat.completions.create(model=name("fault=broken-json"), messages=USER)
            assert used_tokens() == 0  # every failure before the first byte was refunded in full
            for _ in range(2):
                for fault in MID_STREAM:  # what came first is relayed, then an error event ends it
                    received = []
                    with pytest.raises(openai.APIError) as error:
                        for chunk in client.chat.completions.create(
                            model=name(fault), messages=USER, stream=True
                        ):
                            received.append(chunk)
                    assert received and "upstream" in str(error.value)
            assert used_tokens() > 0  # what a cut stream relayed was charged
            healthy = client.chat.completions.create(model="healthy", messages=USER)
            assert healthy.choices[0].message.content
            time.sleep(0.5)
            # hung and broken connections were dropped, not returned to the pool
            assert established(port) <= 2


def chunks_before_the_cut(config: GatewayConfig) -> int:
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        received = []
        with pytest.raises(openai.APIError, match="repeated the same chunk"):
            for chunk in client.chat.completions.create(model="small", messages=USER, stream=True):
                received.append(chunk)
    return len(received)


def test_a_stream_that_repeats_itself_is_cut_off(simulator: tuple[str, object]) -> None:
    sim_url = simulator[0]  # type: ignore[index]
    stutter = {"model": "sim-small+fault=stutter"}
    upstream_limit = make_config(sim_url, upstream_extra={"small": {**stutter, "max_repeated_chunks": 20}})
    assert 20 <= chunks_before_the_cut(upstream_limit) < 40
    agents = [{"id": "agent", "api_key": DEMO_KEY, "loops": {"max_repeated_chunks": 5}}]
    agent_limit = make_config(sim_url, agents=agents, upstream_extra={"small": stutter})
    assert 5 <= chunks_before_the_cut(agent_limit) < 15  # the agent's own limit wins
