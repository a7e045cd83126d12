"""How an attempt at an upstream fails, in terms the ladder and the gateway can act on."""

from __future__ import annotations


class UpstreamError(Exception):
    """One failed attempt at an upstream: its HTTP status (None for a transport failure or
    timeout), whether trying again may help, and how long the upstream asked us to wait."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.timeout = timeout

    @property
    def client_status(self) -> int:
        """The status the gateway's client should see for this failure."""
        if self.timeout:
            return 504
        if self.status in (400, 404, 413, 422):
            return 400
        if self.status in (429, 503):
            return self.status
        return 502
