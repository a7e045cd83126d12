"""Budget policies and their windows: what a subject (an agent or a team) may spend, and when it resets."""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Metric = Literal["tokens", "usd", "requests"]
Window = Literal["minute", "hour", "day", "month"]
FIXED_SECONDS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
# Money is kept in integer micro-dollars so that every backend adds it up exactly.
MICRO_USD = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    window: Window
    metric: Metric
    limit: int  # tokens, requests, or micro-dollars
    warn: int | None = None  # the soft limit: crossing it emits one event per window
    key: str = field(init=False, repr=False, compare=False)  # "metric:window"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.metric}:{self.window}")


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    subject: str  # "agent:<id>" or "team:<id>"
    limits: tuple[Limit, ...] = ()
    on_exhausted: Literal["reject", "downgrade"] = "reject"
    warn_at: float | None = None

    @classmethod
    def build(
        cls,
        subject: str,
        *,
        tokens: dict[Window, int | None] | None = None,
        usd: dict[Window, float | None] | None = None,
        requests_per_minute: int | None = None,
        on_exhausted: Literal["reject", "downgrade"] = "reject",
        warn_at: float | None = None,
    ) -> BudgetPolicy:
        limits: list[Limit] = []

        def add(window: Window, metric: Metric, amount: int) -> None:
            warn = math.floor(amount * warn_at) if warn_at is not None else None
            limits.append(Limit(window, metric, amount, warn))

        for window, value in (tokens or {}).items():
            if value is not None:
                add(window, "tokens", int(value))
        for window, dollars in (usd or {}).items():
            if dollars is not None:
                add(window, "usd", round(dollars * MICRO_USD))
        if requests_per_minute is not None:
            add("minute", "requests", requests_per_minute)
        return cls(subject, tuple(limits), on_exhausted, warn_at)


def period(window: Window, now: float) -> tuple[int, float]:
    """The current period's number and the time it ends, for a window, at unix time `now`."""
    if window == "month":
        moment = datetime.fromtimestamp(now, UTC)
        number = moment.year * 12 + moment.month - 1
        days = calendar.monthrange(moment.year, moment.month)[1]
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()
        return number, start + days * 86400
    seconds = FIXED_SECONDS[window]
    number = math.floor(now / seconds)
    return number, (number + 1) * seconds


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request may spend at most: its prompt, and the completion it asks room for.
    Prices are in micro-dollars per token of the dearest upstream that may answer."""

    prompt_tokens: int
    max_completion_tokens: int
    input_micro_usd_per_token: float = 0.0
    output_micro_usd_per_token: float = 0.0
    keep_share: float = 0.0  # of each token and money limit, what this request may not use (lanes)

    @property
    def free(self) -> bool:
        """An answer that costs nothing (rules, classifier): only request limits apply."""
        return self.prompt_tokens == 0 and self.max_completion_tokens == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        return math.ceil(
            prompt_tokens * self.input_micro_usd_per_token
            + completion_tokens * self.output_micro_usd_per_token
        )


@dataclass(frozen=True, slots=True)
class WindowUsage:
    subject: str
    window: Window
    metric: Metric
    used: int
    limit: int
    resets_at: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class Reservation:
    agent: str
    subjects: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int  # the completion cap granted; the request's max_tokens is lowered to it
    micro_usd: int
    periods: dict[str, int] = field(default_factory=dict)  # "subject|metric:window" -> period number
    remaining_tokens: int | None = None  # tightest token window after this reservation
    crossed: tuple[WindowUsage, ...] = ()  # soft limits this reservation crossed
    id: str = ""  # set by ledgers that settle idempotently by id (Redis)
    lease: object | None = field(default=None, compare=False, repr=False)  # granted from it, settled to it

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Denied:
    subject: str
    limit: Limit
    retry_after_s: float  # until the blocking limit's window resets
    message: str
    held: int = 0  # of the blocking limit's use, what reservations in flight hold (not yet spent)
    in_flight: int = 0  # how many reservations hold it
    contended: bool = False  # the request would fit once those settle: the budget is not spent


def contention(limit: Limit, used: int, held: int, estimate: Estimate) -> bool:
    """Whether a request refused under `limit` would fit once the reservations in flight settle
    (their holds dropped, nothing spent): the budget is contended, not spent."""
    if held <= 0:
        return False
    if limit.metric == "requests":  # request slots leases hold, and give back when they end
        return used - held < limit.limit
    _, blocked = affordable_completion([(limit, max(0, used - held))], estimate)
    return blocked is None


def denied(
    subject: str,
    limit: Limit,
    used: tuple[int, int, int],
    retry_after_s: float,
    estimate: Estimate,
) -> Denied:
    """A refusal under `limit`; `used`: its use (holds included), what reservations in flight
    hold of it, and how many they are."""
    total, held, in_flight = used
    spent = max(0, total - held)
    message = f"{subject} has spent {spent} of {limit.limit} {limit.metric} this {limit.window}"
    if held > 0:
        holders = (
            "lease(s) of other gateway processes" if limit.metric == "requests" else "request(s) in flight"
        )
        message += f", and {in_flight} {holders} hold {held} more"
    if estimate.keep_share > 0 and limit.metric != "requests":
        message += f"; the last {math.ceil(limit.limit * estimate.keep_share)} are kept for critical work"
    return Denied(
        subject=subject,
        limit=limit,
        retry_after_s=retry_after_s,
        message=message,
        held=held,
        in_flight=in_flight,
        contended=contention(limit, total, held, estimate),
    )


def affordable_completion(
    limits: list[tuple[Limit, int]], estimate: Estimate
) -> tuple[int, tuple[Limit, int] | None]:
    """The largest completion every limit still allows (given used amounts), and the limit that
    blocks the request outright, if any. The Redis script mirrors this in Lua; the contract
    tests hold the two to the same answers."""
    granted = estimate.max_completion_tokens
    for limit, used in limits:
        room = limit.limit - used
        if limit.metric != "requests" and estimate.keep_share > 0:
            room -= math.ceil(limit.limit * estimate.keep_share)
        if limit.metric == "requests":
            if room < 1:
                return 0, (limit, used)
            continue
        if estimate.free:
            continue
        if limit.metric == "tokens":
            allowed = room - estimate.prompt_tokens
        else:
            left = room - estimate.prompt_tokens * estimate.input_micro_usd_per_token
            if left < 0:
                allowed = -1
            elif estimate.output_micro_usd_per_token <= 0:
                allowed = granted
            else:
                allowed = math.floor(left / estimate.output_micro_usd_per_token)
        if allowed < 1:
            return 0, (limit, used)
        granted = min(granted, int(allowed))
    return granted, None
