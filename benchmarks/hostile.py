"""Hostile clients and upstreams against one gateway worker on loopback: what each attack costs the
gateway now. Writes benchmarks/results/hostile.json (its table is in RELIABILITY.md).

    python benchmarks/hostile.py [--header-mb 100] [--half-sent 1000] [--huge-names 200]

- a header flood: one connection without a key sends a `--header-mb` MB Authorization header;
- half-sent requests: `--half-sent` connections send part of their headers and stop;
- huge model names: `--huge-names` requests whose `model` is 1 MB (each a 404);
- a budget bypass: `max_completion_tokens: 1, max_tokens: 1000000` streamed from an upstream that
  ignores the cap, for an agent with 5,000 tokens a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from typing import Any

import httpx
from harness import Report, gateway, rss_and_fds, simulator, worker_pid

KEY, ADMIN = "sk-bench-hostile", "sk-bench-hostile-admin"


def config(sim: str) -> dict[str, Any]:
    return {
        "server": {"admin_key": ADMIN, "header_timeout_s": 2, "max_connections": 5000},
        "upstreams": [
            {"name": "good", "base_url": sim, "model": "sim"},
            {"name": "ignore-cap", "base_url": sim, "model": "sim+fault=ignore-cap"},
        ],
        "agents": [{"id": "agent", "api_key": KEY, "budget": {"tokens_per_minute": 5000}}],
        "cache": {"backend": "none"},
    }


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    return host, int(port)


def probe_while(url: str, busy: threading.Event) -> list[float]:
    """Latencies (ms) of /healthz probes from another connection while `busy` is set."""
    times = []
    with httpx.Client() as client:
        while busy.is_set():
            began = time.perf_counter()
            client.get(f"{url.removesuffix('/v1')}/healthz")
            times.append((time.perf_counter() - began) * 1000)
            time.sleep(0.05)
    return times


def warm(url: str) -> None:
    """Requests of every kind first, so what the worker loads on first use is not counted."""
    with httpx.Client(timeout=30) as client:
        for _ in range(50):
            client.get(f"{url.removesuffix('/v1')}/healthz")
            client.post(
                f"{url}/chat/completions",
                json={"model": "good", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5},
                headers={"authorization": f"Bearer {KEY}"},
            )
            client.post(f"{url}/chat/completions", json={"model": "nothing"}, headers={"authorization": "x"})


def header_flood(url: str, pid: int, megabytes: int) -> list[Any]:
    before, _ = rss_and_fds(pid)
    busy = threading.Event()
    busy.set()
    probes: list[float] = []
    prober = threading.Thread(target=lambda: probes.extend(probe_while(url, busy)))
    prober.start()
    began = time.perf_counter()
    sent, answer = 0, b""
    with socket.create_connection(address(url), timeout=10) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ")
        chunk = b"a" * 65536
        try:
            while sent < megabytes * 1024 * 1024:
                conn.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            answer = conn.recv(65536)
    took = (time.perf_counter() - began) * 1000
    busy.clear()
    prober.join()
    after, _ = rss_and_fds(pid)
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
    return [
        f"{megabytes} MB Authorization header",
        f"{status} after {took:.0f} ms ({sent / 1024:.0f} KiB sent)",
        f"{after - before:+.1f} MiB",
        f"{len(probes)} /healthz probes meanwhile, slowest {max(probes, default=0):.1f} ms",
    ]


def half_sent(url: str, pid: int, count: int) -> list[Any]:
    rss_before, fds_before = rss_and_fds(pid)
    conns = []
    for _ in range(count):
        conn = socket.create_connection(address(url), timeout=10)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        conns.append(conn)
    time.sleep(0.5)
    _, fds_held = rss_and_fds(pid)
    time.sleep(3)  # past the 2 s header timeout
    _, fds_after = rss_and_fds(pid)
    answered = 0
    for conn in conns:
        with contextlib.suppress(OSError):
            answered += conn.recv(4096).startswith(b"HTTP/1.1 408")
        conn.close()
    rss_after, _ = rss_and_fds(pid)
    return [
        f"{count} half-sent requests",
        f"{answered} got 408 within the 2 s header timeout",
        f"{rss_after - rss_before:+.1f} MiB",
        f"open files {fds_before} -> {fds_held} -> {fds_after}",
    ]


def huge_names(url: str, pid: int, count: int) -> list[Any]:
    before, _ = rss_and_fds(pid)
    largest = 0
    statuses = set()
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            body = json.dumps(
                {"model": f"{i}" + "m" * 1_000_000, "messages": [{"role": "user", "content": "x"}]}
            )
            response = client.post(
                f"{url}/chat/completions",
                content=body,
                headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
            )
            statuses.add(response.status_code)
            largest = max(largest, len(response.content))
    after, _ = rss_and_fds(pid)
    return [
        f"{count} requests with a 1 MB model name",
        f"status {sorted(statuses)}, largest answer {largest} bytes",
        f"{after - before:+.1f} MiB",
        "",
    ]


def tokens_used(client: httpx.Client, url: str) -> int:
    usage = client.get(
        f"{url.removesuffix('/v1')}/admin/usage",
        params={"agent": "agent"},
        headers={"authorization": f"Bearer {ADMIN}"},
    ).json()
    return max(int(w["used_tokens"]) for w in usage["windows"] if w["metric"] == "tokens")


def budget_bypass(url: str) -> list[Any]:
    body = {
        "model": "ignore-cap",
        "messages": [{"role": "user", "content": "tell me everything"}],
        "stream": True,
        "max_completion_tokens": 1,
        "max_tokens": 1_000_000,
    }
    with httpx.Client(timeout=30) as client:
        before = tokens_used(client, url)
        with client.stream(
            "POST", f"{url}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        ) as response:
            relayed = sum(len(chunk) for chunk in response.iter_bytes())
        charged = tokens_used(client, url) - before
    return [
        "stream past the cap (max_completion_tokens 1, max_tokens 1,000,000)",
        f"cut off after {relayed} bytes relayed",
        "",
        f"{charged} tokens charged (budget: 5,000 a minute)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--header-mb", type=int, default=100)
    parser.add_argument("--half-sent", type=int, default=1000)
    parser.add_argument("--huge-names", type=int, default=200)
    args = parser.parse_args()
    with simulator() as sim, gateway(config(sim)) as url:
        pid = worker_pid(address(url)[1])
        warm(url)
        rows = [
            header_flood(url, pid, args.header_mb),
            half_sent(url, pid, args.half_sent),
            huge_names(url, pid, args.huge_names),
            budget_bypass(url),
        ]
    report = Report("hostile")
    report.table(
        "What each attack costs one gateway worker",
        ["attack", "outcome", "worker RSS", "other effects"],
        rows,
    )
    report.save()


if __name__ == "__main__":
    main()
