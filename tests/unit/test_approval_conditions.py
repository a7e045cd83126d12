"""Which approval condition an answer meets: tool calls and their arguments, confidence, the
classifier's out-of-scope, metadata."""

from __future__ import annotations

from typing import Any

from gateway.approval.conditions import describe, first_holding
from gateway.approval.gate import edited_body, request_hash
from gateway.config.approvals import ApprovalPolicy
from routing.ladder import Attempt
from tiers.types import Answer, ChatRequest, Message


def policy(*conditions: dict[str, Any]) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate({"when": list(conditions)})


def call(arguments: str, name: str = "issue_refund") -> Answer:
    return Answer(tier="llm:small", confidence=1.0, tool_calls=((name, arguments),))


REQUEST = ChatRequest(model="r", messages=[Message(role="user", content="refund me")])


def test_tool_call_arguments_are_compared_by_dotted_path() -> None:
    big = policy({"tool_call": "issue_refund", "args": {"order.amount": {"gt": 500}}})
    assert first_holding(big, call('{"order": {"amount": 750}}'), REQUEST, []) is not None
    assert first_holding(big, call('{"order": {"amount": 500}}'), REQUEST, []) is None
    assert first_holding(big, call('{"order": {"amount": "750"}}'), REQUEST, []) is None  # not a number
    assert first_holding(big, call('{"amount": 750}'), REQUEST, []) is None  # no such field
    assert first_holding(big, call('{"order": {"amount": 750}}', name="other"), REQUEST, []) is None
    assert first_holding(big, call("{not json"), REQUEST, []) is not None  # unreadable: ask
    each = policy(
        {"tool_call": "issue_refund", "args": {"amount": {"gte": 10, "lte": 20}, "currency": {"in": ["EUR"]}}}
    )
    assert first_holding(each, call('{"amount": 10, "currency": "EUR"}'), REQUEST, []) is not None
    assert first_holding(each, call('{"amount": 21, "currency": "EUR"}'), REQUEST, []) is None
    assert first_holding(each, call('{"amount": 15, "currency": "USD"}'), REQUEST, []) is None
    exact = policy({"tool_call": "close_account", "args": {"items.0": {"eq": "all"}}})
    assert first_holding(exact, call('{"items": ["all"]}', "close_account"), REQUEST, []) is not None
    assert "issue_refund with order.amount gt 500" in describe(big.when[0])


def test_confidence_out_of_scope_and_metadata() -> None:
    unsure = policy({"confidence_below": 0.8})
    assert first_holding(unsure, Answer(tier="classifier", confidence=0.79), REQUEST, []) is not None
    assert first_holding(unsure, Answer(tier="classifier", confidence=0.8), REQUEST, []) is None
    unknown = policy({"out_of_scope": True})
    escalated = [Attempt(tier="classifier", outcome="escalated", reason="out of scope: ...")]
    answered = [Attempt(tier="classifier", outcome="answered")]
    assert first_holding(unknown, Answer(tier="llm:small"), REQUEST, escalated) is not None
    assert first_holding(unknown, Answer(tier="classifier"), REQUEST, answered) is None
    high = policy({"metadata": {"impact": "high"}})
    tagged = ChatRequest(model="r", messages=REQUEST.messages, metadata={"impact": "high"})
    assert first_holding(high, Answer(tier="rules"), tagged, []) is not None
    assert first_holding(high, Answer(tier="rules"), REQUEST, []) is None
    both = policy({"metadata": {"impact": "high"}, "confidence_below": 0.5})  # every field must hold
    assert first_holding(both, Answer(tier="rules", confidence=0.9), tagged, []) is None


def test_a_resend_is_the_same_request_streamed_or_not_and_an_edit_replaces_the_answer() -> None:
    streamed = ChatRequest(model="r", messages=REQUEST.messages, stream=True)
    assert request_hash("a", "r", streamed) == request_hash("a", "r", REQUEST)
    assert request_hash("b", "r", REQUEST) != request_hash("a", "r", REQUEST)
    body = b'{"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}}]}'
    assert b'"content":"billing"' in edited_body(body, "billing")
    assert b"tool_calls" not in edited_body(body, "billing")
    assert b'"id":"2"' in edited_body(body, {"tool_calls": [{"id": "2"}]})
