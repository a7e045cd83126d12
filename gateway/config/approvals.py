"""Approval policies: when an answer waits for a person, and the webhook that tells of it."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from gateway.config.base import Model

Comparison = Literal["gt", "gte", "lt", "lte", "eq", "in"]


class ApprovalCondition(Model):
    """One reason to ask a person; a condition holds when every field it gives holds."""

    tool_call: str | None = Field(None, description="a tool call the answer proposes, by function name")
    args: dict[str, dict[Comparison, Any]] | None = Field(
        None,
        description="with tool_call: comparisons on fields of its arguments' JSON (dotted paths),"
        " e.g. {amount: {gt: 500}}",
    )
    confidence_below: float | None = Field(None, gt=0, le=1, description="the answering tier's confidence")
    out_of_scope: bool | None = Field(None, description="true: the classifier saw an intent it does not know")
    metadata: dict[str, str] | None = Field(None, description="the request's metadata has these values")

    @model_validator(mode="after")
    def _something(self) -> ApprovalCondition:
        if self.args is not None and self.tool_call is None:
            raise ValueError("args compares a tool call's arguments: give tool_call too")
        if all(v is None for v in (self.tool_call, self.confidence_below, self.out_of_scope, self.metadata)):
            raise ValueError("a condition needs tool_call, confidence_below, out_of_scope or metadata")
        for field, comparisons in (self.args or {}).items():
            for op, value in comparisons.items():
                if op == "in" and not isinstance(value, list):
                    raise ValueError(f"args.{field}.in needs a list")
                if op in ("gt", "gte", "lt", "lte") and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                ):
                    raise ValueError(f"args.{field}.{op} needs a number")
        return self

    def key(self) -> str:
        """The condition as one stable string: trust is earned per agent and condition."""
        return json.dumps(self.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":"))


class TrustConfig(Model):
    after: int | None = Field(
        10, ge=1, description="consecutive approvals (no edit, no rejection) that earn trust; null: never"
    )
    review_sample: float = Field(
        0.1, ge=0, le=1, description="share of trusted, automatically approved answers queued for review"
    )


class ApprovalPolicy(Model):
    """When an answer waits for a person before it is delivered."""

    when: list[ApprovalCondition] = Field(min_length=1, description="any condition holding asks")
    hold_s: float = Field(20.0, ge=0, le=300, description="how long the request waits before 409 pending")
    expire_s: float = Field(3600.0, gt=0, description="a pending approval expires (a rejection) after this")
    trust: TrustConfig = TrustConfig()


class ApprovalsConfig(Model):
    webhook_url: str | None = Field(None, description="POSTed one JSON event per approval asked")
    timeout_s: float = Field(2.0, gt=0)
    link_base: str | None = Field(
        None, description="the gateway's address in the webhook's link (default: the request's Host)"
    )
    expiry_check_s: float = Field(5.0, gt=0, le=300, description="how often pending approvals are expired")
