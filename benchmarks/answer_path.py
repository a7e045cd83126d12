"""In-process cost of one rules answer whose messages are new (as most agents' prompts are), through
the whole request path (`RequestPath.complete`) without HTTP: what the gateway itself spends.

    python benchmarks/answer_path.py [--requests 3000] [--words 150]

Each request carries a new system and user message of about `--words` words; the first tenth warm
up. The rules route answers every request; the agent has no limits, so nothing needs the prompt's
token count.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from contextlib import AsyncExitStack

import yaml
from harness import Report

from gateway.config.loading import parse_config
from gateway.runtime.build import build_gateway
from tiers.types import ChatRequest, Message

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "would",
    "make",
    "like",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "its",
    "now",
    "find",
    "long",
]


def config_text() -> str:
    return yaml.safe_dump(
        {
            "upstreams": [{"name": "small", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
            "agents": [{"id": "free", "api_key": "sk-bench-answer-path", "routes": ["triage"]}],
            "routes": [
                {
                    "name": "triage",
                    "rules": [{"when": {"last_user_matches": "(?i)password"}, "answer": "account_access"}],
                    "llm": ["small"],
                }
            ],
        }
    )


async def measure(requests: int, words: int) -> float:
    config = parse_config(config_text(), {})
    rng = random.Random(1)

    def text(i: int) -> str:
        return f"password help {i}: " + " ".join(rng.choice(WORDS) for _ in range(words))

    chats = [
        ChatRequest(
            model="triage",
            messages=[Message(role="system", content=text(-i)), Message(role="user", content=text(i))],
        )
        for i in range(requests)
    ]
    warm = requests // 10
    async with AsyncExitStack() as stack:
        gateway = await build_gateway(config, stack)
        agent = config.agents[0]
        for chat in chats[:warm]:
            await gateway.chat.complete(agent, chat)
        began = time.perf_counter()
        for chat in chats[warm:]:
            result = await gateway.chat.complete(agent, chat)
            assert result.headers["x-tiergate-tier"] == "rules"
        return (time.perf_counter() - began) / (requests - warm) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--words", type=int, default=150)
    args = parser.parse_args()
    per = asyncio.run(measure(args.requests, args.words))
    report = Report("answer_path")
    report.table(
        "A rules answer to new messages, in process",
        ["requests", "words per message", "µs per answer"],
        [[args.requests, args.words, per]],
    )
    report.save()


if __name__ == "__main__":
    main()
