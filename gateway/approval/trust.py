"""Graduated autonomy: trust earned per agent and condition.

After `trust.after` approvals in a row (no edit, no rejection, no expiry) an agent is trusted for
that condition, and its matching answers are approved at once (a share queued for review after
the fact). One edit, rejection or expiry (a reviewed trusted answer included) revokes the trust.
An agent's `autonomy` overrides: `supervised` is never trusted, `trusted` starts trusted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gateway.config.approvals import ApprovalPolicy
from gateway.config.models import AgentConfig
from gateway.store.protocol import Approval, ApprovalStore, Trust

log = logging.getLogger("tiergate")


class TrustKeeper:
    def __init__(
        self,
        store: ApprovalStore,
        agents: Mapping[str, AgentConfig],
        policy: Callable[[AgentConfig, str], ApprovalPolicy | None],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._agents = agents
        self._policy = policy
        self._clock = clock

    async def trusted(self, agent: AgentConfig, condition: str) -> bool:
        if agent.autonomy == "supervised":
            return False
        held = await self._store.trust_of(agent.id, condition)
        if held is None:
            return agent.autonomy == "trusted"
        return held.trusted

    async def verdict(self, approval: Approval) -> None:
        """Count a decision (or an expiry) towards the agent's trust for the condition."""
        agent = self._agents.get(approval.agent)
        if agent is None:
            return  # an agent no longer configured
        now = self._clock()
        held = await self._store.trust_of(agent.id, approval.condition)
        trusted_now = held.trusted if held is not None else agent.autonomy == "trusted"
        if approval.status != "approved":
            if trusted_now or held is None or held.streak:
                reason = f"{approval.status} (approval {approval.id})"
                await self._store.put_trust(
                    Trust(
                        agent=agent.id,
                        condition=approval.condition,
                        streak=0,
                        trusted=False,
                        since=now,
                        reason=reason,
                    )
                )
                if trusted_now:
                    log.warning("%s lost trust for %s: %s", agent.id, approval.condition, reason)
            return
        streak = (held.streak if held is not None else 0) + 1
        policy = self._policy(agent, approval.route)
        after = policy.trust.after if policy is not None else None
        earned = not trusted_now and agent.autonomy == "standard" and after is not None and streak >= after
        if earned:
            log.warning("%s earned trust for %s after %d approvals", agent.id, approval.condition, streak)
        since = now if earned or held is None else held.since
        if trusted_now:
            reason = held.reason if held is not None else "autonomy: trusted"
        else:
            reason = f"{streak} approvals in a row"
        await self._store.put_trust(
            Trust(
                agent=agent.id,
                condition=approval.condition,
                streak=streak,
                trusted=trusted_now or earned,
                since=since,
                reason=reason,
            )
        )
