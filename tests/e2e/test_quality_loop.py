"""The quality loop as an operator runs it, with the official client: answers, feedback,
export, retrain, compare, a shadow beside the model in force, and its promotion by reload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.config.loading import load_config
from tests.conftest import ADMIN_KEY, DEMO_KEY
from tests.intents import make_rows, write_csv
from tests.servers import gateway_server, until
from tiers.classifier.training import train

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
AGENT = {"authorization": f"Bearer {DEMO_KEY}"}
CORRECTIONS = {
    "my plastic never showed up in the post": "card_arrival",
    "the courier lost the envelope with my debit card": "card_arrival",
    "give back the money for the broken toaster": "refund",
    "reverse the payment to the shop please": "refund",
}


def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def write(path: Path, simulator_url: str, tmp_path: Path, classifier: dict[str, str]) -> Path:
    config = {
        "server": {"admin_key": ADMIN_KEY},
        "upstreams": [
            {"name": "small", "base_url": simulator_url, "model": "sim-small"},
            {"name": "large", "base_url": simulator_url, "model": "sim-large"},
        ],
        "agents": [{"id": "agent", "api_key": DEMO_KEY}],
        "routes": [
            {
                "name": "triage",
                "classifier": classifier,
                "llm": ["small", "large"],
                "cache": {"enabled": False},
            }
        ],
        "store": {
            "url": f"sqlite:///{tmp_path}/store.db",
            "spool_dir": str(tmp_path / "spool"),
            "ship_interval_s": 0.05,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_feedback_export_retrain_compare_shadow_and_promote(
    simulator: tuple[str, Any], tmp_path: Path
) -> None:
    base = write_csv(tmp_path / "base.csv", make_rows(n_per_intent=20, seed=3))
    held_out = write_csv(tmp_path / "held-out.csv", make_rows(n_per_intent=10, seed=4, out_of_scope=10))
    first, candidate = tmp_path / "first.joblib", tmp_path / "candidate.joblib"
    train(make_rows(n_per_intent=20, seed=3), folds=5, bound=False).save(first)  # small: point estimates
    path = write(tmp_path / "gateway.yaml", simulator[0], tmp_path, {"model": str(first)})
    with gateway_server(load_config(str(path), {}), lambda: load_config(str(path), {})) as url:
        root = url.removesuffix("/v1")
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with httpx.Client(base_url=root) as http:
            # 1. answers, and the agent's corrections of them
            for text, label in CORRECTIONS.items():
                raw = client.chat.completions.with_raw_response.create(
                    model="triage", messages=[{"role": "user", "content": text}]
                )
                said = {"decision_id": raw.headers["x-tiergate-decision-id"], "label": label}
                assert http.post("/v1/feedback", headers=AGENT, json=said).status_code == 200
            # 2. export them as training rows, retrain on both sets, compare on held-out rows
            rows = tmp_path / "corrections.jsonl"
            assert (
                "4 rows"
                in tiergate(
                    "export-training", "--config", str(path), "--route", "triage", "--out", str(rows)
                ).stdout
            )
            exported = [yaml.safe_load(line) for line in rows.read_text().splitlines()]
            assert {(r["text"], r["label"]) for r in exported} == set(CORRECTIONS.items())
            tiergate(
                "train",
                "--data",
                str(base),
                "--data",
                str(rows),
                "--out",
                str(candidate),
                "--point-estimates",
            )
            compared = tiergate(
                "compare", "--model", str(first), "--model", str(candidate), "--data", str(held_out)
            )
            assert str(first) in compared.stdout and str(candidate) in compared.stdout
            assert "out-of-scope escalated" in compared.stdout
            # 3. the candidate as a shadow: it scores every request, the model in force answers
            write(path, simulator[0], tmp_path, {"model": str(first), "shadow": str(candidate)})
            assert http.post("/admin/reload", headers=ADMIN).status_code == 200
            for text in ["where is my new card", "i want a refund", *CORRECTIONS]:
                client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}])

            def shadowed() -> dict[str, Any]:
                report = http.get("/admin/quality", headers=ADMIN, params={"route": "triage"}).json()
                return dict(report) if report.get("shadow", {}).get("decisions", 0) >= 6 else {}

            report = until(shadowed)
            assert report, http.get("/admin/quality", headers=ADMIN, params={"route": "triage"}).json()
            assert report["shadow"]["agreement"] is not None
            assert report["shadow"]["shadow_answered"] >= report["shadow"]["in_force_answered"]
            # 4. promotion: the candidate in force, by a config change and a reload
            write(path, simulator[0], tmp_path, {"model": str(candidate)})
            assert http.post("/admin/reload", headers=ADMIN).status_code == 200
            events = http.get("/admin/quality", headers=ADMIN, params={"route": "triage"}).json()["events"]
            promoted = [e for e in events if e["kind"] == "classifier.promoted"]
            assert [e["detail"] for e in promoted] == [{"from": str(first), "to": str(candidate)}]
            raw = client.chat.completions.with_raw_response.create(
                model="triage", messages=[{"role": "user", "content": "where is my new card"}]
            )
            assert raw.headers["x-tiergate-tier"] == "classifier"
