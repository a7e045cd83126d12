"""Load-test personas for tiergate (locust, FastHttpUser). Works against any running gateway that
has the agents of benchmarks/load/gateway.yaml; `benchmarks/run_load.sh` starts everything.

Besides locust's own request statistics, every answer is counted by the tier that gave it
(`tier: rules`, `tier: classifier`, `tier: llm:small`, ...), by cache result, and by tokens, as
pseudo-requests of type TIER, CACHE and TOKENS; budget refusals appear as BUDGET refused.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

DATA = Path(os.environ.get("TIERGATE_LOAD_DATA", "../shared/data/banking77/test.csv"))
TRIAGE_TEXTS = (
    [row["text"] for row in csv.DictReader(DATA.open())] if DATA.exists() else ["my card has not arrived"]
)
LONG_CONTEXT = " ".join(["The quarterly report shows revenue growth in every region, with costs flat."] * 60)


def count(environment: Any, kind: str, name: str, amount: int = 0) -> None:
    environment.events.request.fire(
        request_type=kind, name=name, response_time=0, response_length=amount, exception=None, context={}
    )


class Agent(FastHttpUser):
    abstract = True
    key = ""
    wait_time = between(0.05, 0.3)

    def chat(self, name: str, body: dict[str, Any]) -> None:
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        with self.client.post(
            "/v1/chat/completions", data=json.dumps(body), headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code == 429:
                count(self.environment, "BUDGET", "refused")
                response.success()  # an expected answer for a runaway agent
                return
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            tier = response.headers.get("x-tiergate-tier", "?")
            count(self.environment, "TIER", tier)
            count(self.environment, "CACHE", response.headers.get("x-tiergate-cache", "?"))
            if not body.get("stream"):
                usage = (response.json() or {}).get("usage") or {}
                count(self.environment, "TOKENS", "total", int(usage.get("total_tokens", 0)))


class TriageAgent(Agent):
    """Short routing decisions: mostly answered by rules or the classifier."""

    weight = 5
    key = "sk-load-triage"

    @task
    def triage(self) -> None:
        text = random.choice(TRIAGE_TEXTS)
        if random.random() < 0.1:
            text = "I forgot my passcode, how do I reset it?"
        self.chat("triage", {"model": "ticket-triage", "messages": [{"role": "user", "content": text}]})


class SupportAgent(Agent):
    """A chat that streams."""

    weight = 3
    key = "sk-load-support"

    @task
    def converse(self) -> None:
        turns = [{"role": "user", "content": f"My order {random.randint(1, 10**6)} is late, what can I do?"}]
        self.chat("support (stream)", {"model": "auto", "stream": True, "messages": turns, "max_tokens": 120})


class AnalystAgent(Agent):
    """Long prompts that the complexity score sends to the large model."""

    weight = 1
    key = "sk-load-analyst"

    @task
    def analyse(self) -> None:
        prompt = LONG_CONTEXT + " Explain step by step why margins changed and compare the regions."
        self.chat(
            "analyst", {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 300}
        )


class RunawayAgent(Agent):
    """An agent in a loop that exhausts its budget and then meets 429s."""

    weight = 1
    key = "sk-load-runaway"
    wait_time = between(0.01, 0.05)

    @task
    def spin(self) -> None:
        self.chat(
            "runaway",
            {"model": "auto", "messages": [{"role": "user", "content": "try again"}], "max_tokens": 200},
        )


class RepeatAgent(Agent):
    """The same deterministic questions again and again: cache hits."""

    weight = 2
    key = "sk-load-repeat"

    @task
    def ask_again(self) -> None:
        question = random.choice(["What are your opening hours?", "How do I change my address?", "Fees?"])
        self.chat(
            "repeat", {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": question}]}
        )


@events.quitting.add_listener
def summary(environment: Any, **_: Any) -> None:
    stats = environment.stats
    kinds: dict[str, dict[str, int]] = {}
    for (name, kind), entry in stats.entries.items():
        if kind in ("TIER", "CACHE", "BUDGET", "TOKENS"):
            value = entry.total_content_length if kind == "TOKENS" else entry.num_requests
            kinds.setdefault(kind, {})[name] = value
    out = os.environ.get("TIERGATE_LOAD_SUMMARY")
    if out:
        Path(out).write_text(json.dumps(kinds, indent=2))
