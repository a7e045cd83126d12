"""The figures of one locust run (benchmarks/run_load.sh writes the inputs), as
benchmarks/results/load.json."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from harness import Report


def main() -> None:
    prefix, users, duration, rss_kb = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    with Path(f"{prefix}_stats.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    kinds = json.loads(Path(f"{prefix}-tiers.json").read_text())
    real = [r for r in rows if r["Type"] not in ("TIER", "CACHE", "BUDGET", "TOKENS", "")]
    table = [
        [
            r["Name"],
            int(r["Request Count"]),
            int(r["Failure Count"]),
            r["50%"],
            r["95%"],
            r["99%"],
            float(r["Requests/s"]),
        ]
        for r in real
    ]
    total = sum(int(r["Request Count"]) for r in real)
    failures = sum(int(r["Failure Count"]) for r in real)
    table.append(["all requests", total, failures, "", "", "", sum(float(r["Requests/s"]) for r in real)])
    report = Report("load", command=f"benchmarks/run_load.sh {users} {duration}")
    report.table(
        f"locust, {users} users for {duration}",
        ["request", "count", "failures", "p50 ms", "p95 ms", "p99 ms", "requests/s"],
        table,
    )
    tiers = kinds.get("TIER", {})
    answered = sum(tiers.values()) or 1
    report.table(
        "Who answered",
        ["tier", "answers", "share"],
        [[tier, n, f"{n / answered:.1%}"] for tier, n in sorted(tiers.items(), key=lambda item: -item[1])],
    )
    cache = kinds.get("CACHE", {})
    lookups = (cache.get("hit", 0) + cache.get("miss", 0)) or 1
    report.table(
        "The rest",
        [
            "cache hit rate (cacheable requests)",
            "budget refusals",
            "tokens in whole answers",
            "gateway RSS (MiB)",
        ],
        [
            [
                f"{cache.get('hit', 0) / lookups:.1%}",
                kinds.get("BUDGET", {}).get("refused", 0),
                kinds.get("TOKENS", {}).get("total", 0),
                round(int(rss_kb) / 1024),
            ]
        ],
    )
    report.save()


if __name__ == "__main__":
    main()
