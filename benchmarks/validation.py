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
from harness import Report

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


def timed(check: Callable[[bytes], object], runs: int = 20000) -> float:
    samples = []
    for raw in (GOOD, BAD) * (runs // 2):
        start = time.perf_counter()
        check(raw)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    compiled_start = time.perf_counter()
    draft = jsonschema.Draft202012Validator(SCHEMA)
    jsonschema_compile = (time.perf_counter() - compiled_start) * 1e3
    compiled_start = time.perf_counter()
    fast = fastjsonschema.compile(SCHEMA)
    fast_compile = (time.perf_counter() - compiled_start) * 1e3

    def with_jsonschema(raw: bytes) -> list[str]:
        return [e.message for e in draft.iter_errors(msgspec.json.decode(raw))]

    def with_fastjsonschema(raw: bytes) -> str | None:
        try:
            fast(msgspec.json.decode(raw))
        except fastjsonschema.JsonSchemaValueException as exc:
            return str(exc.message)
        return None

    report = Report("validation")
    report.table(
        "Validating one structured answer (a valid and an invalid one in turn)",
        ["validator", "compile once (ms)", "p50 per check (µs)"],
        [
            ["jsonschema Draft2020-12 (all errors)", jsonschema_compile, timed(with_jsonschema)],
            ["fastjsonschema (first error)", fast_compile, timed(with_fastjsonschema)],
        ],
    )
    report.save()


if __name__ == "__main__":
    main()
