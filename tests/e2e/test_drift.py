"""Drift alarms: traffic shifts away from what the classifier was trained on, and the route's
window says so against the baseline kept in the model file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.intents import make_rows
from tests.servers import gateway_server
from tiers.classifier.model import ClassifierModel
from tiers.classifier.training import train

pytestmark = pytest.mark.e2e
SHIFTED = [
    f"{a} {b} recipe with {c} tonight"
    for a in ("spicy", "vegan", "smoky", "crispy", "creamy", "zesty")
    for b in ("lentil", "mushroom", "pumpkin", "walnut", "saffron")
    for c in ("oregano", "thyme")
]


def test_shifted_traffic_raises_a_drift_alarm(simulator: tuple[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "intents.joblib"
    train(make_rows(), folds=5).save(path)
    assert "baseline" in ClassifierModel.load(path).metrics["out_of_fold"]
    routes = [
        {
            "name": "triage",
            "classifier": {"model": str(path)},
            "llm": ["small"],
            "cache": {"enabled": False},
            "drift": {"window": 60, "min_decisions": 30, "check_interval_s": 0.1},
        }
    ]
    store = {
        "url": f"sqlite:///{tmp_path}/store.db",
        "spool_dir": str(tmp_path / "spool"),
        "ship_interval_s": 0.05,
    }
    config = make_config(
        simulator[0], routes=routes, agents=[{"id": "agent", "api_key": DEMO_KEY}], store=store
    )
    with gateway_server(config) as url:
        root = url.removesuffix("/v1")
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for text in SHIFTED[:60]:
            client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}])
        with httpx.Client(base_url=root, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            deadline = time.monotonic() + 10
            while True:
                report = admin.get("/admin/quality", params={"route": "triage"}).json()
                kinds = {(e["kind"], e["detail"].get("signal")) for e in report["events"]}
                if ("drift.significant", "unseen") in kinds or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert ("drift.significant", "unseen") in kinds, report
            assert report["drift"]["signals"]["unseen"]["band"] == "significant"
            assert report["drift"]["decisions"] >= 30
        metrics = httpx.get(f"{root}/metrics").text
        assert 'tiergate_drift_psi{route="triage",signal="unseen"}' in metrics
