"""The gateway's OpenAPI description, built once from the same types that decode requests, so
clients and API fuzzers see exactly what the gateway accepts. Served at `GET /openapi.json`."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.dialects.messages_request import MessagesRequest
from gateway.dialects.responses_request import ResponsesRequest
from gateway.errors import ErrorEnvelope
from tiers.types import ChatRequest, EmbeddingsRequest

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
    "501": "a feature the config does not turn on",
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
    _, components = msgspec.json.schema_components(
        [ChatRequest, ResponsesRequest, MessagesRequest, EmbeddingsRequest, ErrorEnvelope], ref_template=REF
    )
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


def _model_call(operation: str, schema: str, streams: bool = True) -> dict[str, Any]:
    """A model API's POST: its request type, its answer (or stream), every error status."""
    answer: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        answer["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "operationId": operation,
            "security": AGENT,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF.format(name=schema)}}},
            },
            "responses": {
                "200": {"description": "the answer, or a stream of server-sent events", "content": answer},
                **_errors(*ERROR_STATUSES),
            },
        }
    }


def _agent_paths() -> dict[str, Any]:
    return {
        "/v1/chat/completions": _model_call("createChatCompletion", "ChatRequest"),
        "/v1/responses": _model_call("createResponse", "ResponsesRequest"),
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "getResponse",
                "security": AGENT,
                "parameters": [
                    {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json("a stored response"), **_errors("401", "404")},
            },
            "delete": {
                "operationId": "deleteResponse",
                "security": AGENT,
                "parameters": [
                    {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json("the response is forgotten"), **_errors("401", "404")},
            },
        },
        # Anthropic's Messages API: errors in Anthropic's shape, the key also in x-api-key
        "/v1/messages": _model_call("createMessage", "MessagesRequest"),
        "/v1/embeddings": _model_call("createEmbeddings", "EmbeddingsRequest", streams=False),
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
