"""Each worker's spool: decision records on local disk until the shipper has stored them.

A worker appends each record (one `os.write`, before the answer goes out, no fsync: a record in
the page cache outlives the process, and only a machine crash could lose it) to its current
segment, `<writer>.<n>.spool`. The writer holds `<writer>.lock` (an flock) for its whole life, so
a shipper can tell a live worker's spool from one left by a worker that died: it may take the
lock of a dead one and ship what it left. How far a segment has been shipped is kept beside it
(`<segment>.offset`); a crash between a store commit and that note ships a few records twice,
which the store ignores (decision ids are unique), so nothing is lost and nothing doubles.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("tiergate")

SEGMENT_SUFFIX = ".spool"
OFFSET_SUFFIX = ".offset"
LOCK_SUFFIX = ".lock"
SEGMENT_BYTES = 16 * 1024 * 1024


class SpoolFull(Exception):
    pass


class SpoolWriter:
    """This worker's spool, and a `RecordSink`: `write` appends one record, or drops it (counted,
    with a log line when dropping starts and stops) while `max_bytes` of records wait unshipped."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.pending = 0  # bytes written and not yet shipped
        self.dropped = 0
        self.full = False
        self._lock = open(directory / (self.name + LOCK_SUFFIX), "ab")  # noqa: SIM115 - held for life
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._number = 0
        self._size = 0
        self.current: Path | None = self._segment_path(0)
        self._fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"{self.name}.{number:08d}{SEGMENT_SUFFIX}"

    def write(self, line: bytes) -> None:
        data = line + b"\n"
        if self._fd < 0:  # stopped: the worker is shutting down
            self.dropped += 1
            log.error("a decision record came after the spool was stopped and was dropped")
            return
        if self.pending + len(data) > self.max_bytes:
            self.dropped += 1
            if not self.full:
                self.full = True
                log.error(
                    "the decision spool is full (%d MiB unshipped): records are being dropped until the"
                    " store catches up",
                    self.pending >> 20,
                )
            return
        written = os.write(self._fd, data)
        while written < len(data):  # a regular file takes it whole, short of a full disk
            written += os.write(self._fd, data[written:])
        self.pending += len(data)
        self._size += len(data)
        if self._size >= self.segment_bytes:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._number += 1
        self._size = 0
        self.current = self._segment_path(self._number)
        self._fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def shipped(self, size: int) -> None:
        self.pending = max(0, self.pending - size)
        if self.full and self.pending < self.max_bytes * 0.9:
            self.full = False
            log.warning("the decision spool has room again (%d records were dropped so far)", self.dropped)

    def stop(self) -> None:
        """Write no more: the current segment is finished (and may be shipped whole)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.current = None

    def close(self) -> None:
        """Stop and let go of the spool; what is unshipped stays for the next shipper to find."""
        self.stop()
        if self.pending == 0:  # all shipped: nothing of this worker needs to stay
            for path in list(segments(self.directory, self.name)):
                Segment(path).remove()
            (self.directory / (self.name + LOCK_SUFFIX)).unlink(missing_ok=True)
        self._lock.close()


class Segment:
    """One spool file as a shipper sees it: how far it has been shipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(path.name + OFFSET_SUFFIX)
        try:
            self.offset = int(self.offset_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            self.offset = 0

    def advance(self, size: int) -> None:
        self.offset += size
        temporary = self.offset_path.with_name(self.offset_path.name + ".tmp")
        temporary.write_text(str(self.offset))
        os.replace(temporary, self.offset_path)

    def size(self) -> int:
        return self.path.stat().st_size

    def remove(self) -> None:
        for path in (self.path, self.offset_path):
            path.unlink(missing_ok=True)


def writer_of(path: Path) -> str:
    return path.name.rsplit(".", 2)[0]


def segments(directory: Path, writer: str | None = None) -> Iterator[Path]:
    """The spool's segments, oldest first for each writer (a writer's numbers only grow)."""
    for path in sorted(directory.glob("*" + SEGMENT_SUFFIX)):
        if writer is None or writer_of(path) == writer:
            yield path


class DeadWriter:
    """The lock of a writer that is gone, taken so that one shipper alone ships what it left."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.lock_path = directory / (name + LOCK_SUFFIX)
        self._lock = open(self.lock_path, "ab")  # noqa: SIM115 - held while its spool is shipped

    def take(self) -> bool:
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            return False
        return True

    def release(self, done: bool) -> None:
        if done:
            self.lock_path.unlink(missing_ok=True)
        self._lock.close()
