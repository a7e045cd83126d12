"""The Batch API with the official `openai` client: upload, create, poll, download, cancel; lines
answered by rules at once and LLM lines inside windows; a window that opens on a reload; a gateway
restarted mid-batch answers every line once; bad input gets clear errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import openai
import pytest

from gateway.config.models import GatewayConfig
from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config, store_settings
from tests.servers import gateway_server, until

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def closed_window() -> list[str]:
    """A window of the day that does not hold the next few minutes."""
    start = datetime.now(UTC) + timedelta(hours=2)
    end = start + timedelta(hours=1)
    return [f"{start:%H:%M}-{end:%H:%M}"]


def batch_config(
    simulator_url: str, store_url: str, tmp_path: Any, windows: list[str] | None = None, **batch: Any
) -> GatewayConfig:
    return make_config(
        simulator_url,
        store=store_settings(store_url, tmp_path),
        batch={"windows": windows or [], "poll_s": 0.05, "files_dir": str(tmp_path / "files"), **batch},
    )


def line(custom_id: str, model: str, text: str) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return msgspec.json.encode(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


def jsonl(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def submit(client: openai.OpenAI, content: bytes) -> Any:
    uploaded = client.files.create(file=("requests.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def settled(client: openai.OpenAI, batch_id: str, status: str = "completed") -> Any:
    return until(lambda: (b := client.batches.retrieve(batch_id)).status == status and b, timeout_s=15)


def read(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    return {
        e["custom_id"]: e for e in map(msgspec.json.decode, client.files.content(file_id).text.splitlines())
    }


def test_a_batch_runs_every_line_and_reports_each_once(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    with gateway_server(batch_config(simulator[0], store_url, tmp_path)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        content = jsonl(
            line("rules", "triage", "please reset my password"),
            line("llm", "triage", "my invoice is wrong"),
            line("auto", "auto", "hello"),
            b'{"custom_id": "broken", "method": "POST"',
            line("nowhere", "no-such-model", "hi"),
        )
        batch = submit(client, content)
        assert batch.status == "validating" and batch.request_counts.total == 5
        done = settled(client, batch.id)
        assert done.request_counts.completed == 3 and done.request_counts.failed == 2
        assert done.completed_at is not None and done.in_progress_at is not None
        output = read(client, done.output_file_id)
        assert set(output) == {"rules", "llm", "auto"}
        assert output["rules"]["response"]["body"]["choices"][0]["message"]["content"] == "account_access"
        assert all(e["response"]["status_code"] == 200 and e["error"] is None for e in output.values())
        errors = read(client, done.error_file_id)
        assert errors["line-4"]["error"]["code"] == "invalid_request"
        assert errors["nowhere"]["response"]["status_code"] == 404
        # the lines ran through the request path, in the background lane
        decision = output["llm"]["response"]["request_id"]
        with httpx.Client(base_url=url.removesuffix("/v1"), headers=ADMIN) as admin:
            record = admin.get(f"/admin/decisions/{decision}").json()
        assert record["lane"] == "background" and record["tier"] == "llm:small"
        assert [b.id for b in client.batches.list()] == [batch.id]


def test_llm_lines_wait_for_a_window_and_a_cancel_ends_the_batch(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    config = batch_config(simulator[0], store_url, tmp_path, closed_window())
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        batch = submit(client, jsonl(line("rules", "triage", "reset my password"), line("llm", "auto", "hi")))
        progress = until(lambda: client.batches.retrieve(batch.id).request_counts.completed == 1)
        assert progress
        time.sleep(0.5)  # the LLM line waits for its window
        waiting = client.batches.retrieve(batch.id)
        assert waiting.status == "in_progress" and waiting.request_counts.completed == 1
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        cancelled = settled(client, batch.id, "cancelled")
        assert cancelled.cancelled_at is not None
        assert set(read(client, cancelled.output_file_id)) == {"rules"}
        assert read(client, cancelled.error_file_id)["llm"]["error"]["code"] == "batch_cancelled"


def test_a_window_that_opens_on_a_reload_runs_the_waiting_lines_and_one_that_closes_stops_them(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    windows = [closed_window()]
    with gateway_server(
        batch_config(simulator[0], store_url, tmp_path, windows[0]),
        lambda: batch_config(simulator[0], store_url, tmp_path, windows[0]),
    ) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        batch = submit(client, jsonl(line("llm", "auto", "hi")))
        time.sleep(0.5)
        assert client.batches.retrieve(batch.id).request_counts.completed == 0
        windows[0] = []  # always open
        reloaded = httpx.post(f"{url.removesuffix('/v1')}/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200
        assert settled(client, batch.id).request_counts.completed == 1
        windows[0] = closed_window()  # and closes again
        assert httpx.post(f"{url.removesuffix('/v1')}/admin/reload", headers=ADMIN).status_code == 200
        later = submit(client, jsonl(line("llm", "auto", "hello again")))
        time.sleep(0.5)
        assert client.batches.retrieve(later.id).request_counts.completed == 0


def test_a_gateway_restarted_mid_batch_answers_every_line_once(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    content = jsonl(
        *(line(f"q{i}", "auto" if i % 2 else "triage", f"reset my password {i}") for i in range(40))
    )
    with gateway_server(batch_config(simulator[0], store_url, tmp_path, closed_window())) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        batch = submit(client, content)
        assert until(lambda: client.batches.retrieve(batch.id).request_counts.completed == 20)
    with gateway_server(batch_config(simulator[0], store_url, tmp_path)) as url:  # the window is open
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        done = settled(client, batch.id)
        output = client.files.content(done.output_file_id).text.splitlines()
        assert sorted(msgspec.json.decode(e)["custom_id"] for e in output) == sorted(
            f"q{i}" for i in range(40)
        )
        assert done.request_counts.completed == 40 and done.error_file_id is None


def test_bad_input_gets_clear_errors(simulator: tuple[str, Any], store_url: str, tmp_path: Any) -> None:
    config = batch_config(simulator[0], store_url, tmp_path, max_file_mb=0.001)
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as wrong:
            client.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
        assert wrong.value.body["param"] == "purpose"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as large:
            client.files.create(file=("x.jsonl", b"x" * 5000), purpose="batch")
        assert large.value.status_code == 413
        twice = client.files.create(
            file=("x.jsonl", jsonl(line("a", "auto", "x"), line("a", "auto", "y"))), purpose="batch"
        )
        with pytest.raises(openai.BadRequestError) as duplicate:
            client.batches.create(
                input_file_id=twice.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert "appears twice" in duplicate.value.message
        with pytest.raises(openai.BadRequestError):
            client.batches.create(input_file_id=twice.id, endpoint="/v1/embeddings", completion_window="24h")  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            client.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )
        other = openai.OpenAI(base_url=url, api_key=OTHER_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(twice.id)
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_nope")


def test_with_when_idle_an_idle_gateway_runs_llm_lines_outside_the_windows(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    config = batch_config(simulator[0], store_url, tmp_path, closed_window(), when_idle=True)
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        batch = submit(client, jsonl(line("llm", "auto", "hi")))
        assert settled(client, batch.id).request_counts.completed == 1


def test_llm_lines_go_to_an_upstreams_own_batch_api_as_one_provider_batch_at_its_price(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    sim_url, simulated = simulator
    config = make_config(
        sim_url,
        store=store_settings(store_url, tmp_path),
        batch={"windows": closed_window(), "poll_s": 0.05, "files_dir": str(tmp_path / "files")},
        upstream_extra={"small": {"batch_api": True, "batch_collect_s": 0.3, "batch_poll_s": 0.05}},
        agents=[
            {
                "id": "agent",
                "api_key": DEMO_KEY,
                "routes": ["triage", "auto"],
                "budget": {"tokens_per_day": 100_000},
            }
        ],
    )
    provider_batches, provider_lines = simulated.batches.created, simulated.batches.lines
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        live = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert live.usage is not None  # a live request is not deferred: it goes to the chat endpoint
        content = jsonl(
            line("rules", "triage", "please reset my password"),
            *(line(f"llm-{i}", "auto", f"summarise ticket {i}") for i in range(4)),
        )
        # outside every window: the lines go to the provider's Batch API, which has its own
        done = settled(client, submit(client, content).id)
        assert done.request_counts.completed == 5 and done.request_counts.failed == 0
        output = read(client, done.output_file_id)
        with httpx.Client(base_url=url.removesuffix("/v1"), headers=ADMIN) as admin:
            records = {
                key: admin.get(f"/admin/decisions/{entry['response']['request_id']}").json()
                for key, entry in output.items()
            }
            usage = admin.get("/admin/usage", params={"agent": "agent"}).json()
    assert simulated.batches.created - provider_batches == 1  # the four LLM lines, as one batch
    assert simulated.batches.lines - provider_lines == 4
    assert records["rules"]["tier"] == "rules"
    spent = 0
    for i in range(4):
        record, answer = records[f"llm-{i}"], output[f"llm-{i}"]["response"]["body"]
        assert record["tier"] == "llm:small" and record["lane"] == "background"
        tokens = answer["usage"]
        assert (record["prompt_tokens"], record["completion_tokens"]) == (
            tokens["prompt_tokens"],
            tokens["completion_tokens"],
        )
        # half the live price (1 and 2 dollars per million tokens): the provider's batch price
        expected = (tokens["prompt_tokens"] * 0.5 + tokens["completion_tokens"] * 1.0) / 1e6
        assert record["cost_usd"] == pytest.approx(expected, rel=1e-3)
        spent += tokens["total_tokens"]
    day = next(w for w in usage["windows"] if w["window"] == "day")
    assert day["used_tokens"] == spent + live.usage.total_tokens  # the budget charged exactly
