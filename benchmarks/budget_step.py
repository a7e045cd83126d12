"""The cost of the budget step per request (reserve + settle), in memory and on Redis over
loopback (a reservation per request, and a busy agent granted from leases), with Redis round
trips counted; and the cost of counting the 20th turn of a
conversation that is re-sent whole every turn.

    python benchmarks/budget_step.py [--ops 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import uvloop
from harness import Report, redis_server

from budgets.leases import LeaseSettings, LeasingLedger
from budgets.memory import MemoryLedger
from budgets.policy import BudgetPolicy, Estimate, Reservation
from budgets.redis_client import connect
from budgets.redis_ledger import RedisLedger
from budgets.tokens import TokenCounter, load_encoding

POLICIES = {
    "agent:a": BudgetPolicy.build(
        "agent:a", tokens={"minute": 10**12, "day": 10**13}, usd={"month": 10**6}, requests_per_minute=10**9
    )
}
SUBJECTS = {"a": ("agent:a",)}
ESTIMATE = Estimate(120, 256, 0.15, 0.6)


async def time_ledger(ledger: MemoryLedger | RedisLedger | LeasingLedger, ops: int) -> list[float]:
    samples = []
    for _ in range(ops):
        began = time.perf_counter()
        reservation = await ledger.reserve("a", ESTIMATE)
        assert isinstance(reservation, Reservation)
        await ledger.settle(reservation, 200, 90)
        samples.append((time.perf_counter() - began) * 1e6)
    return samples


def describe(name: str, samples: list[float], note: str = "") -> list[Any]:
    ordered = sorted(samples)
    return [name, statistics.median(ordered), ordered[int(len(ordered) * 0.99)], len(ordered), note]


async def ledgers(ops: int) -> list[list[Any]]:
    rows = [
        describe("memory ledger, reserve + settle", await time_ledger(MemoryLedger(POLICIES, SUBJECTS), ops))
    ]
    with redis_server() as url:
        client = connect(url, timeout_s=1.0)
        ledger = RedisLedger(client, POLICIES, SUBJECTS, {})
        await time_ledger(ledger, 200)  # warm: scripts loaded, connection open
        await client.config_resetstat()
        reserve_only = []
        for _ in range(ops):
            began = time.perf_counter()
            reservation = await ledger.reserve("a", ESTIMATE)
            reserve_only.append((time.perf_counter() - began) * 1e6)
            assert isinstance(reservation, Reservation)
        stats = await client.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_evalsha"))
        rows.append(describe("Redis ledger, reserve", reserve_only, f"{calls / ops:.2f} round trips each"))
        script_us = stats["cmdstat_evalsha"]["usec_per_call"]
        pings = []
        for _ in range(ops):
            began = time.perf_counter()
            await client.ping()
            pings.append((time.perf_counter() - began) * 1e6)
        rows.append(describe("Redis PING, for scale", pings, f"the script ran {script_us:.1f} µs in Redis"))
        rows.append(describe("Redis ledger, reserve + settle", await time_ledger(ledger, ops)))
        leased = LeasingLedger(ledger, SUBJECTS, LeaseSettings())
        await time_ledger(leased, 200)  # busy: the agent holds a lease
        await client.config_resetstat()
        samples = await time_ledger(leased, ops)
        stats = await client.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_evalsha"))
        rows.append(
            describe(
                "Redis ledger with leases, reserve + settle",
                samples,
                f"{calls} round trips in all: leases taken and settled",
            )
        )
        await leased.close()
        await client.aclose()
    return rows


def conversation_turns(turns: int) -> list[list[tuple[str, str | None]]]:
    rng = random.Random(7)
    words = [
        "the",
        "order",
        "shipped",
        "late",
        "and",
        "the",
        "customer",
        "wants",
        "a",
        "refund",
        "for",
        "the",
        "damaged",
        "parcel",
        "today",
    ]
    messages: list[tuple[str, str | None]] = [("You are a support agent. Answer briefly.", None)]
    history = []
    for _ in range(turns):
        messages.append((" ".join(rng.choice(words) for _ in range(120)), None))
        history.append(list(messages))
        messages.append((" ".join(rng.choice(words) for _ in range(80)), None))
    return history


def counting(turns: int = 20, repeats: int = 50) -> list[list[Any]]:
    encoding = load_encoding(None)
    history = conversation_turns(turns)
    warm_times, cold_times, new_only = [], [], []
    for _ in range(repeats):
        counter = TokenCounter(encoding)
        for conversation in history[:-1]:
            counter.count_messages(conversation)
        last = history[-1]
        began = time.perf_counter()
        counter.count_messages(last)
        warm_times.append((time.perf_counter() - began) * 1e6)
        began = time.perf_counter()
        TokenCounter(encoding).count_messages(last)
        cold_times.append((time.perf_counter() - began) * 1e6)
        began = time.perf_counter()
        TokenCounter(encoding).count(last[-1][0])
        new_only.append((time.perf_counter() - began) * 1e6)
    what = f"turn {turns} of a re-sent conversation ({len(history[-1])} messages)"
    return [
        [what, "with the per-message cache", statistics.median(warm_times)],
        [what, "counting all of it", statistics.median(cold_times)],
        [what, "counting only the new message", statistics.median(new_only)],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="uvloop: the loop the gateway serves on",
    )
    args = parser.parse_args()
    rows = uvloop.run(ledgers(args.ops)) if args.loop == "uvloop" else asyncio.run(ledgers(args.ops))
    report = Report("budget_step")
    report.table(
        f"Budget step per request ({args.loop} event loop, µs)",
        ["operation", "p50 µs", "p99 µs", "n", "note"],
        rows,
    )
    report.table("Token counting (µs)", ["conversation", "how", "p50 µs"], counting())
    report.save()


if __name__ == "__main__":
    main()
