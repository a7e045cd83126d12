"""The arithmetic of live precision: Wilson intervals, weighted readings, the threshold a window
supports, and how a reference's answer is read as a label."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.models import AuditConfig
from gateway.governance.audit import label_of
from gateway.governance.quality import SHUT, Governor, RouteQuality, read, supported_threshold, wilson
from gateway.store.protocol import Outcome


def test_wilson_matches_known_intervals() -> None:
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(95, 100)
    assert (low, high) == (pytest.approx(0.8882, abs=1e-4), pytest.approx(0.9785, abs=1e-4))
    assert wilson(0, 0) == (0.0, 1.0)


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_brackets_the_point_estimate(successes: int, extra: int) -> None:
    n = successes + extra
    low, high = wilson(successes, n)
    assert 0.0 <= low <= successes / n <= high <= 1.0


def outcome(agreed: bool, source: str = "audit", confidence: float | None = 0.9) -> Outcome:
    return Outcome(0.0, agreed, source, "classifier", confidence)  # type: ignore[arg-type]


def test_feedback_weighs_more_than_an_audit() -> None:
    reading = read([outcome(False)] * 3 + [outcome(True, "feedback")] * 3, feedback_weight=3.0)
    assert reading.weight == 12.0 and reading.precision == 0.75
    assert (reading.audits, reading.feedback) == (3, 3)


def test_the_supported_threshold_is_the_lowest_confidence_right_often_enough() -> None:
    right = [outcome(True, confidence=0.9 + i / 1000) for i in range(20)]
    wrong = [outcome(False, confidence=0.5 + i / 100) for i in range(10)]
    assert supported_threshold(right + wrong, 0.97, 1.0) == pytest.approx(0.9)
    # at 0.95 one wrong answer more is affordable: 20 of the 21 at or above 0.59 were right
    assert supported_threshold(right + wrong, 0.95, 1.0) == pytest.approx(0.59)
    assert supported_threshold(wrong, 0.95, 1.0) == SHUT  # nothing supports answering


def test_a_breach_needs_enough_evidence_and_recovers() -> None:
    config = AuditConfig(reference="large", min_precision=0.9, on_breach="pause", min_samples=10)
    governor = Governor()
    quality = RouteQuality("r", config, ["classifier"], None, governor)
    assert quality.judge([outcome(False)] * 5) is None  # too little to call
    event = quality.judge([outcome(False)] * 10)
    assert event is not None and event.kind == "quality.breach"
    assert governor.skips("r") == {"classifier": "paused: live precision below 0.9"}
    assert quality.judge([outcome(False)] * 11) is None  # still in breach: no second event
    recovered = quality.judge([outcome(True)] * 100)
    assert recovered is not None and recovered.kind == "quality.recovered"
    assert governor.skips("r") is None
    assert math.isclose(recovered.detail["precision"], 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("card_arrival", "card_arrival"),
        ("Card arrival.", "card_arrival"),
        ("The label is: lost-card", "lost_card"),
        ("refund", "refund"),
        ("no idea", None),
    ],
)
def test_a_reference_answer_is_read_as_a_label(answer: str, label: str | None) -> None:
    assert label_of(answer, ["card_arrival", "lost_card", "refund"]) == label


def test_a_breach_and_its_action_carry_over_a_reload() -> None:
    config = AuditConfig(reference="large", min_precision=0.9, on_breach="pause", min_samples=10)
    before = RouteQuality("r", config, ["classifier", "llm:small"], None, Governor())
    assert before.judge([outcome(False)] * 10) is not None
    after = RouteQuality("r", config, ["classifier", "llm:small"], None, Governor())
    after.carry_over(before)
    assert after.breached and set(after.governor.skips("r") or {}) == {"classifier", "llm:small"}
    assert after.judge([outcome(False)] * 10) is None  # still the same breach: no second event
    changed = RouteQuality(
        "r", config.model_copy(update={"min_precision": 0.5}), ["classifier"], None, Governor()
    )
    changed.carry_over(before)  # another policy starts afresh
    assert not changed.breached and changed.governor.skips("r") is None
