"""Circuit breakers per upstream: stop sending to an upstream that keeps failing, probe it after a
cool-down, and close again on success.

Opens after `failures` consecutive failures, or when the error rate over the last `window_s`
reaches `error_rate` with at least `min_requests` requests. A `Retry-After` from the upstream
lengthens the cool-down, and nothing ever shortens one already running. (A Retry-After on a
single failure is honoured by the retry loop's wait, not by opening the circuit.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tiers.llm.windows import WindowCounts


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    failures: int = 5
    error_rate: float = 0.5
    min_requests: int = 20
    window_s: float = 30.0
    cooldown_s: float = 10.0


class CircuitBreaker:
    def __init__(self, settings: CircuitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._consecutive = 0
        self._outcomes = WindowCounts(settings.window_s, clock=clock)  # (requests, failures)
        self._open_until = 0.0
        self._probing = False
        self.opened_count = 0
        # told of each change this breaker finds itself (not of those it is told of): an opening,
        # with its cool-down in seconds, or a close (None) after a successful probe
        self.on_change: Callable[[float | None], None] | None = None

    @property
    def state(self) -> str:
        if self._open_until == 0.0:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    def retry_after(self) -> float:
        return max(0.0, self._open_until - self._clock())

    def allow(self) -> bool:
        """May a request go out now? In half-open, one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._probing:
            return False
        self._probing = True
        return True

    def release(self) -> None:
        """A request let through that ended without an outcome (cancelled): free the probe slot."""
        self._probing = False

    def record(self, failed: bool, retry_after_s: float | None = None) -> None:
        self._probing = False
        if not failed:
            self._consecutive = 0
            if self._open_until:
                self._open_until = 0.0  # a successful probe closes the circuit
                self._outcomes.clear()
                if self.on_change is not None:
                    self.on_change(None)
            self._outcomes.add(1, 0)
            return
        self._consecutive += 1
        self._outcomes.add(1, 1)
        if self._open_until or self._should_open():
            self._open(self._clock(), retry_after_s)

    def _should_open(self) -> bool:
        if self._consecutive >= self._settings.failures:
            return True
        total, failures = self._outcomes.totals()
        if total < self._settings.min_requests:
            return False
        return failures / total >= self._settings.error_rate

    def _open(self, now: float, retry_after_s: float | None) -> None:
        cooldown = max(self._settings.cooldown_s, retry_after_s or 0.0)
        if now >= self._open_until:
            self.opened_count += 1
        if now + cooldown > self._open_until and self.on_change is not None:
            self.on_change(cooldown)
        self._open_until = max(self._open_until, now + cooldown)  # never shorten a running cool-down

    def opened_elsewhere(self, seconds: float) -> None:
        """Another worker (or gateway) opened this upstream's circuit for `seconds`."""
        now = self._clock()
        if now >= self._open_until:
            self.opened_count += 1
        self._open_until = max(self._open_until, now + seconds)
        self._probing = False

    def closed_elsewhere(self) -> None:
        """Another worker's probe succeeded: the upstream answers again."""
        if self._open_until:
            self._open_until = 0.0
            self._consecutive = 0
            self._outcomes.clear()
