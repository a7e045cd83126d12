"""A small intent data set the tests make themselves: four banking intents and out-of-scope chatter."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from hypothesis import strategies as st

INTENTS = {
    "card_arrival": [
        "where is my new card",
        "my card has not arrived yet",
        "when will my card be delivered",
        "still waiting for the card to arrive",
        "card delivery is taking too long",
    ],
    "lost_card": [
        "i lost my card",
        "my card was stolen",
        "cannot find my bank card anywhere",
        "someone took my wallet with the card",
        "please block my missing card",
    ],
    "refund": [
        "i want a refund",
        "how do i get my money back",
        "refund the duplicate charge",
        "the merchant owes me a refund",
        "return money for a cancelled order",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "how much is a euro in dollars today",
        "currency conversion rate please",
        "why is the exchange rate so bad",
        "fx rate for pounds",
    ],
}
OUT_OF_SCOPE = [
    "what is the weather like",
    "tell me a joke about cats",
    "who won the football match",
    "recommend a good pizza place",
    "how tall is mount everest",
]
OPENERS = ["", "hi, ", "hello there, ", "quick question: ", "please help, ", "urgent: "]
CLOSERS = ["", "?", " thanks", " asap", " please", "!"]


def make_rows(n_per_intent: int = 40, seed: int = 1, out_of_scope: int = 30) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    rows: list[tuple[str, str | None]] = []
    for label, phrases in INTENTS.items():
        for _ in range(n_per_intent):
            rows.append((rng.choice(OPENERS) + rng.choice(phrases) + rng.choice(CLOSERS), label))
    for _ in range(out_of_scope):
        rows.append((rng.choice(OPENERS) + rng.choice(OUT_OF_SCOPE) + rng.choice(CLOSERS), None))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((text, label or "") for text, label in rows)
    return path


def write_jsonl(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


VAGUE_CARD_TEXTS = [
    "something is wrong with my card",
    "my card problem",
    "card issue again",
    "help with card",
]


def noisy_rows() -> list[tuple[str, str | None]]:
    """`make_rows()` plus vague card texts labelled either card intent at random: some out-of-fold
    answers are wrong, so training fits a confidence model."""
    rng = random.Random(4)
    return make_rows() + [
        (rng.choice(VAGUE_CARD_TEXTS), rng.choice(["card_arrival", "lost_card"])) for _ in range(40)
    ]


# Short texts of letters, accents, digits, punctuation, whitespace, other scripts, an emoji and a
# ligature: what word pieces and embeddings must handle beyond the intents' plain English.
MIXED_TEXTS = st.lists(
    st.sampled_from(
        [*"abcdeiknorstuwy XYZ é12.,!?'\t\n", "card ", "refund ", "ünïcödé ", "日本 ", "😀", "ﬁ", "--"]
    ),
    max_size=40,
).map("".join)
