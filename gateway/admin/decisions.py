"""The decisions API's query parameters and bodies: `GET /admin/decisions[/{id}]`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from gateway.errors import BadRequest
from gateway.governance.decisions import FoundDecision
from gateway.store.protocol import Cursor, DecisionQuery, Page

MAX_LIMIT = 500
_cursor_decoder = msgspec.json.Decoder(Cursor)


def when(value: str, param: str) -> float:
    """A time given as epoch seconds or ISO 8601 (UTC unless it says otherwise)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{param} must be epoch seconds or ISO 8601, e.g. 2026-12-03T10:00:00Z", param=param
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _int(value: str, param: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{param} must be a whole number", param=param) from None
    if not low <= number <= high:
        raise BadRequest(f"{param} must be between {low} and {high}", param=param)
    return number


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        return _cursor_decoder.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise BadRequest("cursor is not one this API gave out", param="cursor") from None


KNOWN = frozenset({"agent", "route", "tier", "status", "since", "until", "limit", "cursor"})


def decision_query(params: Mapping[str, str]) -> DecisionQuery:
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise BadRequest(
            f"unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(KNOWN))}", param=unknown[0]
        )
    since = when(params["since"], "since") if "since" in params else None
    until = when(params["until"], "until") if "until" in params else None
    if since is not None and until is not None and until <= since:
        raise BadRequest("until must be later than since", param="until")
    return DecisionQuery(
        agent=params.get("agent") or None,
        route=params.get("route") or None,
        tier=params.get("tier") or None,
        status=_int(params["status"], "status", 100, 599) if "status" in params else None,
        since=since,
        until=until,
        limit=_int(params["limit"], "limit", 1, MAX_LIMIT) if "limit" in params else 50,
        after=decode_cursor(params["cursor"]) if params.get("cursor") else None,
    )


def page_body(page: Page) -> bytes:
    cursor = msgspec.json.encode(encode_cursor(page.next)) if page.next is not None else b"null"
    return b'{"object":"list","data":[' + b",".join(page.records) + b'],"next_cursor":' + cursor + b"}"


def decision_body(found: FoundDecision) -> bytes:
    """The record, with what was said of it (`feedback`) and its audit (null when not audited)."""
    said = msgspec.json.encode(found.feedback)
    audit = msgspec.json.encode(found.audit)
    return found.record[:-1] + b',"feedback":' + said + b',"audit":' + audit + b"}"
