"""How the gateway scales with workers, and what a Redis budget costs on one Redis and on a Redis
Cluster. Requests/s with wrk (2 threads, --connections) for 1, 2 and 4 workers on rules answers,
cache hits and pass-through to the simulated upstream, one run each (the machine's cores are
recorded: on a machine with fewer cores than workers plus the load generator, more workers only
share the same cores); then pass-through with an agent budget kept in memory, on one Redis, and on
a three-master Redis Cluster, for 1 and 2 workers.
Writes benchmarks/results/scaling.json and prints its tables.

    python benchmarks/scaling.py [--seconds 8] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from harness import ROOT, Report, chat_body, gateway, redis_server, simulator, throughput

sys.path.insert(0, str(ROOT))
from tests.cluster import redis_cluster

KEY = "sk-bench"
SCENARIOS = {"rules answers": "rules", "cache hits": "cached", "pass-through": "pass"}


def body(route: str) -> bytes:
    # a deterministic request is cached (`only_deterministic`): temperature 0 for the cache hits
    return chat_body(route, temperature=0) if route == "cached" else chat_body(route)


def config(sim: str, budget_state: dict[str, Any] | None = None) -> dict[str, Any]:
    agent: dict[str, Any] = {"id": "bench", "api_key": KEY, "max_concurrency": None}
    raw: dict[str, Any] = {
        "upstreams": [{"name": "small", "base_url": sim, "model": "sim-small"}],
        "agents": [agent],
        "routes": [
            {"name": "pass", "llm": ["small"], "cache": {"enabled": False}},
            {"name": "cached", "llm": ["small"]},
            {"name": "rules", "rules": [{"when": {"contains_any": ["ticket"]}, "answer": "billing"}]},
        ],
        "cache": {"backend": "memory"},
    }
    if budget_state is not None:
        agent["budget"] = {"tokens_per_day": 10**12}
        if budget_state:
            raw["state"] = {"backend": "redis", **budget_state}
    return raw


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"cores": os.cpu_count(), "workers": {}, "budget": {}}
    auth = f"Bearer {KEY}"
    with simulator() as sim:
        for workers in (1, 2, 4):
            with gateway(config(sim), workers=workers) as url:
                out["workers"][str(workers)] = {
                    name: throughput(
                        f"{url}/chat/completions", body(route), auth, args.connections, args.seconds
                    )["rps"]
                    for name, route in SCENARIOS.items()
                }
        with redis_server() as redis_url, redis_cluster() as cluster_url:
            states = {"memory": {}, "one Redis": {"url": redis_url}, "Redis Cluster": {"url": cluster_url}}
            for name, state in states.items():
                for workers in (1, 2):
                    with gateway(config(sim, state), workers=workers) as url:
                        rps = throughput(
                            f"{url}/chat/completions", chat_body("pass"), auth, args.connections, args.seconds
                        )["rps"]
                    out["budget"][f"{name}, {workers}"] = rps
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> Report:
    result = Report("scaling")
    result.table(
        f"Requests/s by workers ({out['cores']} cores; wrk with {args.connections} connections,"
        f" {args.seconds} s, one run each)",
        ["scenario", "1 worker", "2 workers", "4 workers"],
        [[name, *(round(out["workers"][w][name]) for w in ("1", "2", "4"))] for name in SCENARIOS],
    )
    result.table(
        f"Pass-through with an agent budget, requests/s (one run each, {args.seconds} s)",
        ["budget kept", "1 worker", "2 workers"],
        [
            [name, *(round(out["budget"][f"{name}, {w}"]) for w in (1, 2))]
            for name in ("memory", "one Redis", "Redis Cluster")
        ],
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    out = measure(args)
    report(out, args).save(out)


if __name__ == "__main__":
    main()
