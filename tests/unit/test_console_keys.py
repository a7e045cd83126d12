"""Who a console key is, and how wrong keys are slowed down (an injected clock)."""

from __future__ import annotations

from gateway.auth import key_digest
from gateway.console.sessions import FAILURE_WINDOW_S, MAX_FAILURES, Keys, Throttle
from gateway.store.rollups import latency_bucket, percentile


def test_the_admin_key_may_decide_a_viewer_key_may_look_and_anything_else_is_nobody() -> None:
    keys = Keys(key_digest("admin-key"), [key_digest("viewer-1"), key_digest("viewer-2")])
    assert keys.role_of("admin-key") == "admin"
    assert keys.role_of("viewer-2") == "viewer"
    assert keys.role_of("viewer-3") is None and keys.role_of("") is None
    assert Keys(None, []).role_of("admin-key") is None  # no admin key configured: nobody is admin


def test_wrong_keys_from_one_address_wait_once_past_the_limit_and_others_do_not() -> None:
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0])
    for _ in range(MAX_FAILURES - 1):
        throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0.0
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == FAILURE_WINDOW_S
    assert throttle.wait_s("10.0.0.2") == 0.0
    now[0] = FAILURE_WINDOW_S / 2
    assert throttle.wait_s("10.0.0.1") == FAILURE_WINDOW_S / 2
    now[0] = FAILURE_WINDOW_S + 0.1  # the failures have aged out
    assert throttle.wait_s("10.0.0.1") == 0.0


def test_latency_percentiles_are_read_from_the_histogram_as_bucket_edges() -> None:
    buckets = [0] * 14
    for ms in (0.4, 0.9, 1.5, 3.0, 40.0, 40.0, 45.0, 48.0, 49.0, 12_000.0):
        buckets[latency_bucket(ms)] += 1
    assert percentile(buckets, 0.5) == 50.0
    assert percentile(buckets, 0.2) == 1.0
    assert percentile(buckets, 1.0) == float("inf")
    assert percentile([0] * 14, 0.5) is None
