"""Priority lanes: `critical`, `normal` and `background`. Work waiting for a shared resource (an
upstream's concurrency, a budget's headroom) is served in lane order, and `background` never takes
the last share of a resource, kept for critical work."""

from __future__ import annotations

from typing import Literal, get_args

Lane = Literal["critical", "normal", "background"]
LANES: tuple[Lane, ...] = get_args(Lane)
RANK = {lane: rank for rank, lane in enumerate(LANES)}  # 0 goes first
