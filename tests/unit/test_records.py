"""The recent-records ring: the last records by id, compressed in blocks, bounded."""

from __future__ import annotations

import random

import msgspec

from gateway.observe.records import DecisionRecord, RecentRecords


def line(i: int) -> bytes:
    record = DecisionRecord(
        id=f"rec{i}", time=1.0 + i, agent="a", route="r", status=200, last_user_message=f"text\nnumber {i}"
    )
    return msgspec.json.encode(record)


def test_every_kept_record_comes_back_exactly_and_the_oldest_go() -> None:
    recent = RecentRecords(keep=300)
    for i in range(1000):
        recent.add(f"rec{i}", line(i))
    for i in range(1000 - 300, 1000):  # the last 300, compressed or not
        assert recent.get(f"rec{i}") == line(i)
    assert recent.get("rec0") is None and recent.get("rec500") is None
    kept = sum(recent.get(f"rec{i}") is not None for i in range(1000))
    assert 300 <= kept < 300 + RecentRecords.BLOCK
    assert msgspec.json.decode(recent.get("rec999") or b"")["last_user_message"] == "text\nnumber 999"


def test_a_small_ring_and_a_disabled_one() -> None:
    small = RecentRecords(keep=3)
    for i in range(10):
        small.add(f"rec{i}", line(i))
    assert small.get("rec9") == line(9) and small.get("rec7") == line(7)
    assert sum(small.get(f"rec{i}") is not None for i in range(10)) < 6
    off = RecentRecords(keep=0)
    off.add("rec1", line(1))
    assert off.get("rec1") is None


def test_compressed_blocks_take_a_fraction_of_the_lines() -> None:
    recent = RecentRecords(keep=1024)
    for i in range(1024):
        recent.add(f"rec{i}", line(i))
    raw = sum(len(line(i)) for i in range(1024))
    stored = sum(len(payload) for payload, _ in recent._sealed.values())
    assert stored < raw / 4


def test_the_ring_stays_within_its_bytes_whatever_the_records_hold() -> None:
    recent = RecentRecords(keep=10_000, max_bytes=200_000)
    rng = random.Random(3)
    for i in range(300):  # incompressible records of about 10 KB each: 3 MB in all
        noise = bytes(rng.getrandbits(8) for _ in range(7_500)).hex()[:10_000]
        recent.add(f"big{i}", msgspec.json.encode({"id": f"big{i}", "noise": noise}))
    assert recent._bytes <= 200_000 + 10_100  # the limit, and at most the record being added
    assert recent.get("big299") is not None and recent.get("big0") is None


def test_client_text_is_clipped_in_errors_with_a_marker() -> None:
    from gateway.errors import NotFound, clip

    assert clip("x" * 50, 10) == "xxxxxxxxxx...[40 more characters]"
    error = NotFound("m" * 1_000_000, param="p" * 1000)
    assert len(error.message) < 2100 and "more characters]" in error.message
    assert error.param is not None and len(error.param) < 250
