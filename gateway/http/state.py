"""The running gateway of a request's app: swapped whole on a reload, read once per request."""

from __future__ import annotations

from litestar.connection import ASGIConnection

from gateway.runtime.build import Gateway


def current_gateway(connection: ASGIConnection) -> Gateway:  # type: ignore[type-arg]
    return connection.app.state.holder.current  # type: ignore[no-any-return]
