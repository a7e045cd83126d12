"""Decision records: one per request, saying who answered, who was passed over and why, and at what cost."""

from __future__ import annotations

import itertools
import sys
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Protocol

import msgspec

from gateway.pipeline.routes import ShadowDecision
from routing.ladder import Attempt


class DecisionRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    time: float
    agent: str
    route: str
    status: int
    tier: str | None = None
    label: str | None = None  # the answer of a tier that answers with a label (rules, classifier)
    upstream: str | None = None
    confidence: float | None = None
    attempts: list[Attempt] = []
    cache: str = "bypass"
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_counted: bool = False
    cost_usd: float = 0.0
    baseline_usd: float = 0.0  # what it would have cost at the route's dearest LLM (an estimate)
    latency_ms: dict[str, float] = {}
    validation: str | None = None
    complexity: float | None = None
    error: str | None = None
    error_code: str | None = None
    last_user_message: str | None = None
    shadow: ShadowDecision | None = None  # what the route's candidate classifier would have answered
    lane: str | None = None  # critical, normal or background


class RecordSink(Protocol):
    """Where records go, each as one JSON line (the record encoded once, shared with `RecentRecords`)."""

    def write(self, line: bytes) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Writes each record as one JSON line to a stream (stdout or an opened file)."""

    def __init__(self, stream: IO[bytes], owns: bool) -> None:
        self._stream = stream
        self._owns = owns

    @classmethod
    def to_file(cls, path: str) -> JsonLinesSink:
        return cls(open(path, "ab", buffering=64 * 1024), owns=True)

    @classmethod
    def to_stdout(cls) -> JsonLinesSink:
        return cls(sys.stdout.buffer, owns=False)

    def write(self, line: bytes) -> None:
        self._stream.write(line + b"\n")

    def close(self) -> None:
        self._stream.flush()
        if self._owns:
            self._stream.close()


class TeeSink:
    """Two sinks, each given every record."""

    def __init__(self, first: RecordSink, second: RecordSink) -> None:
        self._first = first
        self._second = second

    def write(self, line: bytes) -> None:
        self._first.write(line)
        self._second.write(line)

    def close(self) -> None:
        self._first.close()


class NoSink:
    def write(self, line: bytes) -> None:
        return None

    def close(self) -> None:
        return None


class RecentRecords:
    """The last `keep` records of this process (and up to one block more), by id, for
    `GET /admin/decisions/{id}`. Records are kept as their JSON lines; every `BLOCK` of them is
    compressed together (one gateway's records are alike, so a block shrinks to about a tenth),
    which holds 10,000 records in about 2 MiB instead of about 10. Whatever the records hold, they
    take at most `max_bytes` (the oldest blocks go first)."""

    BLOCK = 128

    def __init__(self, keep: int, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._keep = keep
        self._max_bytes = max_bytes
        self._bytes = 0  # of the open lines and the sealed blocks
        self._block = max(1, min(self.BLOCK, keep))
        self._open: dict[str, bytes] = {}  # the newest records, not yet compressed
        self._sealed: OrderedDict[int, tuple[bytes, tuple[str, ...]]] = OrderedDict()
        self._where: dict[str, int] = {}  # record id -> sealed block number
        self._numbers = itertools.count()

    def add(self, record_id: str, line: bytes) -> None:
        if self._keep == 0:
            return
        self._open[record_id] = line
        self._bytes += len(line)
        if len(self._open) >= self._block or self._bytes > self._max_bytes:
            self._seal()
        # the oldest block goes once the rest hold `keep` records, or when they take too much room
        while self._sealed and (
            (len(self._sealed) - 1) * self._block + len(self._open) >= self._keep
            or self._bytes > self._max_bytes
        ):
            _, (payload, dropped) = self._sealed.popitem(last=False)
            self._bytes -= len(payload)
            for gone in dropped:
                del self._where[gone]

    def _seal(self) -> None:
        number = next(self._numbers)
        ids = tuple(self._open)
        payload = zlib.compress(b"\n".join(self._open.values()), 1)
        self._bytes += len(payload) - sum(len(line) for line in self._open.values())
        self._sealed[number] = (payload, ids)
        for record_id in ids:
            self._where[record_id] = number
        self._open = {}

    def get(self, record_id: str) -> bytes | None:
        """The record as JSON, or None when it is not (or no longer) kept."""
        line = self._open.get(record_id)
        if line is not None:
            return line
        number = self._where.get(record_id)
        if number is None:
            return None
        payload, ids = self._sealed[number]
        return zlib.decompress(payload).split(b"\n")[ids.index(record_id)]  # JSON has no raw newline


class Recorder:
    """Encodes each record once, for the recent records and the sink, and hands it to `observe`
    (the metrics)."""

    def __init__(
        self, recent: RecentRecords, sink: RecordSink, observe: Callable[[DecisionRecord], None]
    ) -> None:
        self._recent = recent
        self._sink = sink
        self._observe = observe
        self._encode = msgspec.json.Encoder().encode

    def write(self, record: DecisionRecord) -> None:
        line = self._encode(record)
        self._recent.add(record.id, line)
        self._sink.write(line)
        self._observe(record)
