"""Soft-limit alerts: one structured event per window crossing, as a log line, a metric and an
optional webhook POST (sent in the background, bounded by a timeout, never delaying a request)."""

from __future__ import annotations

import logging
import time

import aiohttp
import msgspec

from budgets.policy import MICRO_USD, WindowUsage
from gateway.observe.metrics import Metrics
from gateway.observe.webhook import Webhook

log = logging.getLogger("tiergate.budget")


class BudgetAlert(msgspec.Struct):
    event: str
    agent: str
    subject: str
    window: str
    metric: str
    used: float
    limit: float
    time: float


class BudgetAlerts:
    def __init__(
        self, metrics: Metrics, session: aiohttp.ClientSession, webhook_url: str | None, timeout_s: float
    ) -> None:
        self._metrics = metrics
        self._webhook = Webhook(session, webhook_url, timeout_s, "alerts")
        self._holds = {
            True: metrics.budget_holds.labels("lease"),
            False: metrics.budget_holds.labels("ledger"),
        }

    def held(self, leased: bool) -> None:
        """A request's budget was held: from a lease in process, or by a reservation in the ledger."""
        self._holds[leased].inc()

    def crossed(self, agent: str, crossings: tuple[WindowUsage, ...]) -> None:
        for usage in crossings:
            scale = MICRO_USD if usage.metric == "usd" else 1
            alert = BudgetAlert(
                event="budget.soft_limit_crossed",
                agent=agent,
                subject=usage.subject,
                window=usage.window,
                metric=usage.metric,
                used=usage.used / scale,
                limit=usage.limit / scale,
                time=time.time(),
            )
            log.warning("%s", msgspec.json.encode(alert).decode())
            self._metrics.budget_warnings.labels(usage.subject, usage.window, usage.metric).inc()
            self.post(alert)

    def post(self, event: msgspec.Struct) -> None:
        """POST one event to the webhook, in the background (when there is a webhook)."""
        self._webhook.post(event)

    async def close(self) -> None:
        await self._webhook.close()
