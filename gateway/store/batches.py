"""Moving one batch of spooled records into the store: read whole lines from a segment, decode
the columns, insert. `Batches` is the seam: `StoreBatches` does it in the worker's event loop,
through the store. (Shipping SQLite batches from a process of their own was measured too, in
benchmarks/store.py, and gained nothing measurable on throughput; it is not kept.)"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import msgspec

from gateway.store.protocol import DecisionRow, Store

TYPICAL_LINE_BYTES = 1024  # a read for n lines takes n of these (fewer, longer lines come back fewer)
LINE_BYTES = 1024 * 1024  # and at least this, so that any one record fits in a read


class _Columns(msgspec.Struct):
    """The fields of a decision record that the store keeps as columns."""

    id: str
    time: float
    agent: str
    route: str
    status: int
    tier: str | None = None


_decode = msgspec.json.Decoder(_Columns).decode


class Shipped(msgspec.Struct, frozen=True):
    lines: int  # read from the segment (stored, or unreadable)
    size: int  # bytes they take
    unreadable: list[bytes]  # lines that were not records (a write a crash cut short)


def read_lines(path: Path, offset: int, max_lines: int) -> tuple[list[bytes], int]:
    """Up to `max_lines` whole lines after `offset`, and how many bytes they take."""
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(max(LINE_BYTES, max_lines * TYPICAL_LINE_BYTES))
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], 0
    lines = chunk[: end + 1].split(b"\n", max_lines)
    if len(lines) > max_lines:  # more than asked: the rest is read again next time
        return lines[:max_lines], end + 1 - len(lines[max_lines])
    return lines[:-1], end + 1


def decode_rows(lines: list[bytes]) -> tuple[list[DecisionRow], list[bytes]]:
    rows, unreadable = [], []
    for line in lines:
        try:
            c = _decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            unreadable.append(line[:200])
            continue
        rows.append(DecisionRow(c.id, c.time, c.agent, c.route, c.status, line, c.tier))
    return rows, unreadable


class Batches(Protocol):
    async def ship(self, path: Path, offset: int, max_lines: int) -> Shipped: ...

    async def close(self) -> None: ...


class StoreBatches:
    """Batches read, decoded and inserted in the worker's event loop, through the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def ship(self, path: Path, offset: int, max_lines: int) -> Shipped:
        lines, size = read_lines(path, offset, max_lines)
        rows, unreadable = decode_rows(lines)
        if rows:
            await self._store.add_decisions(rows)
        return Shipped(len(lines), size, unreadable)

    async def close(self) -> None:
        return None
