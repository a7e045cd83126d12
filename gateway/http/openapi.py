"""The gateway's OpenAPI description, built once from the same types that decode requests, so
clients and API fuzzers see exactly what the gateway accepts. Served at `GET /openapi.json`."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import ErrorEnvelope
from tiers.types import ChatRequest

REF = "#/components/schemas/{name}"
ERROR_STATUSES = {
    "400": "malformed or unsupported request",
    "401": "missing or invalid key",
    "403": "not allowed for this agent",
    "404": "unknown model or resource",
    "413": "body over the size limit",
    "422": "unprocessable",
    "429": "budget, rate or loop limit; see Retry-After",
    "502": "every tier failed",
    "503": "state backend or upstreams unavailable; see Retry-After",
    "504": "upstream timeout",
}


def _errors(*statuses: str) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": REF.format(name="ErrorEnvelope")}}}
    return {s: {"description": ERROR_STATUSES[s], "content": error} for s in statuses}


def _json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


AGENT: list[dict[str, list[str]]] = [{"agentKey": []}]
ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]


def openapi_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components([ChatRequest, ErrorEnvelope], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tiergate", "version": "0.1.0"},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "agentKey": {"type": "http", "scheme": "bearer"},
                "adminKey": {"type": "http", "scheme": "bearer"},
            },
        },
        "paths": {**_agent_paths(), **_admin_paths()},
    }


def _agent_paths() -> dict[str, Any]:
    return {
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "security": AGENT,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": REF.format(name="ChatRequest")}}},
                },
                "responses": {
                    "200": {
                        "description": "the answer, or a stream of server-sent events",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*ERROR_STATUSES),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "security": AGENT,
                "responses": {"200": _json("the models this agent may use"), **_errors("401")},
            }
        },
        "/healthz": {"get": {"operationId": "health", "responses": {"200": _json("alive")}}},
        "/readyz": {
            "get": {
                "operationId": "ready",
                "responses": {"200": _json("ready"), "503": _json("not ready")},
            }
        },
    }


def _admin_paths() -> dict[str, Any]:
    return {
        "/admin/usage": {
            "get": {
                "operationId": "usage",
                "security": ADMIN,
                "parameters": [
                    {"name": "agent", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("budget windows of the agent"),
                    **_errors("400", "401", "404"),
                },
            }
        },
        "/admin/decisions/{record_id}": {
            "get": {
                "operationId": "decision",
                "security": ADMIN,
                "parameters": [
                    {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json("one decision record"), **_errors("401", "404")},
            }
        },
        "/admin/circuits": {
            "get": {
                "operationId": "circuits",
                "security": ADMIN,
                "responses": {"200": _json("circuit state per upstream"), **_errors("401")},
            }
        },
    }
