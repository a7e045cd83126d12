"""Loop detection: stop an agent that keeps sending the same request, or a conversation that runs
past its step limit, before it burns its budget. Counted per worker process."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from cachetools import TTLCache

from gateway.errors import RateLimited
from tiers.types import ChatRequest

log = logging.getLogger("tiergate.loops")
# characters that change nothing a model reads: zero-width spaces and joiners, marks, soft hyphens
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def _normalised(text: str) -> str:
    """A text as loop detection compares it: invisible characters dropped, whitespace runs as one
    space, none at the ends (a trailing space must not make a repeat look new)."""
    return " ".join(_INVISIBLE.sub("", text).split())


@dataclass(frozen=True, slots=True)
class LoopLimits:
    max_repeats: int | None  # identical requests (messages and tools) allowed within window_s
    window_s: float
    max_steps: int | None  # requests allowed per conversation id


class LoopGuard:
    def __init__(
        self, on_stop: Callable[[str, str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_stop = on_stop
        self._clock = clock
        self._seen: TTLCache[tuple[str, bytes], deque[float]] = TTLCache(maxsize=100_000, ttl=3600)
        self._steps: TTLCache[tuple[str, str], int] = TTLCache(maxsize=100_000, ttl=86400)

    def check(self, agent: str, limits: LoopLimits, request: ChatRequest, conversation: str | None) -> None:
        if limits.max_repeats is not None:
            messages = [
                (m.role, _normalised(m.text()), m.name, m.tool_calls, m.tool_call_id)
                for m in request.messages
            ]
            canonical = msgspec.json.encode([messages, request.tools], order="sorted")
            key = (agent, hashlib.sha256(canonical).digest())
            now = self._clock()
            times = self._seen.get(key)
            if times is None:
                times = self._seen[key] = deque()
            while times and times[0] <= now - limits.window_s:
                times.popleft()
            if len(times) >= limits.max_repeats:
                self._stop(
                    agent,
                    "repeat",
                    f"agent {agent!r} sent the same request {len(times) + 1} times "
                    f"within {limits.window_s:g}s (limit {limits.max_repeats}): stopped as a loop",
                    retry_after_s=limits.window_s - (now - times[0]),
                )
            times.append(now)
        if limits.max_steps is not None and conversation:
            steps = self._steps.get((agent, conversation), 0) + 1
            if steps > limits.max_steps:
                self._stop(
                    agent,
                    "steps",
                    f"conversation {conversation[:64]!r} of agent {agent!r} passed its "
                    f"limit of {limits.max_steps} steps: stopped as a loop",
                    retry_after_s=None,
                )
            self._steps[(agent, conversation)] = steps

    def _stop(self, agent: str, kind: str, message: str, retry_after_s: float | None) -> None:
        log.warning("loop stopped: %s", message)
        self._on_stop(agent, kind)
        raise RateLimited(message, code=f"loop_detected_{kind}", retry_after_s=retry_after_s or 60)
