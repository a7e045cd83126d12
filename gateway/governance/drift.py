"""Drift alarms: each classifier route's live window of decisions against its model's training
baseline (tiers/classifier/drift.py), per signal; an event when a signal changes band."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.config.models import DriftConfig
from gateway.store.protocol import Event
from tiers.classifier.drift import (
    BELOW,
    CONFIDENCE_EDGES,
    OUT_OF_SCOPE_OUTCOME,
    UNSEEN_EDGES,
    band,
    bin_shares,
    label_shares,
    psi,
    unseen_share,
)


class _Attempt(msgspec.Struct):
    tier: str
    outcome: str
    reason: str | None = None
    confidence: float | None = None


class _Record(msgspec.Struct):
    tier: str | None = None
    label: str | None = None
    attempts: list[_Attempt] = []
    last_user_message: str | None = None


decode_record = msgspec.json.Decoder(_Record).decode


class DriftReference(msgspec.Struct, frozen=True):
    """What a model was trained on, as drift needs it: the baseline and the words it knows."""

    baseline: Mapping[str, Any]
    known_words: frozenset[str]


def drift_reference(model: Any) -> DriftReference | None:
    """A model's reference, if its file has a baseline (models trained before drift had none)."""
    base = model.metrics.get("out_of_fold", {}).get("baseline")
    if not base:
        return None
    known = frozenset(
        term for f in model.features if f.analyzer == "word" for term in f.vocabulary if " " not in term
    )
    return DriftReference(base, known)


def classifier_view(record: _Record) -> tuple[float, str] | None:
    """The classifier's confidence and outcome in a decision; None if it did not score it."""
    for attempt in record.attempts:
        if attempt.tier != "classifier" or attempt.confidence is None:
            continue
        if attempt.outcome == "answered":
            return attempt.confidence, record.label or BELOW
        if attempt.outcome == "escalated":
            reason = attempt.reason or ""
            return attempt.confidence, OUT_OF_SCOPE_OUTCOME if reason.startswith("out of scope") else BELOW
    return None


class DriftWatch:
    """One route's drift: the latest PSI and band of each signal."""

    def __init__(self, route: str, reference: DriftReference, config: DriftConfig) -> None:
        self.route = route
        self.reference = reference
        self.config = config
        self.psi: dict[str, float] = {}
        self.bands: dict[str, str] = {}
        self.decisions = 0

    def judge(self, records: Sequence[bytes]) -> list[Event]:
        views, texts = [], []
        for line in records:
            record = decode_record(line)
            view = classifier_view(record)
            if view is not None:
                views.append(view)
                if record.last_user_message is not None:
                    texts.append(record.last_user_message)
        self.decisions = len(views)
        if len(views) < self.config.min_decisions:
            return []
        base = self.reference.baseline
        live: dict[str, float] = {
            "confidence": psi(bin_shares((c for c, _ in views), CONFIDENCE_EDGES), base["confidence"]),
            "outcome": psi(label_shares(o for _, o in views), base["outcome"]),
        }
        if texts and self.reference.known_words:
            shares = bin_shares((unseen_share(t, self.reference.known_words) for t in texts), UNSEEN_EDGES)
            live["unseen"] = psi(shares, base["unseen"])
        events = []
        for signal, value in live.items():
            self.psi[signal] = value
            now, was = band(value), self.bands.get(signal, "stable")
            self.bands[signal] = now
            if now != was:
                events.append(
                    Event(
                        time=time.time(),
                        kind=f"drift.{now}",
                        route=self.route,
                        detail={
                            "signal": signal,
                            "psi": round(value, 4),
                            "was": was,
                            "decisions": len(views),
                        },
                    )
                )
        return events

    def report(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "signals": {s: {"psi": round(v, 4), "band": self.bands[s]} for s, v in self.psi.items()},
        }
