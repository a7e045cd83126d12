"""The simulated upstream's embeddings: a deterministic unit vector per input (from its hash), so a
test can tell inputs apart and see that an answer was cached, with the input's real token count."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Callable
from typing import Any

import msgspec

from tiers.types import EmbeddingsRequest

DIMENSIONS = 16


def vector(item: str | list[int], dimensions: int) -> list[float]:
    seed = item.encode() if isinstance(item, str) else msgspec.json.encode(item)
    raw = b""
    counter = 0
    while len(raw) < dimensions:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings_body(request: EmbeddingsRequest, count: Callable[[str], int]) -> dict[str, Any]:
    items: list[str | list[int]]
    if isinstance(request.input, str):
        items = [request.input]
    elif request.input and isinstance(request.input[0], int):
        items = [request.input]  # type: ignore[list-item]
    else:
        items = list(request.input)  # type: ignore[arg-type]
    dimensions = request.dimensions or DIMENSIONS
    data = []
    tokens = 0
    for index, item in enumerate(items):
        values = vector(item, dimensions)
        tokens += count(item) if isinstance(item, str) else len(item)
        encoded: Any = values
        if request.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
