"""The decision store through a real gateway: records reach it from the spool, the decisions API
reads them across workers' lifetimes, and agents and reviewers post feedback."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config, store_settings
from tests.servers import gateway_server, until

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
RESET = [{"role": "user", "content": "please reset my password"}]


def store_config(simulator_url: str, store_url: str, tmp_path: Any, **extra: Any) -> Any:
    return make_config(
        simulator_url, store=store_settings(store_url, tmp_path, **extra), server={"admin_key": ADMIN_KEY}
    )


def root(url: str) -> str:
    return url.removesuffix("/v1")


def test_decisions_are_listed_filtered_and_paged_from_the_store(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    with gateway_server(store_config(simulator[0], store_url, tmp_path)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        ids = []
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="triage", messages=RESET)
            ids.append(raw.headers["x-tiergate-decision-id"])
        other = openai.OpenAI(base_url=url, api_key=OTHER_KEY, max_retries=0)
        other.chat.completions.create(model="auto", messages=RESET)
        with httpx.Client(base_url=root(url), headers=ADMIN) as admin:

            def listed() -> list[dict[str, Any]]:
                return admin.get("/admin/decisions", params={"limit": 100}).json()["data"]

            assert len(until(lambda: len(listed()) == 4 and listed())) == 4
            first = admin.get("/admin/decisions", params={"agent": "agent", "limit": 2}).json()
            assert [d["id"] for d in first["data"]] == ids[::-1][:2]
            rest = admin.get(
                "/admin/decisions", params={"agent": "agent", "limit": 2, "cursor": first["next_cursor"]}
            ).json()
            assert [d["id"] for d in rest["data"]] == ids[:1]
            assert rest["next_cursor"] is None
            rules = admin.get("/admin/decisions", params={"tier": "rules", "route": "triage"}).json()["data"]
            assert {d["id"] for d in rules} == set(ids)
            assert all(d["label"] == "account_access" for d in rules)
            one = admin.get(f"/admin/decisions/{ids[0]}").json()
            assert one["id"] == ids[0] and one["tier"] == "rules" and one["feedback"] == []
            assert one["audit"] is None
            since = admin.get("/admin/decisions", params={"since": "2999-01-01T00:00:00Z"}).json()
            assert since["data"] == [] and since["next_cursor"] is None
            for params, param in (
                ({"limit": "0"}, "limit"),
                ({"status": "x"}, "status"),
                ({"since": "yesterday"}, "since"),
                ({"cursor": "!!"}, "cursor"),
                ({"agnet": "a"}, "agnet"),
            ):
                answer = admin.get("/admin/decisions", params=params)
                assert answer.status_code == 400, params
                assert answer.json()["error"]["param"] == param
            missing = admin.get("/admin/decisions/" + "0" * 32)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "decision_not_found"
            assert httpx.get(root(url) + "/admin/decisions").status_code == 401
            for params, status, param in (
                ({}, 400, "route"),
                ({"route": "nope"}, 404, "route"),
                ({"route": "triage", "since": "soon"}, 400, "since"),
            ):
                answer = admin.get("/admin/quality", params=params)
                assert answer.status_code == status and answer.json()["error"]["param"] == param
            quality = admin.get("/admin/quality", params={"route": "triage"}).json()
            assert quality["decisions"]["by_tier"] == {"rules": 3}
            assert quality["decisions"]["coverage"] == 1.0 and quality["audit"] is None


def test_feedback_from_agents_and_reviewers(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any
) -> None:
    with gateway_server(store_config(simulator[0], store_url, tmp_path)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="triage", messages=RESET)
        decision = raw.headers["x-tiergate-decision-id"]
        agent = {"authorization": f"Bearer {DEMO_KEY}"}
        with httpx.Client(base_url=root(url)) as http:
            # posted at once: the decision may still be in the spool
            said = http.post("/v1/feedback", headers=agent, json={"decision_id": decision, "correct": True})
            assert said.status_code == 200, said.text
            assert said.json()["source"] == "agent" and said.json()["route"] == "triage"
            again = {"decision_id": decision, "label": "billing", "correct": False}
            assert http.post("/v1/feedback", headers=agent, json=again).status_code == 200
            review = {"decision_id": decision, "score": 0.2, "comment": "wrong queue"}
            assert http.post("/admin/feedback", headers=ADMIN, json=review).status_code == 200
            found = until(lambda: http.get(f"/admin/decisions/{decision}", headers=ADMIN).json())
            feedback = {f["source"]: f for f in found["feedback"]}
            assert feedback["agent"]["label"] == "billing" and feedback["agent"]["correct"] is False
            assert feedback["reviewer"]["comment"] == "wrong queue"
            # another agent's decision is as unknown as one that never was
            stranger = {"authorization": f"Bearer {OTHER_KEY}"}
            denied = http.post(
                "/v1/feedback", headers=stranger, json={"decision_id": decision, "correct": True}
            )
            assert denied.status_code == 404
            assert denied.json()["error"]["param"] == "decision_id"
            for body, param in (
                ({"decision_id": decision}, "label"),
                ({"decision_id": decision, "correct": "yes"}, "correct"),
                ({"decision_id": decision, "label": ""}, "label"),
                ({"decision_id": decision, "colour": "red"}, "colour"),
                ({"correct": True}, "decision_id"),
            ):
                bad = http.post("/v1/feedback", headers=agent, json=body)
                assert bad.status_code == 400, body
                assert bad.json()["error"]["param"] == param, bad.json()
            assert (
                http.post("/v1/feedback", json={"decision_id": decision, "correct": True}).status_code == 401
            )
            # nothing that was refused changed what is stored
            after = http.get(f"/admin/decisions/{decision}", headers=ADMIN).json()["feedback"]
            assert after == found["feedback"]


def test_feedback_without_a_store_says_so(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0])) as url, httpx.Client(base_url=root(url)) as http:
        answer = http.post(
            "/v1/feedback",
            headers={"authorization": f"Bearer {DEMO_KEY}"},
            json={"decision_id": "0" * 32, "correct": True},
        )
        assert answer.status_code == 501
        assert answer.json()["error"]["code"] == "not_configured"
