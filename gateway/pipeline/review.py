"""Structured-output validation: answers checked against the schema the request (or its route)
asks for, and tool-call arguments against each tool's parameters.

Validators are compiled once per distinct schema and kept (fastjsonschema; `benchmarks/validation.py`
compares it with jsonschema); compiling a new schema takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import msgspec
from cachetools import LRUCache

from gateway.errors import BadRequest
from tiers.types import Answer, ChatRequest

MAX_SCHEMA_DEPTH = 32


def _depth(node: Any, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level)
    return level


class SchemaValidators:
    """Compiled validators by schema; an invalid schema is a 400 naming where it came from."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._compiled: LRUCache[bytes, Callable[[Any], Any]] = LRUCache(maxsize=max_entries)

    def compiled(self, schema: dict[str, Any], param: str) -> Callable[[Any], Any]:
        try:
            key = msgspec.json.encode(schema, order="sorted")
        except RecursionError:
            key = b""  # nested past the encoder's limit: refused below
        found = self._compiled.get(key) if key else None
        if found is None:
            if _depth(schema) > MAX_SCHEMA_DEPTH:
                raise BadRequest(f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels", param=param)
            try:
                found = fastjsonschema.compile(schema)
            except (fastjsonschema.JsonSchemaDefinitionException, TypeError, ValueError, KeyError) as exc:
                raise BadRequest(f"invalid JSON schema: {exc}", param=param) from None
            self._compiled[key] = found
        return found


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """What one request's answers must satisfy."""

    schema: Callable[[Any], Any] | None  # None: any JSON object will do
    tools: dict[str, Callable[[Any], Any]]
    wants_json: bool

    def content_error(self, content: str | None) -> str | None:
        if not self.wants_json:
            return None
        try:
            value = msgspec.json.decode(content or "")
        except msgspec.DecodeError:
            return "the answer is not JSON"
        if self.schema is None:
            return None if isinstance(value, dict) else "the answer is not a JSON object"
        return _first_error(self.schema, value)

    def tool_error(self, name: str, arguments: str) -> str | None:
        validator = self.tools.get(name)
        if validator is None:
            return f"the answer calls an unknown tool {name!r}" if self.tools else None
        try:
            value = msgspec.json.decode(arguments or "{}")
        except msgspec.DecodeError:
            return f"arguments of {name!r} are not JSON"
        error = _first_error(validator, value)
        return None if error is None else f"arguments of {name!r}: {error}"


def _first_error(validator: Callable[[Any], Any], value: Any) -> str | None:
    try:
        validator(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        return str(exc.message)
    return None


def output_check(
    validators: SchemaValidators, request: ChatRequest, route_schema: dict[str, Any] | None
) -> OutputCheck | None:
    """The check for a request's answers, or None when nothing about them is structured. A request
    that asks for no structured output gets plain text, whatever its route's schema."""
    fmt = request.response_format
    schema: dict[str, Any] | None = None
    wants = False
    param = "response_format.json_schema.schema"
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        schema, wants = fmt.json_schema.schema, True
    elif fmt is not None and fmt.type == "json_object":
        # the route's output_schema is what "a JSON object" means on that route
        schema, wants, param = route_schema, True, "model"
    tools = {
        tool.function.name: validators.compiled(tool.function.parameters, f"tools[{i}].function.parameters")
        for i, tool in enumerate(request.tools or ())
        if tool.function.parameters is not None
    }
    if not wants and not tools:
        return None
    compiled = validators.compiled(schema, param) if schema is not None else None
    return OutputCheck(compiled, tools, wants)


# -- labels as structured answers: the label placed in the JSON object the request or its route's
# schema asks for (rules and classifier answers) ----------


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


class Review:
    """A request's reviewer on the ladder: label answers (rules, classifier) shaped into the JSON
    asked for, and every whole answer checked against the request's output checks."""

    def __init__(self, check: OutputCheck, route_schema: dict[str, Any] | None, request: ChatRequest) -> None:
        self._check = check
        self._route_schema = route_schema
        self._request = request

    def review(self, answer: Answer) -> Answer | str:
        if answer.upstream is None and self._check.wants_json and answer.content is not None:
            schema = target_schema(self._request, self._route_schema)
            answer = msgspec.structs.replace(answer, content=label_as_json(answer.content, schema))
        if not answer.tool_calls:
            error = self._check.content_error(answer.content)
            if error is not None:
                return error
        for name, arguments in answer.tool_calls:
            error = self._check.tool_error(name, arguments)
            if error is not None:
                return error
        return answer
