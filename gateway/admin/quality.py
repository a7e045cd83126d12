"""`GET /admin/quality?route=R`: how a route's decisions are doing, from the store."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.admin.decisions import when
from gateway.errors import BadRequest, NotFound
from gateway.governance.quality import read, wilson
from gateway.pipeline.routes import ShadowDecision
from gateway.runtime.build import Gateway
from gateway.store.protocol import DecisionQuery

DEFAULT_SINCE_S = 86400.0
DEFAULT_WINDOW = 500
LABEL_TIERS = ("rules", "classifier")


def _precision(reading: Any) -> dict[str, Any]:
    return {
        "precision": reading.precision,
        "interval_95": [round(reading.low, 4), round(reading.high, 4)],
        "weight": reading.weight,
    }


async def quality_report(
    gateway: Gateway, params: Mapping[str, str], counts: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """`counts`: the route's decisions by tier since `since`, when the caller has them already
    (the console reads them from its rollups), instead of counting them in the decisions."""
    name = params.get("route")
    if not name:
        raise BadRequest("give the route: /admin/quality?route=NAME", param="route")
    route = gateway.config.route(name)
    if route is None:
        raise NotFound(f"no route {name!r}", param="route", code="route_not_found")
    since = when(params["since"], "since") if "since" in params else time.time() - DEFAULT_SINCE_S
    assert gateway.store is not None
    store = gateway.store.store
    if counts is None:
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
    predictor = gateway.governance.predictors.get(name)
    if quality is not None and quality.predictor is not None:
        report["threshold"] = {"in_force": quality.threshold, "configured": quality.base_threshold}
    elif predictor is not None:
        report["threshold"] = {"in_force": predictor.threshold, "configured": predictor.threshold}
    if audit is not None and quality is not None:
        report["audit"] = {
            **audit.model_dump(),
            "breached": quality.breached,
            "checked_at": quality.checked_at,
        }
    if route.classifier is not None and route.classifier.shadow is not None:
        report["shadow"] = await shadow_report(
            gateway, name, since, audit.window if audit else DEFAULT_WINDOW
        )
    drift = gateway.governance.monitor.drifts.get(name)
    report["drift"] = drift.report() if drift is not None else None
    report["events"] = [
        {"time": e.time, "kind": e.kind, "detail": e.detail} for e in (await store.events(name, since))[-20:]
    ]
    return report


class _Scored(msgspec.Struct):
    tier: str | None = None
    label: str | None = None
    shadow: ShadowDecision | None = None


SHADOW_SAMPLE = 5000


async def shadow_report(gateway: Gateway, route: str, since: float, window: int) -> dict[str, Any]:
    """The candidate beside the model in force: how often it would answer, how often the two agree
    where both answer, and how each fares against the audits' reference labels."""
    assert gateway.store is not None
    store = gateway.store.store
    decode = msgspec.json.Decoder(_Scored).decode
    page = await store.decisions(DecisionQuery(route=route, since=since, limit=SHADOW_SAMPLE))
    scored = [d for d in map(decode, page.records) if d.shadow is not None]
    both = [
        d for d in scored if d.tier == "classifier" and d.shadow is not None and d.shadow.label is not None
    ]
    audits = [a for a in await store.audits(route, window) if a.reference_label is not None]
    records = await store.records([a.decision_id for a in audits])
    checked = [(a, decode(records[a.decision_id])) for a in audits if a.decision_id in records]
    shadow_checked = [
        (a, d.shadow.label) for a, d in checked if d.shadow is not None and d.shadow.label is not None
    ]
    in_force = [a for a, d in checked if d.tier == "classifier"]
    return {
        "decisions": len(scored),
        "in_force_answered": sum(d.tier == "classifier" for d in scored) / len(scored) if scored else None,
        "shadow_answered": sum(d.shadow is not None and d.shadow.label is not None for d in scored)
        / len(scored)
        if scored
        else None,
        "agreement": sum(d.shadow is not None and d.shadow.label == d.label for d in both) / len(both)
        if both
        else None,
        "audited_precision": {
            "in_force": _share([a.agreed for a in in_force]),
            "shadow": _share([label == a.reference_label for a, label in shadow_checked]),
        },
    }


def _share(verdicts: list[bool]) -> dict[str, Any]:
    right = sum(verdicts)
    low, high = wilson(right, len(verdicts))
    return {
        "precision": right / len(verdicts) if verdicts else None,
        "interval_95": [round(low, 4), round(high, 4)],
        "n": len(verdicts),
    }
