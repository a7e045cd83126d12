"""The header limit of the guarded HTTP protocol decides on the request's header bytes alone,
however the bytes are split into reads, and whatever body follows them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.protocol import ConnectionLimits, GuardedProtocol

LIMIT = 1024


def refused(reads: list[bytes]) -> bool:
    """Whether the header check refuses a request arriving in these reads (the check alone: no
    transport, no parser)."""
    guard = object.__new__(GuardedProtocol)  # the method under test needs only these attributes
    guard.limits = ConnectionLimits(LIMIT, 10.0, 30.0)
    guard._header_bytes, guard._tail = 0, b""
    seen = b""
    for data in reads:
        if guard._over_header_limit(data):
            return True
        seen += data
        if b"\r\n\r\n" in seen:  # the parser has the whole head: no more reads are checked
            return False
    return False


@settings(max_examples=300, deadline=None)
@given(
    header=st.integers(min_value=0, max_value=2 * LIMIT),
    body=st.integers(min_value=0, max_value=3 * LIMIT),
    cuts=st.lists(st.integers(min_value=1, max_value=6 * LIMIT), max_size=8),
)
def test_the_limit_counts_header_bytes_only_however_they_are_split(
    header: int, body: int, cuts: list[int]
) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nx-pad: " + b"a" * header + b"\r\n\r\n"
    message = head + (b"{\r\n\r\n}" * body)[:body]  # a body may hold blank lines of its own
    points = sorted({c for c in cuts if c < len(message)})
    reads = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    assert refused(reads) == (len(head) > LIMIT)
