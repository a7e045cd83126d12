"""The quickstart as a new user meets it: `tiergate serve` with no config trains the example
classifier at first start, answers from every tier, and keeps its decisions in SQLite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_the_quickstart_answers_from_rules_the_classifier_and_an_llm(tmp_path: Path) -> None:
    port, simulator_port = free_port(), free_port()
    env = {
        **os.environ,
        "TIERGATE_HOME": str(tmp_path / "home"),
        "TIERGATE_PORT": str(port),
        "TIERGATE_SIMULATOR_PORT": str(simulator_port),
    }
    with open(tmp_path / "err.log", "wb") as log:  # a file, not a pipe: nothing waits on reading it
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env, stderr=log
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the quickstart did not start"
            time.sleep(0.2)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-tiergate-demo", max_retries=0
        )
        tiers = {}
        for text in ("please reset my password", "I was charged twice this month", "tell me about Rome"):
            raw = client.chat.completions.with_raw_response.create(
                model="ticket-triage", messages=[{"role": "user", "content": text}]
            )
            tiers[text] = (raw.headers["x-tiergate-tier"], raw.parse().choices[0].message.content)
        assert tiers["please reset my password"] == ("rules", "account_access")
        assert tiers["I was charged twice this month"] == ("classifier", "billing")
        assert tiers["tell me about Rome"][0] == "llm:small"
        assert (tmp_path / "home" / "triage.joblib").exists()
        assert (tmp_path / "home" / "decisions.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        stderr = (tmp_path / "err.log").read_bytes()
    assert b"trained" in stderr
    assert process.returncode == 0
    # the simulated upstream stopped with it: its port is free again
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", simulator_port))
