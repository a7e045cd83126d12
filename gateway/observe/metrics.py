"""Prometheus metrics, one registry per worker, fed from decision records and budget events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.observe.multiprocess import multiprocess_directory
from gateway.observe.records import DecisionRecord
from tiers.llm.circuit import CircuitBreaker

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


CIRCUIT_READING = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


UNKNOWN_ROUTE = "unknown"


class SpoolReadings(Protocol):
    pending: int
    dropped: int
    full: bool


class ShipperReadings(Protocol):
    shipped: int
    torn: int
    store_up: bool


class _CircuitCollector(Collector):
    """Each upstream's circuit as the worker answering the scrape sees it."""

    def __init__(self, circuits: Mapping[str, CircuitBreaker]) -> None:
        self._circuits = circuits

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "tiergate_circuit_open",
            "1 while an upstream's circuit is open (0.5 half-open), as this worker sees it",
            labels=["upstream"],
        )
        for name, breaker in self._circuits.items():
            family.add_metric([name], CIRCUIT_READING[breaker.state])
        yield family


QualityRow = tuple[str, "float | None", float, float, bool, "float | None"]


class _QualityCollector(Collector):
    """Each audited route's live precision (with its interval), breach and classifier threshold."""

    def __init__(self, readings: Callable[[], Iterable[QualityRow]]) -> None:
        self._readings = readings

    def collect(self) -> Iterable[Any]:
        precision = GaugeMetricFamily(
            "tiergate_live_precision",
            "Live precision of a route's audited answers",
            labels=["route", "bound"],
        )
        breach = GaugeMetricFamily(
            "tiergate_quality_breach", "1 while a route is in breach", labels=["route"]
        )
        threshold = GaugeMetricFamily(
            "tiergate_classifier_threshold", "The classifier threshold in force", labels=["route"]
        )
        for route, point, low, high, breached, in_force in self._readings():
            if point is not None:
                precision.add_metric([route, "point"], point)
            precision.add_metric([route, "low"], low)
            precision.add_metric([route, "high"], high)
            breach.add_metric([route], float(breached))
            if in_force is not None:
                threshold.add_metric([route], in_force)
        yield precision
        yield breach
        yield threshold


class _DriftCollector(Collector):
    def __init__(self, readings: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._readings = readings

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "tiergate_drift_psi",
            "PSI of a route's live window against its model's training baseline, per signal",
            labels=["route", "signal"],
        )
        for route, signal, value in self._readings():
            family.add_metric([route, signal], value)
        yield family


