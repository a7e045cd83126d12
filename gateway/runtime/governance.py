"""Building the quality loop for the routes that ask for it: auditors, the governor of paused
tiers, and the monitor of live precision (all need the decision store)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

from gateway.config.models import GatewayConfig, RouteConfig
from gateway.governance.audit import Auditor, Audits
from gateway.governance.drift import DriftReference, DriftWatch
from gateway.governance.quality import EventSink, Governor, QualityMonitor, RouteQuality
from gateway.observe.alerts import BudgetAlerts
from gateway.observe.metrics import Metrics
from gateway.store.runtime import StoreRuntime
from tiers.base import Tier
from tiers.classifier.model import OUT_OF_SCOPE, Predictor
from tiers.classifier.tier import ClassifierTier


@dataclass(frozen=True, slots=True)
class Governance:
    audits: Audits
    governor: Governor
    monitor: QualityMonitor
    predictors: dict[str, Predictor]  # each classifier route's, whose threshold a breach may raise


def audited_tiers(route: RouteConfig, reference: str) -> list[str]:
    """The tiers below the reference: rules, the classifier, and the LLMs before it on the ladder."""
    tiers = (["rules"] if route.rules else []) + (["classifier"] if route.classifier else [])
    smaller = route.llm[: route.llm.index(reference)] if reference in route.llm else route.llm
    return tiers + [f"llm:{name}" for name in smaller]


def route_labels(route: RouteConfig, predictor: Predictor | None) -> list[str]:
    labels = [label for label in (predictor.lean.classes if predictor else []) if label != OUT_OF_SCOPE]
    labels += [rule.answer for rule in route.rules if rule.answer is not None and rule.answer not in labels]
    return labels


def build_governance(
    config: GatewayConfig,
    llm_tiers: Mapping[str, Tier],
    classifiers: dict[str, Tier],
    references: dict[str, DriftReference],
    store: StoreRuntime | None,
    alerts: BudgetAlerts,
    metrics: Metrics,
    stack: AsyncExitStack,
    previous: Governance | None = None,
) -> Governance:
    """The loop's parts for this config; a breach of the `previous` gateway's carries over."""
    governor = Governor()
    auditors: dict[str, Auditor] = {}
    qualities: list[RouteQuality] = []
    if store is not None:
        for route in config.routes:
            if route.audit is None:
                continue
            classifier = classifiers.get(route.name)
            predictor = classifier.predictor if isinstance(classifier, ClassifierTier) else None
            tiers = audited_tiers(route, route.audit.reference)
            auditors[route.name] = Auditor(
                route.name,
                route.audit,
                llm_tiers[route.audit.reference],
                frozenset(tiers),
                route_labels(route, predictor),
                store.store,
            )
            quality = RouteQuality(route.name, route.audit, tiers, predictor, governor)
            old = previous.monitor.routes.get(route.name) if previous is not None else None
            if old is not None:
                quality.carry_over(old)
            qualities.append(quality)
    drifts = [
        DriftWatch(route.name, references[route.name], route.drift)
        for route in config.routes
        if store is not None and route.name in references
    ]
    audits = Audits(auditors)
    stack.push_async_callback(audits.close)
    sink = EventSink(store.store, alerts.post, metrics.quality_event) if store is not None else None
    monitor = QualityMonitor(qualities, store.store if store is not None else None, sink, drifts)
    metrics.watch_quality(monitor.readings)
    metrics.watch_drift(monitor.drift_readings)
    monitor.start()
    stack.push_async_callback(monitor.close)
    predictors = {
        name: tier.predictor for name, tier in classifiers.items() if isinstance(tier, ClassifierTier)
    }
    return Governance(audits, governor, monitor, predictors)
