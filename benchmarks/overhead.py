"""What the gateway adds on top of calling the upstream directly, measured in one run.

Starts the simulated upstream (zero latency) and a gateway as real processes on loopback, then:
  - latency at 1 connection, each scenario paired with a direct call to the upstream;
  - requests/s at 32 connections with wrk.
Scenarios: pass-through (no budget; also through the Responses and Messages APIs, whose
translation is the difference from the chat pass-through), with a memory budget, with a Redis
budget (--redis), a cache hit, a rules answer, a classifier answer (--model, e.g. a Banking77
model from `tiergate train`); with --texts (a CSV with a `text` column, e.g. Banking77's
test.csv), also classifier answers over those distinct texts (the ones the model answers;
throughput only), since one text sent over and over keeps every cache in the path warm.
The Redis budget runs with the default budget leases; for each worker count its requests/s are
measured right after the memory budget's, since the machine's speed drifts over a run. Each
scenario's wrk run follows a one-second one that warms the gateway (connection pools, leases).
Writes benchmarks/results/overhead.json and prints its tables.

    python benchmarks/overhead.py [--requests 2000] [--seconds 10] [--workers 1 2] [--redis] [--model M]
        [--texts ../shared/data/banking77/test.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from contextlib import ExitStack
from typing import Any

import httpx
from harness import Report, chat_body, gateway, paired_latency, redis_server, simulator, throughput

from tiers.classifier.model import ClassifierModel, Predictor

FREE, BUDGETED = "sk-bench-free", "sk-bench-budgeted"


def bench_config(sim_url: str, redis_url: str | None, model: str | None = None) -> dict[str, Any]:
    classify = (
        [{"name": "classify", "classifier": {"model": model}, "llm": ["small"], "cache": {"enabled": False}}]
        if model
        else []
    )
    return {
        "server": {"max_body_bytes": 1_000_000},
        "state": {"backend": "redis", "url": redis_url} if redis_url else {"backend": "memory"},
        "upstreams": [{"name": "small", "base_url": sim_url, "model": "sim-small"}],
        "agents": [
            {"id": "free", "api_key": FREE},
            {
                "id": "budgeted",
                "api_key": BUDGETED,
                "budget": {
                    "tokens_per_minute": 10**12,
                    "tokens_per_day": 10**13,
                    "requests_per_minute": 10**9,
                },
            },
        ],
        "routes": [
            {"name": "pass", "llm": ["small"], "cache": {"enabled": False}},
            {"name": "cached", "llm": ["small"]},
            {
                "name": "rules",
                "rules": [{"when": {"contains_any": ["ticket"]}, "answer": "billing"}],
                "llm": ["small"],
            },
            *classify,
        ],
        "cache": {"backend": "memory"},
    }


def scenarios(gw: str, redis: bool, model: str | None = None) -> list[tuple[str, str, bytes, str]]:
    """(name, url, body, key) for each scenario through the gateway."""
    url = f"{gw}/chat/completions"
    budget_name = "budget (redis)" if redis else "budget (memory)"
    if redis:
        return [(budget_name, url, chat_body("pass"), BUDGETED)]
    text = "Route this ticket: my card was charged twice"
    responses = json.dumps({"model": "pass", "input": text}).encode()
    ask = [{"role": "user", "content": text}]
    messages = json.dumps({"model": "pass", "max_tokens": 1024, "messages": ask})
    return [
        ("pass-through", url, chat_body("pass"), FREE),
        ("pass-through, Responses API", f"{gw}/responses", responses, FREE),
        ("pass-through, Messages API", f"{gw}/messages", messages.encode(), FREE),
        ("cache hit", url, chat_body("cached", temperature=0), FREE),
        ("rules answer", url, chat_body("rules"), FREE),
        *([("classifier answer", url, chat_body("classify"), FREE)] if model else []),
        (budget_name, url, chat_body("pass"), BUDGETED),  # last: the Redis budget is measured next
    ]


def answered_bodies(model: str, texts: str) -> list[bytes]:
    """Request bodies for the texts of a CSV that the model answers (no escalation), in file order."""
    with open(texts, encoding="utf-8", newline="") as handle:
        rows = [row["text"] for row in csv.DictReader(handle)]
    predictor = Predictor(ClassifierModel.load(model))
    bodies = [chat_body("classify", text) for text in rows if not predictor.predict(text).escalate]
    if not bodies:
        raise SystemExit(f"the model answers none of the texts in {texts}")
    return bodies


def check_classifier_answers(gw: str) -> None:
    response = httpx.post(
        f"{gw}/chat/completions", content=chat_body("classify"), headers={"authorization": f"Bearer {FREE}"}
    )
    tier = response.headers.get("x-tiergate-tier")
    if tier != "classifier":
        raise SystemExit(
            f"the classifier scenario is answered by {tier}, not the classifier: use another model"
        )


def measure_latency(
    results: dict[str, Any],
    direct: tuple[str, bytes, dict[str, str]],
    cases: list[tuple[str, str, bytes, str]],
    requests: int,
) -> None:
    targets = [direct] + [
        (url, body, {"content-type": "application/json", "authorization": f"Bearer {key}"})
        for _, url, body, key in cases
    ]
    measured = paired_latency(targets, requests)
    results["latency"].setdefault("direct", measured[0])
    for (name, *_), stats in zip(cases, measured[1:], strict=True):
        stats["added_p50_ms"] = stats["p50_ms"] - measured[0]["p50_ms"]
        stats["added_p99_ms"] = stats["p99_ms"] - measured[0]["p99_ms"]
        results["latency"][name] = stats


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
        "python": platform.python_version(),
        "latency": {},
        "throughput": {},
    }
    varied = answered_bodies(args.model, args.texts) if args.model and args.texts else []
    with simulator() as sim, ExitStack() as outer:
        redis_url = outer.enter_context(redis_server()) if args.redis else None
        direct = (f"{sim}/chat/completions", chat_body("sim-small"), {"content-type": "application/json"})
        # per worker count, the memory budget is measured last and the Redis budget right after it
        for workers in args.workers:
            for redis in [False, True] if args.redis else [False]:
                with gateway(
                    bench_config(sim, redis_url if redis else None, args.model), workers=workers
                ) as gw:
                    cases = scenarios(gw, redis, args.model)
                    if args.model:
                        check_classifier_answers(gw)
                    if workers == args.workers[0]:
                        measure_latency(results, direct, cases, args.requests)
                    if "direct" not in results["throughput"]:
                        results["throughput"]["direct"] = throughput(
                            direct[0], direct[1], "Bearer none", args.connections, args.seconds
                        )
                    if varied and not redis:
                        name = f"classifier answer, {len(varied)} distinct texts, {workers} worker(s)"
                        results["throughput"][name] = throughput(
                            f"{gw}/chat/completions", varied, f"Bearer {FREE}", args.connections, args.seconds
                        )
                    for name, url, body, key in cases:
                        throughput(url, body, f"Bearer {key}", args.connections, 1)  # warm: pools, leases
                        results["throughput"][f"{name}, {workers} worker(s)"] = throughput(
                            url, body, f"Bearer {key}", args.connections, args.seconds
                        )
    return results


def report(results: dict[str, Any]) -> Report:
    """Latency added over the direct call, and requests/s as a share of the direct call's."""
    out = Report("overhead")
    latency, rates = results["latency"], results["throughput"]
    out.table(
        "Latency at 1 connection, each request paired with a direct one (ms)",
        ["scenario", "p50", "p99", "added p50", "added p99"],
        [
            [name, s["p50_ms"], s["p99_ms"], s.get("added_p50_ms", 0.0), s.get("added_p99_ms", 0.0)]
            for name, s in latency.items()
        ],
    )
    direct = rates["direct"]["rps"]
    workers = sorted({int(name.rsplit(", ", 1)[1].split()[0]) for name in rates if name != "direct"})
    scenarios = list(dict.fromkeys(name.rsplit(", ", 1)[0] for name in rates if name != "direct"))
    columns = ["scenario"]
    for n in workers:
        columns += [f"{n} worker{'s' if n > 1 else ''}: requests/s", "share of direct"]
    rows: list[list[Any]] = [["direct", direct, "1.00", *([""] * (2 * len(workers) - 2))]]
    for scenario in scenarios:
        row: list[Any] = [scenario]
        for n in workers:
            measured = rates.get(f"{scenario}, {n} worker(s)")
            row += ["", ""] if measured is None else [measured["rps"], f"{measured['rps'] / direct:.2f}"]
        rows.append(row)
    failed = sum(int(s["non_2xx"]) for s in rates.values())
    out.table(f"Requests/s at {results['connections']} connections ({failed} non-2xx answers)", columns, rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="paired requests per scenario at 1 connection"
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--redis", action="store_true", help="also measure the Redis budget")
    parser.add_argument("--model", help="a classifier model (tiergate train) for the classifier scenario")
    parser.add_argument("--texts", help="a CSV with a `text` column: classifier answers over distinct texts")
    args = parser.parse_args()
    results = run(args)
    results["connections"] = args.connections
    report(results).save(results)


if __name__ == "__main__":
    main()
