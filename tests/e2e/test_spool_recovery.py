"""Nothing lost: a gateway process killed with SIGKILL under load ships, once restarted, every
record of every answer it gave, to SQLite and to PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.store.engine import create_engine
from gateway.store.protocol import DecisionQuery
from gateway.store.sql import SqlStore
from tests.conftest import DEMO_KEY
from tests.servers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RESET = {"model": "triage", "messages": [{"role": "user", "content": "reset my password"}]}


def write_config(path: Path, simulator_url: str, store_url: str, spool: Path, port: int) -> Path:
    config = {
        "server": {"port": port, "admin_key": "sk-admin"},
        "upstreams": [{"name": "small", "base_url": simulator_url, "model": "sim-small"}],
        "agents": [{"id": "agent", "api_key": DEMO_KEY, "routes": ["*"]}],
        "routes": [
            {
                "name": "triage",
                "rules": [{"when": {"last_user_matches": "(?i)password"}, "answer": "account_access"}],
                "llm": ["small"],
            }
        ],
        # a long interval: most records are still in the spool when the process is killed
        "store": {"url": store_url, "spool_dir": str(spool), "auto_upgrade": True, "ship_interval_s": 30},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the gateway did not start: " + process.stderr.read().decode()[-2000:])  # type: ignore[union-attr]


def shippers(spool: Path) -> list[int]:
    """The shipper processes shipping this spool."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"gateway.store.shipper_process" in command and any(str(spool).encode() in c for c in command):
            found.append(int(entry.name))
    return found


def gone(spool: Path, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while shippers(spool) and time.monotonic() < deadline:
        time.sleep(0.1)
    return shippers(spool) == []


def stored_ids(url: str) -> set[str]:
    async def read() -> set[str]:
        store = SqlStore(create_engine(url))
        try:
            page = await store.decisions(DecisionQuery(limit=100_000))
            import msgspec

            return {msgspec.json.decode(r)["id"] for r in page.records}
        finally:
            await store.close()

    return asyncio.run(read())


def test_records_spooled_before_a_sigkill_reach_the_store_after_a_restart(
    simulator: tuple[str, Any], store_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path / "gateway.yaml", simulator[0], store_url, tmp_path / "spool", port)
    process = start(config, port)
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while not stop.is_set():
                try:
                    reply = client.post(
                        "/v1/chat/completions", json=RESET, headers={"authorization": f"Bearer {DEMO_KEY}"}
                    )
                except httpx.HTTPError:
                    continue  # the process is gone: this request got no answer
                if reply.status_code == 200:
                    answered.append(reply.headers["x-tiergate-decision-id"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(answered) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(shippers(tmp_path / "spool")) == 1  # the worker's shipper runs beside it
    os.kill(process.pid, signal.SIGKILL)  # mid-load
    process.wait(10)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(answered) >= 300
    before = stored_ids(store_url)
    assert set(answered) - before, "the records should still have been in the spool when it was killed"
    assert gone(tmp_path / "spool"), "the shipper of a killed worker should stop with it"

    process = start(config, port)
    try:
        deadline = time.monotonic() + 20
        missing = set(answered) - stored_ids(store_url)
        while missing and time.monotonic() < deadline:
            time.sleep(0.2)
            missing = set(answered) - stored_ids(store_url)
        assert missing == set(), f"{len(missing)} of {len(answered)} answered decisions were lost"
        assert len(stored_ids(store_url)) >= len(answered)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert gone(tmp_path / "spool", within_s=1.0)
    # the dead process's spool is gone once shipped; a stopped one ships its own at shutdown
    assert [p.name for p in (tmp_path / "spool").glob("*.spool")] == []


def test_a_shipper_process_that_dies_is_started_again_and_ships_what_waited(
    simulator: tuple[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path}/decisions.db"
    config = write_config(tmp_path / "gateway.yaml", simulator[0], url, tmp_path / "spool", port)
    process = start(config, port)
    try:
        [first] = shippers(tmp_path / "spool")
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=RESET,
            headers={"authorization": f"Bearer {DEMO_KEY}"},
        )
        decision = reply.headers["x-tiergate-decision-id"]
        os.kill(first, signal.SIGKILL)  # before its next tick (30 s): the record waits in the spool
        assert decision not in stored_ids(url)
        deadline = time.monotonic() + 10
        while decision not in stored_ids(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert decision in stored_ids(url)  # the new process's first pass shipped it
        assert len(shippers(tmp_path / "spool")) == 1 and shippers(tmp_path / "spool") != [first]
        # what the process reports reaches the worker's metrics and the spool's bound
        metrics = ""
        deadline = time.monotonic() + 5
        while "tiergate_spool_bytes 0.0" not in metrics and time.monotonic() < deadline:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            time.sleep(0.1)
        assert "tiergate_spool_bytes 0.0" in metrics
        assert "tiergate_records_shipped_total 1.0" in metrics
        assert "tiergate_store_up 1.0" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
    assert b"the shipper process stopped" in errors
