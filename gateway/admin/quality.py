"""`GET /admin/quality?route=R`: how a route's decisions are doing, from the store."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gateway.admin.decisions import when
from gateway.errors import BadRequest, NotFound
from gateway.governance.quality import read
from gateway.runtime.build import Gateway

DEFAULT_SINCE_S = 86400.0
DEFAULT_WINDOW = 500
LABEL_TIERS = ("rules", "classifier")


def _precision(reading: Any) -> dict[str, Any]:
    return {
        "precision": reading.precision,
        "interval_95": [round(reading.low, 4), round(reading.high, 4)],
        "weight": reading.weight,
    }


async def quality_report(gateway: Gateway, params: Mapping[str, str]) -> dict[str, Any]:
    name = params.get("route")
    if not name:
        raise BadRequest("give the route: /admin/quality?route=NAME", param="route")
    route = gateway.config.route(name)
    if route is None:
        raise NotFound(f"no route {name!r}", param="route", code="route_not_found")
    since = when(params["since"], "since") if "since" in params else time.time() - DEFAULT_SINCE_S
    assert gateway.store is not None
    store = gateway.store.store
    counts = await store.tier_counts(name, since)
    total = sum(counts.values())
    cheap = sum(n for tier, n in counts.items() if tier in LABEL_TIERS)
    audit = route.audit
    outcomes = await store.outcomes(name, audit.window if audit else DEFAULT_WINDOW)
    weight = audit.feedback_weight if audit else 1.0
    quality = gateway.governance.monitor.routes.get(name)
    report: dict[str, Any] = {
        "route": name,
        "since": since,
        "decisions": {
            "total": total,
            "by_tier": counts,
            "coverage": cheap / total if total else None,
            "escalation_rate": (total - cheap) / total if total else None,
        },
        "audited": _precision(read([o for o in outcomes if o.source == "audit"], 1.0)),
        "feedback": _precision(read([o for o in outcomes if o.source == "feedback"], 1.0)),
        "live": _precision(read(outcomes, weight)),
        "audit": None,
        "threshold": None,
    }
    if quality is not None and quality.predictor is not None:
        report["threshold"] = {"in_force": quality.threshold, "calibrated": quality.base_threshold}
    if audit is not None and quality is not None:
        report["audit"] = {
            **audit.model_dump(),
            "breached": quality.breached,
            "checked_at": quality.checked_at,
        }
    report["events"] = [
        {"time": e.time, "kind": e.kind, "detail": e.detail} for e in (await store.events(name, since))[-20:]
    ]
    return report
