"""One store for every worker: decisions answered by two worker processes are listed together,
and an agent's feedback finds its decision whichever worker answered it and whichever takes the
feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEMO_KEY
from tests.servers import free_port, serve_process, until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"authorization": "Bearer sk-admin"}
AGENT = {"authorization": f"Bearer {DEMO_KEY}"}


def test_two_workers_share_the_decisions_and_their_feedback(
    simulator: tuple[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    config = {
        "server": {"port": port, "admin_key": "sk-admin", "workers": 2},
        "upstreams": [{"name": "small", "base_url": simulator[0], "model": "sim-small"}],
        "agents": [{"id": "agent", "api_key": DEMO_KEY}],
        "routes": [{"name": "auto", "llm": ["small"], "cache": {"enabled": False}}],
        "store": {"url": f"sqlite:///{tmp_path}/store.db", "spool_dir": str(tmp_path / "spool")},
    }
    base = f"http://127.0.0.1:{port}"
    with serve_process(config, tmp_path) as process:
        decisions = []
        for i in range(40):  # a fresh connection each: the kernel spreads them over the workers
            body = {"model": "auto", "messages": [{"role": "user", "content": f"question {i}"}]}
            reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=AGENT)
            decisions.append(reply.headers["x-tiergate-decision-id"])
        # a decision id starts with its worker's own prefix: both workers answered
        assert len({d[:22] for d in decisions}) == 2

        def listed() -> set[str]:
            page = httpx.get(f"{base}/admin/decisions", params={"limit": 100}, headers=ADMIN).json()
            return {d["id"] for d in page["data"]}

        assert until(lambda: listed() >= set(decisions)), "every worker's decisions reach the one store"
        # feedback on each decision, posted on fresh connections (so to either worker)
        for decision in decisions:
            said = httpx.post(
                f"{base}/v1/feedback", json={"decision_id": decision, "correct": True}, headers=AGENT
            )
            assert said.status_code == 200, said.text
        found = httpx.get(f"{base}/admin/decisions/{decisions[0]}", headers=ADMIN).json()
        assert [f["source"] for f in found["feedback"]] == ["agent"]
    assert process.returncode == 0
    assert list((tmp_path / "spool").glob("*.spool")) == []  # both workers shipped all at shutdown
