"""Structured answers from tiers that produce a label (rules, classifier): the label placed in
the JSON object the request or its route's schema asks for."""

from __future__ import annotations

from typing import Any

import msgspec

from tiers.types import ChatRequest


def target_schema(request: ChatRequest, route_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        return fmt.json_schema.schema
    return route_schema


def _label_property(schema: dict[str, Any], label: str) -> str | None:
    """The property a label belongs in: a required string property first (one whose enum holds
    the label, if it has an enum), then any string property."""
    properties: dict[str, Any] = schema.get("properties", {})
    strings = [
        name
        for name, spec in properties.items()
        if isinstance(spec, dict) and spec.get("type") == "string" and label in spec.get("enum", [label])
    ]
    required = [name for name in schema.get("required", []) if name in strings]
    return (required or strings or [None])[0]


def label_as_json(label: str, schema: dict[str, Any] | None) -> str:
    name = _label_property(schema, label) if schema and schema.get("type", "object") == "object" else None
    return msgspec.json.encode({name or "label": label}).decode()
