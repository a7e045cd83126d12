"""Human approval through a real gateway, with the official `openai` client: held answers are
approved, edited or rejected by a reviewer; a pending one is 409 and the SDK's own retry gets the
decision; approvals expire; trust is earned and revoked; a restarted gateway, or a second one on
the same store, serves the decision."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.governance.export import training_rows
from gateway.store.engine import create_engine
from gateway.store.sql import SqlStore
from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config, store_settings
from tests.servers import gateway_server, until, webhook_server

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def refund_tool(amount: int) -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"amount": {"type": "number", "enum": [amount]}}}
    return [{"type": "function", "function": {"name": "issue_refund", "parameters": schema}}]


def approval_config(
    simulator_url: str,
    store_url: str,
    tmp_path: Any,
    hook: str | None = None,
    autonomy: str = "standard",
    **policy: Any,
) -> Any:
    approval = {
        "when": [
            {"tool_call": "issue_refund", "args": {"amount": {"gt": 500}}},
            {"metadata": {"impact": "high"}},
        ],
        "hold_s": 5,
        **policy,
    }
    return make_config(
        simulator_url,
        store=store_settings(store_url, tmp_path),
        server={"admin_key": ADMIN_KEY},
        routes=[
            {
                "name": "triage",
                "rules": [
                    {"when": {"last_user_matches": "(?i)reset (my )?password"}, "answer": "account_access"}
                ],
                "llm": ["small", "large"],
                "approval": approval,
            },
            {"name": "auto", "llm": ["small", "large"]},
        ],
        approvals={"webhook_url": hook, "expiry_check_s": 0.2},
        agents=[
            {"id": "agent", "api_key": DEMO_KEY, "routes": ["triage", "auto"], "autonomy": autonomy},
            {"id": "other", "api_key": OTHER_KEY, "routes": ["auto"]},
        ],
    )


async def exported(store_url: str) -> list[Any]:
    store = SqlStore(create_engine(store_url))
    try:
        return await training_rows(store, "triage", None)
    finally:
        await store.close()


def root(url: str) -> str:
    return url.removesuffix("/v1")


def refund(client: openai.OpenAI, amount: int, text: str = "refund my order", **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="triage",
        messages=[{"role": "user", "content": text}],
        tools=refund_tool(amount),  # type: ignore[arg-type]
        tool_choice="required",
        **extra,
    )


def urgent(client: openai.OpenAI, text: str = "reset my password", **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="triage", messages=[{"role": "user", "content": text}], metadata={"impact": "high"}, **extra
    )


@contextmanager
def reviewer(url: str, decide: Callable[[httpx.Client, dict[str, Any]], None]) -> Iterator[list[str]]:
    """A reviewer in the background: decides the first pending approval it sees."""
    decided: list[str] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            while not stop.is_set() and not decided:
                pending = admin.get("/admin/approvals", params={"status": "pending"}).json()["data"]
                if pending:
                    decide(admin, pending[0])
                    decided.append(pending[0]["id"])
                time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield decided
    finally:
        stop.set()
        thread.join(10)


def approve(admin: httpx.Client, approval: dict[str, Any]) -> None:
    assert admin.post(f"/admin/approvals/{approval['id']}", json={"decision": "approve"}).status_code == 200


def test_a_large_refund_waits_for_approval_and_a_small_one_does_not(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    with (
        webhook_server() as (hook, received),
        gateway_server(approval_config(simulator[0], store_url, tmp_path, hook)) as url,
    ):
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        small = refund(client, 100)
        assert "x-tiergate-approval" not in small.headers
        assert small.parse().choices[0].message.tool_calls[0].function.name == "issue_refund"
        with reviewer(url, approve) as decided:
            raw = refund(client, 750)
        answer = raw.parse()
        assert raw.headers["x-tiergate-approval"] == "approved"
        assert raw.headers["x-tiergate-approval-id"] == decided[0]
        assert answer.choices[0].message.tool_calls[0].function.arguments == '{"amount":750}'
        [event] = received
        assert event["event"] == "approval.requested" and event["id"] == decided[0]
        assert event["agent"] == "agent" and event["route"] == "triage"
        assert "issue_refund" in event["reason"] and "amount gt 500" in event["reason"]
        assert str(event["link"]).endswith(f"/admin/approvals/{decided[0]}")
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            again = admin.post(f"/admin/approvals/{decided[0]}", json={"decision": "reject"})
            assert again.status_code == 409 and again.json()["error"]["code"] == "approval_decided"
            shown = admin.get(f"/admin/approvals/{decided[0]}").json()
            assert shown["status"] == "approved" and shown["delivered"] is True
            assert shown["decision_id"] == raw.headers["x-tiergate-decision-id"]
            assert shown["request"]["tools"][0]["function"]["name"] == "issue_refund"
            # the reviewer's approval is feedback on the decision
            decision = until(
                lambda: admin.get(f"/admin/decisions/{shown['decision_id']}").json().get("feedback")
            )
            assert decision[0]["source"] == "reviewer" and decision[0]["agreed"] is True


def test_an_edit_is_delivered_and_becomes_the_label(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    def edit(admin: httpx.Client, approval: dict[str, Any]) -> None:
        body = {"decision": "edit", "content": "billing", "reason": "it is about a charge"}
        assert admin.post(f"/admin/approvals/{approval['id']}", json=body).status_code == 200

    with gateway_server(approval_config(simulator[0], store_url, tmp_path)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with reviewer(url, edit):
            raw = urgent(client)
        assert raw.parse().choices[0].message.content == "billing"
        assert raw.headers["x-tiergate-approval"] == "edited"
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            decision_id = raw.headers["x-tiergate-decision-id"]
            said = until(lambda: admin.get(f"/admin/decisions/{decision_id}").json().get("feedback"))
            assert said[0]["label"] == "billing" and said[0]["correct"] is False
            assert said[0]["comment"] == "it is about a charge"
        # the edited label is a training row
        rows = until(lambda: asyncio.run(exported(store_url)))
        assert [(r.text, r.label, r.source) for r in rows] == [("reset my password", "billing", "reviewer")]
        # the agent may read its approval; another agent may not
        mine = httpx.get(
            f"{url}/approvals/{raw.headers['x-tiergate-approval-id']}",
            headers={"authorization": f"Bearer {DEMO_KEY}"},
        ).json()
        assert mine["status"] == "edited" and mine["answer"]["choices"][0]["message"]["content"] == "billing"
        theirs = httpx.get(
            f"{url}/approvals/{raw.headers['x-tiergate-approval-id']}",
            headers={"authorization": f"Bearer {OTHER_KEY}"},
        )
        assert theirs.status_code == 404


def test_a_rejection_is_403_with_the_reviewers_reason(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    def reject(admin: httpx.Client, approval: dict[str, Any]) -> None:
        body = {"decision": "reject", "reason": "refunds over 500 need a manager"}
        assert admin.post(f"/admin/approvals/{approval['id']}", json=body).status_code == 200

    with gateway_server(approval_config(simulator[0], store_url, tmp_path)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with reviewer(url, reject), pytest.raises(openai.PermissionDeniedError) as refused:
            refund(client, 900)
        assert refused.value.code == "approval_rejected"
        assert "refunds over 500 need a manager" in refused.value.message
        assert refused.value.response.headers["x-tiergate-approval-id"]


def test_pending_is_409_and_the_sdks_own_retry_gets_the_decision(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    config = approval_config(simulator[0], store_url, tmp_path, hold_s=0.3)
    with gateway_server(config) as url:
        quick = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.ConflictError) as pending:
            refund(quick, 800, text="refund order 1")
        assert pending.value.code == "approval_pending"
        approval_id = pending.value.response.headers["x-tiergate-approval-id"]
        assert pending.value.body["approval_id"] == approval_id  # type: ignore[index]
        assert pending.value.response.headers["retry-after"] == "1"
        # the held LLM answer was charged when it was generated
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            decision_id = admin.get(f"/admin/approvals/{approval_id}").json()["decision_id"]
            record = admin.get(f"/admin/decisions/{decision_id}").json()
            assert (
                record["tier"] == "llm:small" and record["completion_tokens"] > 0 and record["cost_usd"] > 0
            )
        # the same request again: no tier runs again, and it is still pending
        with pytest.raises(openai.ConflictError) as still:
            refund(quick, 800, text="refund order 1")
        assert still.value.response.headers["x-tiergate-approval-id"] == approval_id

        def later() -> None:
            time.sleep(0.8)
            httpx.post(
                f"{root(url)}/admin/approvals/{approval_id}", json={"decision": "approve"}, headers=ADMIN
            )

        threading.Thread(target=later).start()
        patient = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=3)
        raw = refund(patient, 800, text="refund order 1")
        assert raw.headers["x-tiergate-approval"] == "approved"
        assert raw.headers["x-tiergate-approval-id"] == approval_id
        # streamed, the held answer comes as a stream once approved
        with reviewer(url, approve):
            stream = patient.chat.completions.create(
                model="triage",
                messages=[{"role": "user", "content": "refund order 2"}],
                tools=refund_tool(800),  # type: ignore[arg-type]
                tool_choice="required",
                stream=True,
            )
            chunks = list(stream)
        calls = [c for chunk in chunks for c in (chunk.choices[0].delta.tool_calls or []) if chunk.choices]
        assert calls[0].function.name == "issue_refund" and calls[0].function.arguments == '{"amount":800}'


def test_an_approval_nobody_decides_expires(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    config = approval_config(simulator[0], store_url, tmp_path, hold_s=0.1, expire_s=0.5)
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.ConflictError) as pending:
            urgent(client)
        approval_id = pending.value.response.headers["x-tiergate-approval-id"]
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            # expired by the gateway itself, though nobody asks again
            status = until(
                lambda: admin.get(f"/admin/approvals/{approval_id}").json()["status"] == "expired", 5
            )
            assert status
            late = admin.post(f"/admin/approvals/{approval_id}", json={"decision": "approve"})
            assert late.status_code == 409
        with pytest.raises(openai.PermissionDeniedError) as expired:
            client.chat.completions.create(
                model="triage",
                messages=[{"role": "user", "content": "anything"}],
                extra_headers={"x-tiergate-approval-id": approval_id},
            )
        assert expired.value.code == "approval_expired"


def test_trust_is_earned_and_one_rejection_revokes_it(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    config = approval_config(
        simulator[0], store_url, tmp_path, hold_s=5, trust={"after": 2, "review_sample": 1.0}
    )
    with gateway_server(config) as url, httpx.Client(base_url=root(url), headers=ADMIN) as admin:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for n in range(2):
            with reviewer(url, approve):
                assert urgent(client, f"reset my password ({n})").headers["x-tiergate-approval"] == "approved"
        [trust] = admin.get("/admin/approvals/trust").json()["data"]
        assert trust["agent"] == "agent" and trust["trusted"] is True and trust["streak"] == 2
        assert "impact" in trust["condition"]
        began = time.monotonic()
        trusted = urgent(client, "reset my password (2)")
        assert time.monotonic() - began < 2  # nobody had to decide
        assert trusted.headers["x-tiergate-approval"] == "approved"
        assert trusted.headers["x-tiergate-approval-trusted"] == "true"
        # sampled for a look after the fact; the reviewer rejects it, which revokes the trust
        [queued] = admin.get("/admin/approvals", params={"review": "true"}).json()["data"]
        assert queued["id"] == trusted.headers["x-tiergate-approval-id"] and queued["automatic"] is True
        body = {"decision": "reject", "reason": "should not have reset"}
        assert admin.post(f"/admin/approvals/{queued['id']}", json=body).status_code == 200
        [trust] = admin.get("/admin/approvals/trust").json()["data"]
        assert trust["trusted"] is False and trust["streak"] == 0 and "rejected" in trust["reason"]
        assert admin.get("/admin/approvals", params={"review": "true"}).json()["data"] == []
        with reviewer(url, approve) as decided:
            held = urgent(client, "reset my password (3)")
        assert decided and held.headers["x-tiergate-approval-id"] == decided[0]
        assert "x-tiergate-approval-trusted" not in held.headers


def test_bad_input_gets_clear_errors(simulator: tuple[str, Any], store_url: str, tmp_path: Any) -> None:
    config = approval_config(simulator[0], store_url, tmp_path, hold_s=0.1)
    with gateway_server(config) as url, httpx.Client(base_url=root(url), headers=ADMIN) as admin:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.ConflictError) as pending:
            urgent(client)
        approval_id = pending.value.response.headers["x-tiergate-approval-id"]
        for body, param in (
            ({"decision": "maybe"}, "decision"),
            ({}, "decision"),
            ({"decision": "edit"}, "content"),
            ({"decision": "approve", "content": "x"}, "content"),
            ({"decision": "approve", "extra": 1}, "extra"),
        ):
            answer = admin.post(f"/admin/approvals/{approval_id}", json=body)
            assert answer.status_code == 400, body
            assert answer.json()["error"]["param"] == param, body
        assert admin.post(f"/admin/approvals/{approval_id}", content=b"{not json").status_code == 400
        assert admin.get(f"/admin/approvals/{approval_id}").json()["status"] == "pending"  # nothing changed
        unknown = admin.post("/admin/approvals/nope", json={"decision": "approve"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "approval_not_found"
        assert admin.get("/admin/approvals", params={"status": "maybe"}).status_code == 400
        assert (
            httpx.post(f"{root(url)}/admin/approvals/{approval_id}", json={"decision": "approve"}).status_code
            == 401
        )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="triage",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-tiergate-approval-id": "nope"},
            )


def test_a_restarted_gateway_serves_the_decision_of_a_pending_approval(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    config = approval_config(simulator[0], store_url, tmp_path, hold_s=0.1)
    with gateway_server(config) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.ConflictError) as pending:
            refund(client, 700)
        approval_id = pending.value.response.headers["x-tiergate-approval-id"]
    with gateway_server(config) as url:  # the same store, a new process's worth of state
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            assert admin.get(f"/admin/approvals/{approval_id}").json()["status"] == "pending"
            assert (
                admin.post(f"/admin/approvals/{approval_id}", json={"decision": "approve"}).status_code == 200
            )
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = refund(client, 700)  # the same request again: the decision, no tier run again
        assert raw.headers["x-tiergate-approval"] == "approved"
        assert raw.headers["x-tiergate-approval-id"] == approval_id


def test_a_decision_taken_on_one_gateway_reaches_a_request_held_on_another(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    first = approval_config(simulator[0], store_url, tmp_path / "a")
    second = approval_config(simulator[0], store_url, tmp_path / "b")
    with gateway_server(first) as one, gateway_server(second) as two:
        with reviewer(two, approve) as decided:  # the reviewer uses the second gateway
            raw = refund(openai.OpenAI(base_url=one, api_key=DEMO_KEY, max_retries=0), 650)
        assert raw.headers["x-tiergate-approval"] == "approved"
        assert raw.headers["x-tiergate-approval-id"] == decided[0]


def test_a_supervised_agent_never_earns_trust_and_a_trusted_one_starts_with_it(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    trust = {"after": 1, "review_sample": 0.0}
    supervised = approval_config(
        simulator[0], store_url, tmp_path / "s", autonomy="supervised", hold_s=5, trust=trust
    )
    with gateway_server(supervised) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for n in range(2):  # each one asks, however many were approved
            with reviewer(url, approve) as decided:
                raw = urgent(client, f"reset my password ({n})")
            assert decided and "x-tiergate-approval-trusted" not in raw.headers
    trusted = approval_config(
        simulator[0], store_url, tmp_path / "t", autonomy="trusted", hold_s=5, trust=trust
    )
    with gateway_server(trusted) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = refund(client, 990)  # a condition this agent never met before
        assert raw.headers["x-tiergate-approval-trusted"] == "true"
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:
            shown = admin.get(f"/admin/approvals/{raw.headers['x-tiergate-approval-id']}").json()
            assert shown["status"] == "approved" and shown["automatic"] is True and shown["review"] is None


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_the_other_apis_wait_for_the_same_approval(
    simulator: tuple[str, Any], tmp_path: Any, api: str
) -> None:
    """A held answer is held whichever API asked: the agent gets it, approved, in its own shape."""
    config = approval_config(simulator[0], f"sqlite:///{tmp_path}/store.db", tmp_path)
    parameters = refund_tool(750)[0]["function"]["parameters"]
    with gateway_server(config) as url, reviewer(url, approve) as decided:
        if api == "responses":
            client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
            raw = client.responses.with_raw_response.create(
                model="triage",
                input="refund my order",
                tools=[{"type": "function", "name": "issue_refund", "parameters": parameters}],  # type: ignore[list-item]
                tool_choice="required",
            )
            [call] = [item for item in raw.parse().output if item.type == "function_call"]
            arguments = call.arguments
        else:
            claude = anthropic.Anthropic(base_url=root(url), api_key=DEMO_KEY, max_retries=0)
            raw = claude.messages.with_raw_response.create(
                model="triage",
                max_tokens=200,
                messages=[{"role": "user", "content": "refund my order"}],
                tools=[{"name": "issue_refund", "input_schema": parameters}],  # type: ignore[list-item]
                tool_choice={"type": "any"},
            )
            [use] = [block for block in raw.parse().content if block.type == "tool_use"]
            arguments = json.dumps(use.input, separators=(",", ":"))
    assert raw.headers["x-tiergate-approval"] == "approved"
    assert raw.headers["x-tiergate-approval-id"] == decided[0]
    assert arguments == '{"amount":750}'
