"""The gateway process's life: SIGTERM drains requests in flight."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import DEMO_KEY, make_config
from tests.servers import free_port, simulator_server
from tiers.llm.simulator import SimulatorSettings

pytestmark = pytest.mark.e2e


def test_sigterm_lets_a_stream_in_flight_finish(tmp_path: Path) -> None:
    with simulator_server(SimulatorSettings(per_token_ms=40, reply_words=30)) as (sim_url, _):
        port = free_port()
        config = make_config(sim_url).model_dump(mode="json")
        config["agents"] = [{"id": "agent", "api_key": DEMO_KEY}]
        config["server"] = {"port": port, "admin_key": "sk-test-admin", "shutdown_grace_s": 10}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)])
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            lines = []
            with httpx.stream(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers={"authorization": f"Bearer {DEMO_KEY}"},
                json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                timeout=20,
            ) as response:
                for line in response.iter_lines():
                    if line and not lines:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
                    lines.append(line)
            assert lines[-2] == "data: [DONE]" or lines[-1] == "data: [DONE]"
            # uvicorn re-raises the signal once it has drained, so the exit is "terminated by SIGTERM"
            assert proc.wait(15) in (0, -signal.SIGTERM)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz")
        finally:
            if proc.poll() is None:
                proc.kill()
