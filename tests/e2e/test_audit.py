"""Audit sampling end to end: the reference disagrees with the classifier, live precision falls,
the breach tightens the threshold (or pauses the tier), and feedback that says otherwise
restores it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.intents import make_rows
from tests.servers import gateway_server, until
from tiers.classifier.training import train

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
AGENT = {"authorization": f"Bearer {DEMO_KEY}"}
TEXTS = ["where is my new card", "i lost my card", "i want a refund", "what exchange rate do you use"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "intents.joblib"
    train(make_rows(), folds=5, bound=False).save(path)  # a small example set: the point estimates
    return path


def audited_config(simulator_url: str, model: Path, tmp_path: Path, on_breach: str) -> Any:
    routes = [
        {
            "name": "triage",
            "classifier": {"model": str(model)},
            "llm": ["small", "large"],
            "cache": {"enabled": False},
            "audit": {
                "sample": 1.0,
                "reference": "large",
                "min_precision": 0.8,
                "on_breach": on_breach,
                "min_samples": 5,
                "window": 100,
                "check_interval_s": 0.1,
            },
        }
    ]
    store = {
        "url": f"sqlite:///{tmp_path}/store.db",
        "spool_dir": str(tmp_path / "spool"),
        "ship_interval_s": 0.05,
    }
    agents = [{"id": "agent", "api_key": DEMO_KEY}]
    return make_config(simulator_url, routes=routes, agents=agents, store=store)


def audited_label(decision: str, admin: httpx.Client) -> str:
    return str(admin.get(f"/admin/decisions/{decision}").json()["label"])


def ask(client: openai.OpenAI, text: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="triage", messages=[{"role": "user", "content": text}]
    )
    return raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-decision-id"]


def test_a_disagreeing_reference_tightens_the_threshold_and_feedback_restores_it(
    simulator: tuple[str, Any], model_path: Path, tmp_path: Path
) -> None:
    config = audited_config(simulator[0], model_path, tmp_path, "tighten")
    with gateway_server(config, lambda: config) as url:
        root = url.removesuffix("/v1")
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        answered = [ask(client, text) for text in TEXTS * 2]
        assert {tier for tier, _ in answered} == {"classifier"}
        with httpx.Client(base_url=root, headers=ADMIN) as admin:

            def quality() -> dict[str, Any]:
                return dict(admin.get("/admin/quality", params={"route": "triage"}).json())

            def settled(breached: bool, events: int) -> dict[str, Any]:
                """The report once the monitor's verdict, its events and every decision are stored
                (audits are stored at once; decisions reach the store from the spool)."""
                q = quality()
                stored = q["decisions"]["by_tier"].get("classifier", 0) >= len(answered)
                done = q["audit"]["breached"] == breached and len(q["events"]) == events and stored
                return q if done else {}

            report = until(lambda: settled(breached=True, events=1))
            assert report, quality()
            # the simulated reference answers with no label: every audit disagrees
            assert report["audited"]["precision"] == 0.0 and report["audited"]["weight"] >= 5
            assert report["threshold"]["in_force"] > 1.0 > report["threshold"]["configured"]
            assert [e["kind"] for e in report["events"]] == ["quality.breach"]
            assert report["events"][0]["detail"]["action"] == "tighten"
            assert report["decisions"]["by_tier"]["classifier"] == len(answered)
            audited = admin.get(f"/admin/decisions/{answered[0][1]}").json()["audit"]
            assert audited["agreed"] is False and audited["reference"] == "llm:large"
            assert audited["tier"] == "classifier" and audited["label"] == audited_label(
                answered[0][1], admin
            )
            metrics = httpx.get(f"{root}/metrics").text
            assert 'tiergate_quality_breach{route="triage"} 1.0' in metrics
            # the classifier no longer answers what it answered before, even just after a reload
            assert ask(client, TEXTS[0])[0] == "llm:small"
            assert admin.post("/admin/reload").status_code == 200
            assert ask(client, TEXTS[1])[0] == "llm:small"
            # people who know better say the classifier was right: feedback outweighs the audits
            for _, decision in answered:
                said = httpx.post(
                    f"{root}/v1/feedback", headers=AGENT, json={"decision_id": decision, "correct": True}
                )
                assert said.status_code == 200, said.text
                review = admin.post("/admin/feedback", json={"decision_id": decision, "correct": True})
                assert review.status_code == 200
            report = until(lambda: settled(breached=False, events=2))
            assert report, quality()
            assert report["threshold"]["in_force"] == report["threshold"]["configured"]
            assert [e["kind"] for e in report["events"]] == ["quality.breach", "quality.recovered"]
            assert report["feedback"]["precision"] == 1.0
            assert ask(client, TEXTS[0])[0] == "classifier"


def test_a_breach_can_pause_the_audited_tiers(
    simulator: tuple[str, Any], model_path: Path, tmp_path: Path
) -> None:
    with gateway_server(audited_config(simulator[0], model_path, tmp_path, "pause")) as url:
        root = url.removesuffix("/v1")
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for text in TEXTS * 2:
            assert ask(client, text)[0] == "classifier"
        with httpx.Client(base_url=root, headers=ADMIN) as admin:
            assert until(
                lambda: admin.get("/admin/quality", params={"route": "triage"}).json()["audit"]["breached"]
            )
            tier, decision = ask(client, TEXTS[0])
            assert tier == "llm:large"  # past every audited tier: the classifier and the smaller LLM
            record = until(lambda: admin.get(f"/admin/decisions/{decision}").json())
            skipped = [(a["tier"], a["outcome"]) for a in record["attempts"][:2]]
            assert skipped == [("classifier", "skipped"), ("llm:small", "skipped")]
            assert all("paused" in a["reason"] for a in record["attempts"][:2])
