"""Metrics across workers: with two workers, every scrape of /metrics, whichever worker answers
it, reports the whole gateway's totals; the directory the workers share is gone after a stop."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEMO_KEY
from tests.servers import free_port, serve_process, until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
AGENT = {"authorization": f"Bearer {DEMO_KEY}"}


def total(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", metrics, re.MULTILINE))


def test_every_scrape_of_two_workers_reports_the_same_totals(
    simulator: tuple[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    config = {
        "server": {"port": port, "workers": 2},
        "upstreams": [{"name": "small", "base_url": simulator[0], "model": "sim-small"}],
        "agents": [{"id": "agent", "api_key": DEMO_KEY}],
        "routes": [
            {"name": "triage", "rules": [{"when": {"contains_any": ["ticket"]}, "answer": "billing"}]},
            {"name": "auto", "llm": ["small"], "cache": {"enabled": False}},
        ],
        "store": {"url": f"sqlite:///{tmp_path}/store.db", "spool_dir": str(tmp_path / "spool")},
    }
    before = set(Path(tempfile.gettempdir()).glob("tiergate-metrics-*"))
    base = f"http://127.0.0.1:{port}"
    with serve_process(config, tmp_path):
        assert len(set(Path(tempfile.gettempdir()).glob("tiergate-metrics-*")) - before) == 1
        decisions = []
        for i in range(30):  # a fresh connection each: the kernel spreads them over the workers
            model = "triage" if i % 3 else "auto"
            body = {"model": model, "messages": [{"role": "user", "content": f"ticket {i}"}]}
            reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=AGENT)
            assert reply.status_code == 200
            decisions.append(reply.headers["x-tiergate-decision-id"])
        assert len({d[:22] for d in decisions}) == 2  # both workers answered

        def shipped() -> bool:
            return total(httpx.get(f"{base}/metrics").text, "tiergate_records_shipped_total") == 30

        assert until(shipped, timeout_s=10)
        scrapes = [httpx.get(f"{base}/metrics").text for _ in range(12)]  # a fresh connection each
        for metrics in scrapes:
            assert total(metrics, "tiergate_requests_total") == 30
            assert 'tiergate_requests_total{route="triage",status="200",tier="rules"} 20.0' in metrics
            assert 'tiergate_requests_total{route="auto",status="200",tier="llm:small"} 10.0' in metrics
            assert total(metrics, "tiergate_request_latency_seconds_count") == 30  # histograms merged
            assert total(metrics, "tiergate_tokens_total") > 0
            assert total(metrics, "tiergate_records_shipped_total") == 30
            assert "tiergate_spool_bytes 0.0" in metrics  # summed over the live workers
            assert "tiergate_store_up 1.0" in metrics
    assert set(Path(tempfile.gettempdir()).glob("tiergate-metrics-*")) - before == set()
