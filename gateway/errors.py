"""The gateway's errors: one tree, each kind knowing its HTTP status and OpenAI error type.

GatewayError
├── BadRequest (400)          malformed or unsupported request; `param` names the field
│   └── Unprocessable (422)
├── Unauthorized (401)        missing or unknown key
├── Forbidden (403)           model, tool or parameter not allowed; a rule's deny
├── NotFound (404)            unknown model or resource
├── PayloadTooLarge (413)
├── MethodNotAllowed (405)
├── RateLimited (429)         rate exhausted, loop stopped; carries Retry-After
│   └── BudgetExhausted       a token, cost or request budget is spent
├── UpstreamFailed (502)      every tier that was tried failed
├── Unavailable (503)         state backend down (fail-closed), circuits open; carries Retry-After
├── UpstreamTimeout (504)
└── NotConfigured (501)       a feature the config does not turn on
"""

from __future__ import annotations

import math

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


MAX_MESSAGE_CHARS = 2000  # an error message carries at most this much (client text is clipped)


def clip(text: str, limit: int = 200) -> str:
    """Client-supplied text as it may appear in a message, a record or a log line: at most
    `limit` characters, with a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.param = None if param is None else clip(param)
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    def body(self) -> bytes:
        return msgspec.json.encode(ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code)))

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(1, math.ceil(self.retry_after_s)))}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unprocessable(BadRequest):
    status = 422


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExhausted(RateLimited):
    code = "budget_exhausted"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class UpstreamFailed(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class NotConfigured(GatewayError):
    """A feature this gateway's config does not turn on (the decision store, say)."""

    status = 501
    type = "api_error"
    code = "not_configured"


class StatusError(GatewayError):
    """An error of a status no other class stands for (as the HTTP framework reports them)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, code=None)
        self.status = status
        self.type = "invalid_request_error" if status < 500 else "api_error"


def error_for_status(status: int, message: str, retry_after_s: float | None = None) -> GatewayError:
    """The gateway error that best reports an upstream failure of this status."""
    if status == 504 or status == 408:
        return UpstreamTimeout(message)
    if status == 429:
        return RateLimited(message, code="upstream_rate_limited", retry_after_s=retry_after_s)
    if status == 503:
        return Unavailable(message, retry_after_s=retry_after_s)
    return UpstreamFailed(message)
