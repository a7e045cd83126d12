"""The rules tier: deterministic conditions on a request, compiled once; the first match wins.

A rule's `answer` is a template when its `last_user_matches` pattern has named groups:
`{when: {last_user_matches: "order (?P<order>\\d+)"}, answer: "order_status:{order}"}`
(write a literal brace as `{{` or `}}` there); otherwise the answer is taken as written.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from tiers.base import TierRequest
from tiers.types import Answer, Escalate


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    last_user_matches: str | None = None
    contains_any: tuple[str, ...] | None = None
    agents: tuple[str, ...] | None = None
    metadata: tuple[tuple[str, str], ...] | None = None
    user: str | None = None
    min_messages: int | None = None
    max_messages: int | None = None
    has_tools: bool | None = None
    answer: str | None = None
    escalate_to: str | None = None
    deny: str | None = None


class RuleError(ValueError):
    """A rule that cannot be compiled (bad pattern, template naming a group the pattern lacks)."""


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    spec: RuleSpec
    pattern: re.Pattern[str] | None
    needles: tuple[str, ...] | None
    templated: bool

    def matches(self, request: TierRequest) -> re.Match[str] | bool:
        spec, chat = self.spec, request.chat
        if spec.agents is not None and request.agent not in spec.agents:
            return False
        count = len(chat.messages)
        if spec.min_messages is not None and count < spec.min_messages:
            return False
        if spec.max_messages is not None and count > spec.max_messages:
            return False
        if spec.has_tools is not None and bool(chat.tools) != spec.has_tools:
            return False
        if spec.user is not None and chat.user != spec.user:
            return False
        if spec.metadata is not None:
            meta = chat.metadata or {}
            if any(meta.get(k) != v for k, v in spec.metadata):
                return False
        if self.needles is None and self.pattern is None:
            return True
        text = chat.last_user_text()
        if self.needles is not None:
            lowered = text.lower()
            if not any(needle in lowered for needle in self.needles):
                return False
        if self.pattern is not None:
            return self.pattern.search(text) or False
        return True


def _compile(spec: RuleSpec) -> _CompiledRule:
    try:
        pattern = re.compile(spec.last_user_matches) if spec.last_user_matches is not None else None
    except re.error as exc:
        raise RuleError(f"rule {spec.name}: invalid pattern: {exc}") from None
    templated = False
    if spec.answer is not None and pattern is not None and pattern.groupindex:
        fields = {name for _, name, _, _ in string.Formatter().parse(spec.answer) if name is not None}
        groups = set(pattern.groupindex) if pattern is not None else set()
        missing = fields - groups
        if missing:
            raise RuleError(f"rule {spec.name}: answer names {sorted(missing)}, not groups of its pattern")
        templated = bool(fields)
    needles = tuple(n.lower() for n in spec.contains_any) if spec.contains_any else None
    return _CompiledRule(spec, pattern, needles, templated)


class RulesTier:
    name = "rules"

    def __init__(self, rules: Sequence[RuleSpec]) -> None:
        self._rules = tuple(_compile(rule) for rule in rules)

    async def decide(self, request: TierRequest) -> Answer | Escalate:
        for rule in self._rules:
            match = rule.matches(request)
            if match is False:
                continue
            spec = rule.spec
            if spec.deny is not None:
                return Escalate(tier=self.name, reason=spec.deny, final=True, status=403)
            if spec.escalate_to is not None:
                return Escalate(
                    tier=self.name,
                    reason=f"rule {spec.name} escalates to {spec.escalate_to}",
                    skip_to=spec.escalate_to,
                )
            content = spec.answer or ""
            if rule.templated and isinstance(match, re.Match):
                content = content.format_map({k: v or "" for k, v in match.groupdict().items()})
            return Answer(tier=self.name, content=content, confidence=1.0)
        return Escalate(tier=self.name, reason="no rule matched")
