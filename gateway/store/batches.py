"""Moving one batch of spooled records into the store: read whole lines from a segment, insert
them as they are (the database takes the columns out of the JSON). Only when the store refuses a
batch are its lines checked here, so that a line that is not a record is dropped, not retried."""

from __future__ import annotations

from pathlib import Path

import msgspec

from gateway.store.protocol import Store

TYPICAL_LINE_BYTES = 1024  # a read for n lines takes n of these (fewer, longer lines come back fewer)
LINE_BYTES = 1024 * 1024  # and at least this, so that any one record fits in a read


class _Columns(msgspec.Struct):
    """The fields of a decision record that the store keeps as columns: a line without them is
    not a record."""

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


def sort_lines(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The lines that are records, and (the first 200 bytes of) those that are not."""
    records, unreadable = [], []
    for line in lines:
        try:
            _decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            unreadable.append(line[:200])
            continue
        records.append(line)
    return records, unreadable


async def ship_batch(store: Store, path: Path, offset: int, max_lines: int) -> Shipped:
    """Up to `max_lines` records of the segment at `path`, after `offset`, into the store."""
    lines, size = read_lines(path, offset, max_lines)
    try:
        await store.add_records(lines)
    except Exception:
        records, unreadable = sort_lines(lines)
        if not unreadable:
            raise  # the store's trouble, not the lines': the batch waits for a retry
        await store.add_records(records)
        return Shipped(len(lines), size, unreadable)
    return Shipped(len(lines), size, [])
