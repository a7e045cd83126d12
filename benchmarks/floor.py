"""Pass-through against the floor of its stack, in one run: the simulated upstream called directly,
through a bare forwarder (`reference/forwarder.py`: uvicorn + aiohttp and nothing else), and
through tiergate (an agent with no budget, cache off). Latency at one connection (paired, added
= difference of medians) and requests/s at 32 connections.

    python benchmarks/floor.py [--requests 2000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import sys

from harness import (
    ROOT,
    Report,
    chat_body,
    free_port,
    gateway,
    paired_latency,
    process,
    simulator,
    throughput,
)
from overhead import FREE, bench_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    with simulator() as sim:
        port = free_port()
        forwarder = [
            sys.executable,
            str(ROOT / "benchmarks/reference/forwarder.py"),
            str(port),
            f"{sim}/chat/completions",
        ]
        with process(forwarder, port), gateway(bench_config(sim, None)) as gw:
            auth = f"Bearer {FREE}"
            targets = [
                ("direct", f"{sim}/chat/completions", chat_body("sim-small")),
                ("bare forwarder", f"http://127.0.0.1:{port}/v1/chat/completions", chat_body("sim-small")),
                ("tiergate pass-through", f"{gw}/chat/completions", chat_body("pass")),
            ]
            latency = paired_latency(
                [(url, body, {"authorization": auth}) for _, url, body in targets], args.requests
            )
            rates = [throughput(url, body, auth, 32, args.seconds)["rps"] for _, url, body in targets]
    report = Report("floor")
    report.table(
        "Pass-through against its stack's floor",
        ["target", "p50 ms", "added p50 ms", "requests/s (32 connections)", "share of direct"],
        [
            [name, lat["p50_ms"], lat["p50_ms"] - latency[0]["p50_ms"], rate, f"{rate / rates[0]:.2f}"]
            for (name, _, _), lat, rate in zip(targets, latency, rates, strict=True)
        ],
    )
    report.save({"latency": latency, "rps": rates})


if __name__ == "__main__":
    main()