class StoreMetrics:
    """The spool's and the shipper's readings, published by each worker after each shipping pass
    (with several workers: gauges summed, maxed or minned over the live ones, counters summed)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._shipped_seen = (0, 0, 0)  # records shipped, torn, dropped, as last published
        self.spool_bytes = Gauge(
            "tiergate_spool_bytes",
            "Decision records spooled and not yet stored, as of each worker's last shipping pass",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.spool_full = Gauge(
            "tiergate_spool_full",
            "1 while a worker's spool is full and records are dropped",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.store_up = Gauge(
            "tiergate_store_up",
            "1 while the decision store takes every worker's records",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.records_shipped = Counter(
            "tiergate_records_shipped", "Records moved from the spool to the store", registry=registry
        )
        self.records_torn = Counter(
            "tiergate_records_torn", "Spooled records that could not be read", registry=registry
        )
        self.spool_dropped = Counter(
            "tiergate_spool_dropped", "Records dropped because the spool was full", registry=registry
        )

    def readings(self, spool: SpoolReadings, shipper: ShipperReadings) -> None:
        """Publish the spool's and the shipper's readings (after each shipping pass)."""
        self.spool_bytes.set(spool.pending)
        self.spool_full.set(float(spool.full))
        self.store_up.set(float(shipper.store_up))
        shipped, torn, dropped = self._shipped_seen
        self.records_shipped.inc(max(0, shipper.shipped - shipped))
        self.records_torn.inc(max(0, shipper.torn - torn))
        self.spool_dropped.inc(max(0, spool.dropped - dropped))
        self._shipped_seen = (shipper.shipped, shipper.torn, spool.dropped)


class Metrics:
    def __init__(self, circuits: Mapping[str, CircuitBreaker], routes: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        # A request for a model that is no route is labelled `unknown`: label values come only from
        # the config, so no client can grow the registry (or the children below) without bound.
        self._routes = frozenset(routes)
        # Readings of this worker alone (with several workers, the scraped one's), next to the
        # counters that every worker adds to (summed across workers in multiprocess mode).
        self._own: list[Collector] = [_CircuitCollector(circuits)]
        self.store = StoreMetrics(self.registry)
        # Label lookups cost more than the counting: each labelled child is looked up once.
        self._children: dict[tuple[Any, ...], Any] = {}
        self.requests = Counter(
            "tiergate_requests",
            "Chat requests by route, answering tier and HTTP status",
            ["route", "tier", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tiergate_request_latency_seconds",
            "Time in the gateway per request, to the answer or its first byte",
            ["route", "tier"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "tiergate_tokens",
            "Tokens by route, tier and kind",
            ["route", "tier", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "tiergate_cost_usd", "Spend by route and tier", ["route", "tier"], registry=self.registry
        )
        self.lanes = Counter(
            "tiergate_lane_requests", "Chat requests by priority lane", ["lane"], registry=self.registry
        )
        self.waited = Histogram(
            "tiergate_lane_wait_seconds",
            "Time a request waited for budget headroom or an upstream's place, by lane",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.escalations = Counter(
            "tiergate_escalations",
            "Tiers that declined, by route and tier",
            ["route", "tier"],
            registry=self.registry,
        )
        self.cache = Counter("tiergate_cache", "Cache lookups by result", ["result"], registry=self.registry)
        self.budget_refusals = Counter(
            "tiergate_budget_refusals",
            "Requests refused for budget, by agent",
            ["agent"],
            registry=self.registry,
        )
        self.loops_stopped = Counter(
            "tiergate_loops_stopped",
            "Requests stopped as agent loops, by agent and kind",
            ["agent", "kind"],
            registry=self.registry,
        )
        self.quality_events = Counter(
            "tiergate_quality_events",
            "Quality breaches and recoveries, by route and kind",
            ["route", "kind"],
            registry=self.registry,
        )
        self.budget_holds = Counter(
            "tiergate_budget_holds",
            "Budget holds granted: by a reservation in the ledger, or in process from a budget lease",
            ["source"],
            registry=self.registry,
        )
        self.budget_warnings = Counter(
            "tiergate_budget_warnings",
            "Soft-limit crossings, by subject, window and metric",
            ["subject", "window", "metric"],
            registry=self.registry,
        )

    def watch_quality(self, readings: Callable[[], Iterable[QualityRow]]) -> None:
        self._own.append(_QualityCollector(readings))

    def watch_drift(self, readings: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._own.append(_DriftCollector(readings))

    def quality_event(self, event: Any) -> None:
        self._child(self.quality_events, event.route or "", event.kind).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, record: DecisionRecord) -> None:
        route = record.route if record.route in self._routes else UNKNOWN_ROUTE
        tier = record.tier or "none"
        self._child(self.requests, route, tier, str(record.status)).inc()
        self._child(self.latency, route, tier).observe(record.latency_ms.get("total", 0.0) / 1000)
        if record.prompt_tokens:
            self._child(self.tokens, route, tier, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            self._child(self.tokens, route, tier, "completion").inc(record.completion_tokens)
        if record.cost_usd:
            self._child(self.cost, route, tier).inc(record.cost_usd)
        for attempt in record.attempts:
            if attempt.outcome == "escalated":
                self._child(self.escalations, route, attempt.tier).inc()
        if record.cache != "bypass":
            self._child(self.cache, record.cache).inc()
        if record.error_code in ("budget_exhausted", "budget_contended"):
            self._child(self.budget_refusals, record.agent).inc()
        lane = record.lane or "normal"
        self._child(self.lanes, lane).inc()
        self._child(self.waited, lane).observe(record.latency_ms.get("waited", 0.0) / 1000)

    def render(self) -> bytes:
        """Every metric: with several workers (multiprocess mode), the counters and histograms of
        all of them, summed, and the readings of this one."""
        directory = multiprocess_directory()
        registry = CollectorRegistry()
        if directory is None:
            registry.register(_Registered(self.registry))
        else:
            MultiProcessCollector(registry, directory)
        for collector in self._own:
            registry.register(collector)
        return generate_latest(registry)


class _Registered(Collector):
    """A registry's metrics, as one collector of another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Any]:
        return self._registry.collect()
