"""An upstream's own Batch API, against the simulated upstream's: requests gathered into one
provider batch, each answered with its own body or its own error, a Batch API that cannot be
reached, and the provider's delay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.servers import simulator_server
from tiers.errors import UpstreamError
from tiers.llm.provider_batch import ProviderBatches, ProviderBatchSettings
from tiers.llm.simulator import SimulatorSettings


def ask(model: str, text: str) -> bytes:
    return msgspec.json.encode({"model": model, "messages": [{"role": "user", "content": text}]})


async def gathered(base_url: str, bodies: list[bytes], **settings: Any) -> list[Any]:
    async with aiohttp.ClientSession() as session:
        batches = ProviderBatches(
            "small",
            base_url,
            {"authorization": "Bearer sk-upstream"},
            session,
            ProviderBatchSettings(**{"collect_s": 0.1, "poll_s": 0.02, **settings}),
        )
        try:
            return await asyncio.gather(*(batches.complete(b) for b in bodies), return_exceptions=True)
        finally:
            await batches.close()


async def test_requests_close_together_go_as_one_batch_and_each_gets_its_own_answer() -> None:
    with simulator_server() as (url, simulated):
        texts = ["short", "a somewhat longer question about an invoice", "x " * 40]
        outcomes = await gathered(
            url, [ask("sim-small", t) for t in texts] + [ask("sim-small+fault=500", "fails")]
        )
    assert simulated.batches.created == 1 and simulated.batches.lines == 4
    answers = [msgspec.json.decode(o) for o in outcomes[:3]]
    prompts = [a["usage"]["prompt_tokens"] for a in answers]
    assert prompts == sorted(prompts) and len(set(prompts)) == 3  # each its own answer, in order
    failed = outcomes[3]
    assert isinstance(failed, UpstreamError) and failed.status == 500
    assert "answered 500" in failed.message


async def test_a_batch_api_that_cannot_be_reached_fails_each_request_as_retryable() -> None:
    outcomes = await gathered("http://127.0.0.1:1/v1", [ask("sim-small", "hi")] * 2)
    assert all(isinstance(o, UpstreamError) and o.retryable for o in outcomes)


async def test_the_answer_comes_when_the_provider_has_run_the_batch() -> None:
    with simulator_server(SimulatorSettings(batch_delay_s=0.5)) as (url, _):
        began = time.monotonic()
        [answer] = await gathered(url, [ask("sim-small", "hello")])
    assert time.monotonic() - began >= 0.5
    assert msgspec.json.decode(answer)["object"] == "chat.completion"


@pytest.mark.parametrize("max_lines", [2])
async def test_a_full_batch_is_sent_without_waiting_out_the_collection_time(max_lines: int) -> None:
    with simulator_server() as (url, simulated):
        began = time.monotonic()
        outcomes = await gathered(url, [ask("sim-small", "hi")] * 4, collect_s=30, max_lines=max_lines)
    assert time.monotonic() - began < 10
    assert simulated.batches.created == 2 and all(isinstance(o, bytes) for o in outcomes)
