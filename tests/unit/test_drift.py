"""Drift arithmetic: PSI, bins, and the training baseline's leave-one-out unseen words."""

from __future__ import annotations

import math

import msgspec
import pytest

from gateway.governance.drift import classifier_view, decode_record
from tiers.classifier.drift import BELOW, OUT_OF_SCOPE_OUTCOME, band, baseline, bin_shares, psi, unseen_share


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert psi([0.9, 0.1], [0.5, 0.5]) == pytest.approx(expected)
    assert psi({"a": 1.0}, {"b": 1.0}) > 0.25  # labels never seen before count too
    assert [band(x) for x in (0.05, 0.1, 0.3)] == ["stable", "moderate", "significant"]


def test_bins_take_each_value_once() -> None:
    assert bin_shares([0.0, 0.05, 0.95, 1.0], [0.0, 0.5, 1.0]) == [0.5, 0.5]
    assert bin_shares([], [0.0, 1.0]) == [0.0]


def test_the_baseline_counts_words_no_other_row_has_as_unseen() -> None:
    found = baseline(["card lost today", "card lost", "zebra card"], [0.9, 0.8, 0.1], ["a", "a", BELOW])
    # row 1: "today" only there (1/3); row 2: none; row 3: "zebra" (1/2)
    assert found["unseen"] == bin_shares([1 / 3, 0.0, 0.5], (0.0, 0.05, 0.15, 0.3, 0.5, 1.0))
    assert found["outcome"] == {"a": 2 / 3, BELOW: 1 / 3}
    assert unseen_share("Card zebra lion", frozenset({"card"})) == pytest.approx(2 / 3)


def test_the_classifiers_part_of_a_decision() -> None:
    answered = {
        "tier": "classifier",
        "label": "refund",
        "attempts": [{"tier": "classifier", "outcome": "answered", "confidence": 0.97}],
    }
    below = {
        "tier": "llm:small",
        "attempts": [
            {
                "tier": "classifier",
                "outcome": "escalated",
                "reason": "confidence 0.4 below 0.9",
                "confidence": 0.4,
            }
        ],
    }
    oos = {
        "tier": "llm:small",
        "attempts": [
            {"tier": "classifier", "outcome": "escalated", "reason": "out of scope: ...", "confidence": 0.1}
        ],
    }
    none = {"tier": "rules", "attempts": [{"tier": "rules", "outcome": "answered"}]}
    views = [classifier_view(decode_record(msgspec.json.encode(r))) for r in (answered, below, oos, none)]
    assert views == [(0.97, "refund"), (0.4, BELOW), (0.1, OUT_OF_SCOPE_OUTCOME), None]
