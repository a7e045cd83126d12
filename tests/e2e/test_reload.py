"""Hot reload: POST /admin/reload and SIGHUP re-read the config; an invalid one changes nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.integration.test_shared_budget import gateway_process

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
AGENT = {"authorization": f"Bearer {DEMO_KEY}"}


def models(url: str) -> list[str]:
    return sorted(m["id"] for m in httpx.get(f"{url}/v1/models", headers=AGENT).json()["data"])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_takes_a_valid_config_keeps_budgets_and_refuses_an_invalid_one(
    simulator: tuple[str, Any], tmp_path: Path, workers: int
) -> None:
    config = make_config(simulator[0]).model_dump(mode="json")
    config["server"] = {"admin_key": ADMIN_KEY}
    config["agents"] = [
        {"id": "agent", "api_key": DEMO_KEY, "routes": ["auto"], "budget": {"tokens_per_day": 10**6}}
    ]
    with gateway_process(config, tmp_path, workers=workers) as url:
        path = next(tmp_path.glob("gateway-*.yaml"))
        ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=ask, headers=AGENT).status_code == 200
        used = httpx.get(f"{url}/admin/usage", params={"agent": "agent"}, headers=ADMIN).json()["windows"][0]
        assert models(url) == ["auto"]

        written = yaml.safe_load(path.read_text())
        written["agents"][0]["routes"] = ["auto", "small"]
        path.write_text(yaml.safe_dump(written))
        reloaded = httpx.post(f"{url}/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        deadline = time.monotonic() + 5
        while models(url) != ["auto", "small"] and time.monotonic() < deadline:
            time.sleep(0.05)
        # every worker has it (connections closed so requests spread over workers)
        for _ in range(10):
            listed = httpx.get(f"{url}/v1/models", headers={**AGENT, "connection": "close"}).json()
            assert sorted(m["id"] for m in listed["data"]) == ["auto", "small"]
        if workers == 1:  # memory budgets survive a reload (each worker counts its own)
            after = httpx.get(f"{url}/admin/usage", params={"agent": "agent"}, headers=ADMIN).json()[
                "windows"
            ][0]
            assert after["used_tokens"] == used["used_tokens"] > 0

        path.write_text("agents: [{id: broken}]\n")
        refused = httpx.post(f"{url}/admin/reload", headers=ADMIN)
        assert refused.status_code == 422 and "agents[0]" in refused.json()["error"]["message"]
        path.write_text("")  # a truncated file would lock out every agent and the admin
        refused = httpx.post(f"{url}/admin/reload", headers=ADMIN)
        assert refused.status_code == 422 and "no agent" in refused.json()["error"]["message"]
        path.write_text("agents:\n  - id: a\n    api_key: sk-secret-in-a-broken-line: x\n")
        refused = httpx.post(f"{url}/admin/reload", headers=ADMIN)
        assert refused.status_code == 422 and "line 3" in refused.json()["error"]["message"]
        assert "sk-secret" not in refused.text
        assert models(url) == ["auto", "small"]
        assert httpx.post(f"{url}/admin/reload").status_code == 401


def test_sighup_reloads_the_config(simulator: tuple[str, Any], tmp_path: Path) -> None:
    config = make_config(simulator[0]).model_dump(mode="json")
    config["server"] = {"admin_key": ADMIN_KEY}
    config["agents"] = [{"id": "agent", "api_key": DEMO_KEY, "routes": ["auto"]}]
    with gateway_process(config, tmp_path) as url:
        path = next(tmp_path.glob("gateway-*.yaml"))
        written = yaml.safe_load(path.read_text())
        written["agents"][0]["routes"] = ["*"]
        path.write_text(yaml.safe_dump(written))
        pid = httpx.get(f"{url}/healthz").json()["worker"]
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while models(url) == ["auto"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert models(url) == ["auto", "large", "small", "triage"]
