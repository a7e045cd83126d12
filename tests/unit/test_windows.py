"""Sliding-window counts: events leave a whole slice at a time, within one slice of the window."""

from __future__ import annotations

import pytest

from tiers.llm.windows import WindowCounts


def test_counts_leave_the_window_a_slice_at_a_time() -> None:
    now = [100.0]
    counts = WindowCounts(10.0, slices=10, clock=lambda: now[0])
    counts.add(1, 0)
    now[0] += 4.2
    counts.add(2, 1)
    assert counts.totals() == (3, 1)
    now[0] += 5.0  # 9.2 s after the first event: still inside
    assert counts.totals() == (3, 1)
    now[0] += 1.0  # 10.2 s: the first slice has left
    assert counts.totals() == (2, 1)
    now[0] += 10.0
    assert counts.totals() == (0, 0)
    counts.add(5, 5)
    counts.clear()
    assert counts.totals() == (0, 0)


def test_a_window_needs_a_length_and_slices() -> None:
    with pytest.raises(ValueError):
        WindowCounts(0)
    with pytest.raises(ValueError):
        WindowCounts(1, slices=0)
