"""The admin API under /admin/: one router, one guard (the admin key) for every handler."""

from __future__ import annotations

import os
import signal
import time

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gateway.admin.approvals import admin_approval, admin_approvals, admin_decide, admin_trust
from gateway.admin.decisions import decision_body, decision_query, page_body
from gateway.admin.quality import quality_report
from gateway.config.loading import ConfigError
from gateway.errors import BadRequest, NotConfigured, NotFound, Unprocessable
from gateway.governance.decisions import find_decision
from gateway.governance.feedback import feedback_body, record_feedback
from gateway.http.state import current_gateway
from gateway.runtime.holder import GatewayHolder
from gateway.store.runtime import reachable

JSON = "application/json"


def require_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """The guard: the admin key, checked in constant time; 401 without it, 403 when disabled."""
    current_gateway(connection).admin.check(connection.headers.get("authorization"))


@get("/usage")
async def admin_usage(request: Request) -> Response[bytes]:
    gateway = current_gateway(request)
    agent = request.query_params.get("agent")
    if not agent:
        raise BadRequest("give the agent: /admin/usage?agent=ID", param="agent")
    if agent not in {a.id for a in gateway.config.agents}:
        raise NotFound(f"no agent {agent!r}", param="agent", code="agent_not_found")
    windows = []
    micro_usd = 0
    for w in await gateway.ledger.usage(agent):
        entry: dict[str, object] = {"subject": w.subject, "window": w.window, "metric": w.metric}
        if w.metric == "tokens":
            entry.update(used_tokens=w.used, limit_tokens=w.limit, remaining_tokens=w.remaining)
        elif w.metric == "usd":
            entry.update(used_usd=w.used / 1e6, limit_usd=w.limit / 1e6, remaining_usd=w.remaining / 1e6)
            micro_usd = max(micro_usd, w.used)
        else:
            entry.update(used_requests=w.used, limit_requests=w.limit, remaining_requests=w.remaining)
        entry["resets_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(w.resets_at))
        windows.append(entry)
    body = {"agent": agent, "windows": windows, "usd_used": micro_usd / 1e6}
    return Response(msgspec.json.encode(body), media_type=JSON)


@get("/circuits")
async def admin_circuits(request: Request) -> Response[bytes]:
    gateway = current_gateway(request)
    body = {
        name: {"state": b.state, "retry_after_s": round(b.retry_after(), 3), "times_opened": b.opened_count}
        for name, b in gateway.circuits.items()
    }
    return Response(msgspec.json.encode(body), media_type=JSON)


@get("/decisions")
async def admin_decisions(request: Request) -> Response[bytes]:
    """Decisions from the store, newest first, a page at a time."""
    gateway = current_gateway(request)
    query = decision_query(request.query_params)
    if gateway.store is None:
        raise NotConfigured("listing decisions needs the decision store: set store.url in the config")
    with reachable():
        page = await gateway.store.store.decisions(query)
    return Response(page_body(page), media_type=JSON)


@get("/decisions/{record_id:str}")
async def admin_decision(request: Request) -> Response[bytes]:
    """One decision, from the store (or this worker's recent records), with what was said of it."""
    gateway = current_gateway(request)
    record_id = request.path_params["record_id"]
    with reachable():
        found = await find_decision(record_id, gateway.store, gateway.recent)
    if found is None:
        where = "in the store" if gateway.store is not None else "in this process's recent records"
        raise NotFound(f"no decision {record_id!r} {where}", code="decision_not_found")
    return Response(decision_body(found), media_type=JSON)


@post("/feedback", status_code=200)
async def admin_feedback(request: Request) -> Response[bytes]:
    """A reviewer's feedback on any decision."""
    gateway = current_gateway(request)
    with reachable():
        said = await record_feedback(await request.body(), "reviewer", None, gateway.store, gateway.recent)
    return Response(feedback_body(said), media_type=JSON)


@get("/quality")
async def admin_quality(request: Request) -> Response[bytes]:
    """A route's coverage, escalation rate, audited and feedback precision, threshold and events."""
    gateway = current_gateway(request)
    if gateway.store is None:
        raise NotConfigured("the quality report needs the decision store: set store.url in the config")
    with reachable():
        report = await quality_report(gateway, request.query_params)
    return Response(msgspec.json.encode(report), media_type=JSON)


@post("/reload", status_code=200)
async def admin_reload(request: Request) -> Response[bytes]:
    """Re-read the config: refused with every problem listed when it is invalid."""
    holder: GatewayHolder = request.app.state.holder
    try:
        holder.check()
    except ConfigError as exc:
        raise Unprocessable(
            "the config cannot be loaded: " + "; ".join(exc.problems), code="invalid_config"
        ) from None
    if request.app.state.reload_via_parent:
        os.kill(os.getppid(), signal.SIGHUP)  # the supervisor passes it to every worker
        return Response(b'{"status":"reloading"}', media_type=JSON)
    problems = await holder.reload()
    if problems:
        raise Unprocessable("the config cannot be loaded: " + "; ".join(problems), code="invalid_config")
    return Response(b'{"status":"reloaded"}', media_type=JSON)


admin_router = Router(
    path="/admin",
    route_handlers=[
        admin_usage,
        admin_circuits,
        admin_decisions,
        admin_decision,
        admin_feedback,
        admin_quality,
        admin_reload,
        admin_approvals,
        admin_trust,
        admin_approval,
        admin_decide,
    ],
    guards=[require_admin],
)
