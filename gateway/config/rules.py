"""A route's rules as the rules tier takes them."""

from __future__ import annotations

from gateway.config.models import RouteConfig
from tiers.rules import RuleSpec


def rule_specs(route: RouteConfig) -> list[RuleSpec]:
    specs = []
    for i, rule in enumerate(route.rules):
        when = rule.when
        agents = (when.agent,) if isinstance(when.agent, str) else when.agent
        specs.append(
            RuleSpec(
                name=rule.name or f"{route.name}#{i}",
                last_user_matches=when.last_user_matches,
                contains_any=tuple(when.contains_any) if when.contains_any else None,
                agents=tuple(agents) if agents is not None else None,
                metadata=tuple(when.metadata.items()) if when.metadata is not None else None,
                user=when.user,
                min_messages=when.min_messages,
                max_messages=when.max_messages,
                has_tools=when.has_tools,
                answer=rule.answer,
                escalate_to=rule.escalate_to,
                deny=rule.deny,
            )
        )
    return specs
