"""Circuit breakers: open on failures, probe after the cool-down, close on success."""

from __future__ import annotations

from tiers.llm.circuit import CircuitBreaker, CircuitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**settings: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(CircuitSettings(**settings), clock), clock  # type: ignore[arg-type]


def test_consecutive_failures_open_the_circuit_until_the_cool_down_ends() -> None:
    circuit, clock = breaker(failures=3, cooldown_s=10)
    for _ in range(2):
        circuit.record(failed=True)
    assert circuit.state == "closed" and circuit.allow()
    circuit.record(failed=True)
    assert circuit.state == "open" and not circuit.allow()
    assert 9.9 < circuit.retry_after() <= 10
    clock.now += 10
    assert circuit.state == "half_open"
    assert circuit.allow()  # one probe
    assert not circuit.allow()  # and only one at a time
    circuit.record(failed=False)
    assert circuit.state == "closed" and circuit.allow()


def test_a_failed_probe_reopens_the_circuit() -> None:
    circuit, clock = breaker(failures=1, cooldown_s=5)
    circuit.record(failed=True)
    clock.now += 5
    assert circuit.allow()
    circuit.record(failed=True)
    assert circuit.state == "open" and circuit.opened_count == 2


def test_an_error_rate_over_the_minimum_requests_opens_it() -> None:
    circuit, _ = breaker(failures=100, error_rate=0.5, min_requests=10)
    for i in range(10):
        circuit.record(failed=i % 2 == 1)
    assert circuit.state == "open"


def test_retry_after_lengthens_the_cool_down_and_a_short_one_never_shortens_it() -> None:
    circuit, clock = breaker(failures=1, cooldown_s=5)
    circuit.record(failed=True, retry_after_s=60)
    assert 59 < circuit.retry_after() <= 60
    clock.now += 1
    circuit.record(failed=True, retry_after_s=2)  # a late failure with a short Retry-After
    assert circuit.retry_after() > 58


def test_a_cancelled_probe_frees_the_probe_slot() -> None:
    circuit, clock = breaker(failures=1, cooldown_s=1)
    circuit.record(failed=True)
    clock.now += 1
    assert circuit.allow()
    circuit.release()
    assert circuit.allow()


def test_outcomes_leave_the_window_and_memory_stays_flat_at_any_rate() -> None:
    circuit, clock = breaker(failures=100, error_rate=0.5, min_requests=10, window_s=30)
    for _ in range(9):
        circuit.record(failed=True)
    clock.now += 31.5  # those failures have left the window (give or take one slice)
    for _ in range(10):
        circuit.record(failed=False)
    circuit.record(failed=True)
    assert circuit.state == "closed"  # 1 failure in 11, not 10 in 20
    for _ in range(100_000):
        circuit.record(failed=False)
    assert len(circuit._outcomes._counts) <= 21


def test_a_breaker_tells_of_its_own_changes_and_takes_those_of_others() -> None:
    now = [0.0]
    told: list[float | None] = []
    breaker = CircuitBreaker(CircuitSettings(failures=2, cooldown_s=10), clock=lambda: now[0])
    breaker.on_change = told.append
    breaker.record(failed=True)
    breaker.record(failed=True)
    assert breaker.state == "open" and told == [10]
    now[0] = 11.0
    assert breaker.allow()  # the half-open probe
    breaker.record(failed=False)
    assert breaker.state == "closed" and told == [10, None]
    other = CircuitBreaker(CircuitSettings(), clock=lambda: now[0])
    other.on_change = told.append
    other.opened_elsewhere(5.0)
    assert other.state == "open" and not other.allow() and 4.9 < other.retry_after() <= 5.0
    other.opened_elsewhere(1.0)  # never shortened
    assert other.retry_after() > 4.9
    other.closed_elsewhere()
    assert other.state == "closed" and other.allow()
    assert told == [10, None]  # what it was told of, it does not tell again
