"""The cost of validating a structured answer, by validator library, for a typical output schema.

python benchmarks/validation.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema
import msgspec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "shipping", "account", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 200},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["category", "priority", "summary"],
    "additionalProperties": False,
}
GOOD = b'{"category": "shipping", "priority": 2, "summary": "parcel late", "tags": ["parcel", "late"]}'
BAD = b'{"category": "weather", "priority": 9, "summary": "x"}'


def timed(label: str, check: Callable[[bytes], object], runs: int = 20000) -> None:
    samples = []
    for raw in (GOOD, BAD) * (runs // 2):
        start = time.perf_counter()
        check(raw)
        samples.append((time.perf_counter() - start) * 1e6)
    print(f"{label:48s} p50 {statistics.median(samples):6.1f} µs")


def main() -> None:
    compiled_start = time.perf_counter()
    draft = jsonschema.Draft202012Validator(SCHEMA)
    jsonschema_compile = (time.perf_counter() - compiled_start) * 1e3
    compiled_start = time.perf_counter()
    fast = fastjsonschema.compile(SCHEMA)
    fast_compile = (time.perf_counter() - compiled_start) * 1e3
    print(f"compile once: jsonschema {jsonschema_compile:.2f} ms, fastjsonschema {fast_compile:.2f} ms")

    def with_jsonschema(raw: bytes) -> list[str]:
        return [e.message for e in draft.iter_errors(msgspec.json.decode(raw))]

    def with_fastjsonschema(raw: bytes) -> str | None:
        try:
            fast(msgspec.json.decode(raw))
        except fastjsonschema.JsonSchemaValueException as exc:
            return str(exc.message)
        return None

    timed("jsonschema Draft2020-12 (all errors)", with_jsonschema)
    timed("fastjsonschema (first error)", with_fastjsonschema)


if __name__ == "__main__":
    main()
