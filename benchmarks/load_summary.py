"""A markdown summary of one locust run (benchmarks/run_load.sh writes the inputs)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path


def main() -> None:
    prefix, users, duration, rss_kb = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    with Path(f"{prefix}_stats.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    kinds = json.loads(Path(f"{prefix}-tiers.json").read_text())
    print(f"# Load run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {users} users, {duration}\n")
    print("| request | count | failures | p50 ms | p95 ms | p99 ms | requests/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    real = [r for r in rows if r["Type"] not in ("TIER", "CACHE", "BUDGET", "TOKENS", "")]
    for row in real:
        print(
            f"| {row['Name']} | {row['Request Count']} | {row['Failure Count']} | {row['50%']} | "
            f"{row['95%']} | {row['99%']} | {float(row['Requests/s']):.1f} |"
        )
    total = sum(int(r["Request Count"]) for r in real)
    rate = sum(float(r["Requests/s"]) for r in real)
    print(f"| all requests | {total} | {sum(int(r['Failure Count']) for r in real)} | | | | {rate:.1f} |")
    tiers = kinds.get("TIER", {})
    answered = sum(tiers.values()) or 1
    print("\n| tier | answers | share |\n| --- | --- | --- |")
    for tier, n in sorted(tiers.items(), key=lambda item: -item[1]):
        print(f"| {tier} | {n} | {n / answered:.1%} |")
    cache = kinds.get("CACHE", {})
    lookups = (cache.get("hit", 0) + cache.get("miss", 0)) or 1
    print(
        f"\nCache hit rate among cacheable requests: {cache.get('hit', 0) / lookups:.1%}; "
        f"budget refusals: {kinds.get('BUDGET', {}).get('refused', 0)}; "
        f"tokens in non-streamed answers: {kinds.get('TOKENS', {}).get('total', 0)}; "
        f"gateway RSS at the end: {int(rss_kb) / 1024:.0f} MiB."
    )


if __name__ == "__main__":
    main()
