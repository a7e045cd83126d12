"""Live precision per audited route, and what a breach does.

Every `check_interval_s` each worker reads the route's latest verdicts from the store (audits, and
feedback weighted `feedback_weight` times), and computes the weighted precision with a 95 % Wilson
interval (the weights taken as counts). When the interval's upper bound falls below
`min_precision` (with at least `min_samples` of weight) the route is in breach, and its
`on_breach` applies: `tighten` raises the classifier's threshold to the lowest confidence above
which the audited classifier answers were right often enough (or shuts it if none were);
`pause` sends every request past the audited tiers; `alert` only says so. When the upper bound
is back above `min_precision` the action is undone. Each change is an event: a log line, a
metric, the alerts webhook and a row in the store's events. Workers read the same store, so
they reach the same verdict; the first to announce a change stores it, and the others, finding it
there, stay quiet (two checking at the same instant may both announce it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec

from gateway.config.models import AuditConfig
from gateway.governance.drift import DriftWatch
from gateway.store.protocol import DecisionQuery, Event, Outcome, Store
from tiers.classifier.model import Predictor

log = logging.getLogger("tiergate")

PostEvent = Callable[[msgspec.Struct], None]
OnEvent = Callable[[Event], None]
Z95 = 1.959964
TIGHTEN_MIN_WEIGHT = 10.0  # audited answers above a candidate threshold needed to trust it
SHUT = 1.0 + 1e-9  # a threshold no confidence reaches


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) with no evidence."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    # the bounds hold the point estimate even where rounding would put it a hair outside
    # (0 successes: a lower bound of 1e-19 above 0)
    low = min(p, max(0.0, (centre - spread) / denominator))
    return low, max(p, min(1.0, (centre + spread) / denominator))


class Reading(msgspec.Struct, frozen=True):
    precision: float | None
    low: float
    high: float
    weight: float
    audits: int
    feedback: int


def read(outcomes: Sequence[Outcome], feedback_weight: float) -> Reading:
    weight = right = 0.0
    audits = feedback = 0
    for outcome in outcomes:
        w = feedback_weight if outcome.source == "feedback" else 1.0
        weight += w
        right += w if outcome.agreed else 0.0
        audits += outcome.source == "audit"
        feedback += outcome.source == "feedback"
    low, high = wilson(right, weight)
    return Reading(right / weight if weight else None, low, high, weight, audits, feedback)


def supported_threshold(outcomes: Sequence[Outcome], min_precision: float, feedback_weight: float) -> float:
    """The lowest classifier confidence above which the verdicts say it was right often enough."""
    scored = sorted(
        (o for o in outcomes if o.tier == "classifier" and o.confidence is not None),
        key=lambda o: o.confidence or 0.0,
        reverse=True,
    )
    best = SHUT
    weight = right = 0.0
    for outcome in scored:
        w = feedback_weight if outcome.source == "feedback" else 1.0
        weight += w
        right += w if outcome.agreed else 0.0
        if weight >= TIGHTEN_MIN_WEIGHT and right / weight >= min_precision:
            best = outcome.confidence or 0.0
    return best


class Governor:
    """Tiers a breach has paused, per route: what the planner passes over."""

    def __init__(self) -> None:
        self._paused: dict[str, Mapping[str, str]] = {}

    def skips(self, route: str) -> Mapping[str, str] | None:
        return self._paused.get(route)

    def pause(self, route: str, tiers: Sequence[str], reason: str) -> None:
        self._paused[route] = {tier: reason for tier in tiers}

    def resume(self, route: str) -> None:
        self._paused.pop(route, None)


class RouteQuality:
    """One audited route: its latest reading, and its breach (if any) applied."""

    def __init__(
        self,
        route: str,
        config: AuditConfig,
        audited_tiers: Sequence[str],
        predictor: Predictor | None,
        governor: Governor,
    ) -> None:
        self.route = route
        self.config = config
        self.audited_tiers = tuple(audited_tiers)
        self.predictor = predictor
        self.base_threshold = predictor.threshold if predictor is not None else None
        self.governor = governor
        self.reading = Reading(None, 0.0, 1.0, 0.0, 0, 0)
        self.breached = False
        self.checked_at: float | None = None

    @property
    def threshold(self) -> float | None:
        return self.predictor.threshold if self.predictor is not None else None

    def judge(self, outcomes: Sequence[Outcome]) -> Event | None:
        """Take a new reading; the event, when the route enters or leaves breach."""
        config = self.config
        self.reading = reading = read(outcomes, config.feedback_weight)
        self.checked_at = time.time()
        enough = reading.weight >= config.min_samples
        if not self.breached and enough and reading.high < config.min_precision:
            self.breached = True
            return self._event("quality.breach", self._apply(outcomes))
        if self.breached and reading.high >= config.min_precision:
            self.breached = False
            self._undo()
            return self._event("quality.recovered", {})
        if self.breached and config.on_breach == "tighten" and self.predictor is not None:
            self._apply(outcomes)  # the audited rows may support another level by now
        return None

    def carry_over(self, old: RouteQuality) -> None:
        """After a reload: keep the breach the running config was in, and its action, so a rebuilt
        classifier does not answer at its configured threshold until the next check."""
        if not old.breached or old.config != self.config:
            return
        self.breached, self.reading = True, old.reading
        if self.predictor is not None and old.threshold is not None and self.base_threshold is not None:
            self.predictor.threshold = max(self.base_threshold, old.threshold)
        paused = old.governor.skips(self.route)
        if paused is not None:
            self.governor.pause(self.route, list(paused), next(iter(paused.values())))

    def _apply(self, outcomes: Sequence[Outcome]) -> dict[str, object]:
        config = self.config
        if config.on_breach == "tighten" and self.predictor is not None and self.base_threshold is not None:
            level = supported_threshold(outcomes, config.min_precision, config.feedback_weight)
            self.predictor.threshold = max(self.base_threshold, level)
            return {"threshold": self.predictor.threshold, "was": self.base_threshold}
        if config.on_breach == "pause":
            reason = f"paused: live precision below {config.min_precision}"
            self.governor.pause(self.route, self.audited_tiers, reason)
            return {"paused": list(self.audited_tiers)}
        return {}

    def _undo(self) -> None:
        if self.predictor is not None and self.base_threshold is not None:
            self.predictor.threshold = self.base_threshold
        self.governor.resume(self.route)

    def _event(self, kind: str, detail: dict[str, object]) -> Event:
        reading = self.reading
        return Event(
            time=time.time(),
            kind=kind,
            route=self.route,
            detail={
                "action": self.config.on_breach,
                "precision": reading.precision,
                "interval": [reading.low, reading.high],
                "weight": reading.weight,
                "min_precision": self.config.min_precision,
                **detail,
            },
        )


class QualityMonitor:
    """The background task that reads each audited route's window and acts on it."""

    def __init__(
        self,
        routes: Sequence[RouteQuality],
        store: Store | None,
        announce: EventSink | None,
        drifts: Sequence[DriftWatch] = (),
    ) -> None:
        self.routes = {r.route: r for r in routes}
        self.drifts = {d.route: d for d in drifts}
        self._store = store
        self._announce = announce
        self._task: asyncio.Task[None] | None = None

    def readings(self) -> list[tuple[str, float | None, float, float, bool, float | None]]:
        return [
            (q.route, q.reading.precision, q.reading.low, q.reading.high, q.breached, q.threshold)
            for q in self.routes.values()
        ]

    def drift_readings(self) -> list[tuple[str, str, float]]:
        return [(d.route, signal, value) for d in self.drifts.values() for signal, value in d.psi.items()]

    def start(self) -> None:
        if (self.routes or self.drifts) and self._store is not None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        interval = min(
            [r.config.check_interval_s for r in self.routes.values()]
            + [d.config.check_interval_s for d in self.drifts.values()]
        )
        while True:
            await asyncio.sleep(interval)
            await self.check()

    async def check(self) -> None:
        if self._store is None or self._announce is None:
            return
        for quality in self.routes.values():
            try:
                outcomes = await self._store.outcomes(quality.route, quality.config.window)
            except Exception as exc:
                log.warning("live precision of route %r not read: %s", quality.route, exc)
                continue
            event = quality.judge(outcomes)
            if event is not None:
                await self._announce.send(event)
        for watch in self.drifts.values():
            try:
                page = await self._store.decisions(
                    DecisionQuery(route=watch.route, limit=watch.config.window)
                )
            except Exception as exc:
                log.warning("drift of route %r not read: %s", watch.route, exc)
                continue
            for event in watch.judge(page.records):
                await self._announce.send(event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class EventSink:
    """Where quality events go: the log, the store, the metrics and the alerts webhook."""

    def __init__(self, store: Store, post: PostEvent | None, on_event: OnEvent | None = None) -> None:
        self._store = store
        self._post = post
        self._on_event = on_event

    async def send(self, event: Event) -> None:
        """Announce an event, unless another worker (reading the same store) already has: each
        worker reaches the same verdict, and a change is announced once."""
        try:
            if await self._announced(event):
                return
        except Exception as exc:  # the store may be down: better twice than never
            log.warning("earlier events not read: %s", exc)
        log.warning("%s", msgspec.json.encode(event).decode())
        if self._on_event is not None:
            self._on_event(event)
        if self._post is not None:
            self._post(event)
        try:
            await self._store.add_event(event)
        except Exception as exc:
            log.warning("event not stored: %s", exc)

    async def _announced(self, event: Event) -> bool:
        """The latest stored event of the same route, family and signal is this very change."""
        family, signal = event.kind.split(".")[0], event.detail.get("signal")
        same = [
            e
            for e in await self._store.events(event.route)
            if e.route == event.route and e.kind.split(".")[0] == family and e.detail.get("signal") == signal
        ]
        return bool(same) and same[-1].kind == event.kind
