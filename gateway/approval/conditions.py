"""Which condition of an approval policy an answer meets: a tool call it proposes (with
comparisons on its arguments), the answering tier's confidence, a classifier that did not know
the intent, or the request's metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.config.approvals import ApprovalCondition, ApprovalPolicy
from routing.ladder import Attempt
from tiers.types import Answer, ChatRequest

_MISSING = object()


def field_of(arguments: Any, path: str) -> Any:
    """A field of a tool call's arguments by dotted path (`order.amount`), or _MISSING."""
    node = arguments
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def compares(value: Any, op: str, expected: Any) -> bool:
    if value is _MISSING:
        return False
    if op == "eq":
        return bool(value == expected)
    if op == "in":
        return value in expected
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False  # an order needs a number: "500" is not more than 400 here
    if op == "gt":
        return bool(value > expected)
    if op == "gte":
        return bool(value >= expected)
    if op == "lt":
        return bool(value < expected)
    return bool(value <= expected)


def _tool_call_matches(condition: ApprovalCondition, answer: Answer) -> bool:
    for name, arguments in answer.tool_calls:
        if name != condition.tool_call:
            continue
        if not condition.args:
            return True
        try:
            decoded = msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            return True  # arguments that cannot be read are not to be trusted blindly
        if all(
            compares(field_of(decoded, path), op, expected)
            for path, comparisons in condition.args.items()
            for op, expected in comparisons.items()
        ):
            return True
    return False


def out_of_scope(attempts: Sequence[Attempt]) -> bool:
    """The classifier was asked and did not recognise the intent: its out-of-scope class led, or
    no label reached its threshold."""
    return any(a.tier == "classifier" and a.outcome == "escalated" for a in attempts)


def holds(
    condition: ApprovalCondition, answer: Answer, request: ChatRequest, attempts: Sequence[Attempt]
) -> bool:
    if condition.tool_call is not None and not _tool_call_matches(condition, answer):
        return False
    if condition.confidence_below is not None and not answer.confidence < condition.confidence_below:
        return False
    if condition.out_of_scope is not None and out_of_scope(attempts) != condition.out_of_scope:
        return False
    if condition.metadata is not None:
        given = request.metadata or {}
        if any(given.get(k) != v for k, v in condition.metadata.items()):
            return False
    return True


def first_holding(
    policy: ApprovalPolicy, answer: Answer, request: ChatRequest, attempts: Sequence[Attempt]
) -> ApprovalCondition | None:
    return next((c for c in policy.when if holds(c, answer, request, attempts)), None)


def describe(condition: ApprovalCondition) -> str:
    """The condition in words, for the reviewer and the webhook."""
    parts = []
    if condition.tool_call is not None:
        call = f"the answer calls {condition.tool_call}"
        if condition.args:
            tests = ", ".join(
                f"{path} {op} {msgspec.json.encode(value).decode()}"
                for path, comparisons in condition.args.items()
                for op, value in comparisons.items()
            )
            call += f" with {tests}"
        parts.append(call)
    if condition.confidence_below is not None:
        parts.append(f"the answering tier's confidence is below {condition.confidence_below}")
    if condition.out_of_scope is not None:
        known = "did not know" if condition.out_of_scope else "knew"
        parts.append(f"the classifier {known} the intent")
    if condition.metadata is not None:
        parts.append("metadata " + ", ".join(f"{k}={v}" for k, v in condition.metadata.items()))
    return "; ".join(parts)
