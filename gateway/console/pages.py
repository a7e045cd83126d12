"""The operator console under /console: server-rendered pages (Jinja), htmx for partial updates,
uPlot for time series. Exceptions first: the overview opens with what needs a person.

Every page needs a console session (see sessions.py); every form carries the session's CSRF token;
only the admin's sessions may decide (approve, reject, edit, give feedback)."""

from __future__ import annotations

import hmac
import math
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router

from gateway.admin.approvals import approval_view
from gateway.admin.decisions import decision_query, encode_cursor
from gateway.admin.quality import quality_report
from gateway.approval.gate import Decision
from gateway.auth import key_digest
from gateway.console.figures import PERIODS, Figures
from gateway.console.sessions import COOKIE, Keys, Session, Sessions, Throttle
from gateway.errors import GatewayError
from gateway.governance.decisions import find_decision
from gateway.governance.feedback import record_feedback
from gateway.http.state import current_gateway
from gateway.observe.records import DecisionRecord
from gateway.runtime.build import Gateway
from gateway.store.protocol import Cursor
from gateway.store.schema import CONFIDENCE_BUCKETS

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
NEAR_LIMIT = 0.8  # an agent past this share of a budget window needs attention
FILTERS = ("agent", "route", "tier", "status", "since", "until")  # of the decisions list
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


_record_decoder = msgspec.json.Decoder(DecisionRecord)


class NotLoggedIn(HTTPException):
    status_code = 303


class Forbidden(HTTPException):
    status_code = 403


def _gateway(request: Request[Any, Any, Any]) -> Gateway:
    return current_gateway(request)


def _sessions(request: Request[Any, Any, Any]) -> Sessions | None:
    gateway = _gateway(request)
    if gateway.store is None:
        return None
    hours = gateway.config.server.console_session_h
    return Sessions(gateway.store.store.engine, hours * 3600)


async def _session(request: Request[Any, Any, Any]) -> Session:
    sessions = _sessions(request)
    session = None if sessions is None else await sessions.find(request.cookies.get(COOKIE))
    if session is None:
        raise NotLoggedIn()
    return session


def _check_csrf(session: Session, presented: str | None) -> None:
    if not presented or not _same(presented, session.csrf):
        raise Forbidden(detail="the form has expired or did not come from the console: reload the page")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def _deciding(request: Request[Any, Any, Any], data: dict[str, str]) -> tuple[Session, Gateway]:
    """The session of a form that decides something: its CSRF token checked, and an admin's."""
    session = await _session(request)
    _check_csrf(session, data.get("csrf"))
    if not session.may_decide:
        raise Forbidden(detail="a viewer key sees everything and decides nothing")
    return session, _gateway(request)


def _period(request: Request[Any, Any, Any]) -> str:
    period = request.query_params.get("period", "day")
    return period if period in PERIODS else "day"


def _page(name: str, request: Request[Any, Any, Any], session: Session, **context: Any) -> Template:
    return Template(
        template_name=name,
        context={
            "session": session,
            "csrf": session.csrf,
            "page": name.removesuffix(".html"),
            "period": _period(request),
            "periods": list(PERIODS),
            **context,
        },
    )


@get("/", include_in_schema=False)
async def console_home(request: Request[Any, Any, Any]) -> Redirect:
    sessions = _sessions(request)
    found = None if sessions is None else await sessions.find(request.cookies.get(COOKIE))
    return Redirect("/console/overview" if found else "/console/login")


@get("/login", include_in_schema=False)
async def login_form(request: Request[Any, Any, Any]) -> Template:
    return _login(request, None, 200)


def _login(request: Request[Any, Any, Any], error: str | None, status: int) -> Template:
    missing = _gateway(request).store is None
    return Template(
        template_name="login.html",
        context={"error": error, "missing_store": missing},
        status_code=501 if missing else status,
    )


@post("/login", include_in_schema=False)
async def login(
    request: Request[Any, Any, Any],
    data: Form,
) -> Template | Redirect:
    sessions = _sessions(request)
    if sessions is None:
        return _login(request, None, 501)
    throttle: Throttle = request.app.state.console_throttle
    address = request.client.host if request.client else "?"
    wait_s = throttle.wait_s(address)
    if wait_s > 0:
        return _login(request, f"Too many wrong keys: try again in {math.ceil(wait_s)} s.", 429)
    gateway = _gateway(request)
    viewers = [key_digest(k.get_secret_value()) for k in gateway.config.server.viewer_keys]
    role = Keys(gateway.admin.digest, viewers).role_of(data.get("key", ""))
    if role is None:
        throttle.failed(address)
        return _login(request, "That key is neither the admin key nor a viewer key.", 401)
    secret, _ = await sessions.open(role)
    return Redirect(
        "/console/overview",
        status_code=303,
        cookies=[
            Cookie(
                key=COOKIE,
                value=secret,
                httponly=True,
                samesite="strict",
                secure=gateway.config.server.console_secure_cookie,
                path="/console",
                max_age=int(gateway.config.server.console_session_h * 3600),
            )
        ],
    )


@post("/logout", include_in_schema=False)
async def logout(
    request: Request[Any, Any, Any],
    data: Form,
) -> Redirect:
    session = await _session(request)
    _check_csrf(session, data.get("csrf"))
    sessions = _sessions(request)
    assert sessions is not None
    await sessions.close(request.cookies.get(COOKIE))
    return Redirect(
        "/console/login", status_code=303, cookies=[Cookie(key=COOKIE, value="", path="/console", max_age=0)]
    )


async def _attention(gateway: Gateway) -> list[dict[str, str]]:
    """What needs a person now, most urgent first."""
    items: list[dict[str, str]] = []
    if gateway.approvals is not None:
        pending = await gateway.approvals.store.approvals("pending", limit=1000)
        if pending:
            items.append({"kind": "approvals", "text": f"{len(pending)} answer(s) wait for approval"})
    for name, breaker in gateway.circuits.items():
        if breaker.state != "closed":
            items.append({"kind": "circuit", "text": f"upstream {name}: circuit {breaker.state}"})
    if not await gateway.ledger.ping():
        items.append({"kind": "state", "text": "budget state (Redis) is not reachable"})
    if gateway.store is not None and not await gateway.store.store.ping():
        items.append({"kind": "store", "text": "the decision store is not reachable"})
    for agent in gateway.config.agents:
        for w in await _usage(gateway, agent.id):
            share = w.used / w.limit if w.limit else 0.0
            if share >= NEAR_LIMIT:
                state = "over" if share >= 1 else "near"
                items.append(
                    {
                        "kind": "budget",
                        "text": f"{agent.id}: {state} its {w.metric} budget this {w.window}"
                        f" ({w.used:,} of {w.limit:,})",
                    }
                )
    if gateway.store is not None:
        for agent_id, n in (await Figures(gateway.store.store.engine).loops()).items():
            items.append(
                {"kind": "loops", "text": f"{agent_id}: {n} request(s) stopped as loops in the last hour"}
            )
    monitor = gateway.governance.monitor
    for route, quality in monitor.routes.items():
        if quality.breached:
            items.append({"kind": "precision", "text": f"route {route}: live precision below its floor"})
    for route, drift in monitor.drifts.items():
        for signal, band in drift.bands.items():
            if band != "stable":
                items.append({"kind": "drift", "text": f"route {route}: {signal} drift {band}"})
    return items


async def _usage(gateway: Gateway, agent: str) -> list[Any]:
    try:
        return await gateway.ledger.usage(agent)
    except Exception:  # the state backend is down: the attention list says so
        return []


@get("/overview", include_in_schema=False)
async def overview(request: Request[Any, Any, Any]) -> Template:
    session = await _session(request)
    gateway = _gateway(request)
    assert gateway.store is not None
    figures = await Figures(gateway.store.store.engine).overview(_period(request))
    return _page(
        "overview.html",
        request,
        session,
        attention=await _attention(gateway),
        figures=figures,
        chart=msgspec.json.encode(figures["series"]).decode(),
    )


@get("/agents", include_in_schema=False)
async def agents(request: Request[Any, Any, Any]) -> Template:
    session = await _session(request)
    gateway = _gateway(request)
    assert gateway.store is not None
    figures = Figures(gateway.store.store.engine)
    by_agent = await figures.agents(_period(request))
    rows = []
    for agent in gateway.config.agents:
        windows = await _usage(gateway, agent.id)
        day = next((w for w in windows if w.metric == "tokens" and w.window == "day"), None)
        burn = None
        if day is not None:
            start = day.resets_at - 86400
            points = await figures.burn(agent.id, start)
            burn = {"x": [start] + [x for x, _ in points], "used": [0.0] + [y for _, y in points]}
            burn["limit"] = [day.limit] * len(burn["x"])
        rows.append(
            {
                "id": agent.id,
                "windows": windows,
                "figures": by_agent.get(agent.id),
                "burn": msgspec.json.encode(burn).decode() if burn else None,
            }
        )
    return _page("agents.html", request, session, agents=rows)


def _record_view(raw: bytes) -> dict[str, Any]:
    """A decision record with every field present (records leave out their defaults)."""
    record = msgspec.structs.asdict(_record_decoder.decode(raw))
    record["when"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["time"]))
    return record


@get("/decisions", include_in_schema=False)
async def decisions(request: Request[Any, Any, Any]) -> Template:
    session = await _session(request)
    gateway = _gateway(request)
    assert gateway.store is not None
    params = {k: v for k, v in request.query_params.items() if v and k in FILTERS}
    cursor = request.query_params.get("cursor")
    error = None
    try:
        query = decision_query({**params, **({"cursor": cursor} if cursor else {})})
        page = await gateway.store.store.decisions(query)
        records = [_record_view(r) for r in page.records]
        more = _cursor(page.next)
    except GatewayError as exc:
        error, records, more = exc.message, [], None
    context = {"records": records, "filters": params, "next_cursor": more, "error": error}
    if request.headers.get("hx-request") and cursor:
        return Template(template_name="decision_rows.html", context={**context, "csrf": session.csrf})
    return _page(
        "decisions.html",
        request,
        session,
        agents=[a.id for a in gateway.config.agents],
        routes=list(gateway.chat.routes.routes),
        **context,
    )


def _cursor(cursor: Cursor | None) -> str | None:
    return None if cursor is None else encode_cursor(cursor)


@get("/decisions/{decision_id:str}", include_in_schema=False)
async def decision(request: Request[Any, Any, Any]) -> Template:
    session = await _session(request)
    return await _decision_page(request, session, request.path_params["decision_id"], None)


async def _decision_page(
    request: Request[Any, Any, Any], session: Session, decision_id: str, notice: str | None
) -> Template:
    gateway = _gateway(request)
    found = await find_decision(decision_id, gateway.store, gateway.recent)
    if found is None:
        return Template(
            template_name="missing.html",
            context={"session": session, "csrf": session.csrf, "what": f"decision {decision_id}"},
            status_code=404,
        )
    approval = None
    if gateway.approvals is not None:
        held = await gateway.approvals.store.approval_of(decision_id)
        approval = approval_view(held) if held is not None else None
    return _page(
        "decision.html",
        request,
        session,
        record=_record_view(found.record),
        feedback=found.feedback,
        audit=found.audit,
        approval=approval,
        notice=notice,
    )


@post("/decisions/{decision_id:str}/feedback", include_in_schema=False)
async def decision_feedback(request: Request[Any, Any, Any], data: Form) -> Template:
    session, gateway = await _deciding(request, data)
    decision_id = request.path_params["decision_id"]
    said: dict[str, Any] = {"decision_id": decision_id}
    if data.get("correct") in ("true", "false"):
        said["correct"] = data["correct"] == "true"
    if data.get("label", "").strip():
        said["label"] = data["label"].strip()
    if data.get("comment", "").strip():
        said["comment"] = data["comment"].strip()
    try:
        await record_feedback(msgspec.json.encode(said), "reviewer", None, gateway.store, gateway.recent)
        notice = "Feedback saved."
    except GatewayError as exc:
        notice = f"Not saved: {exc.message}"
    return await _decision_page(request, session, decision_id, notice)


@get("/approvals", include_in_schema=False)
async def approvals(request: Request[Any, Any, Any]) -> Template:
    session = await _session(request)
    gateway = _gateway(request)
    if gateway.approvals is None:
        return _page("approvals.html", request, session, configured=False, pending=[], decided=[])
    store = gateway.approvals.store
    pending = [approval_view(a) for a in await store.approvals("pending", limit=200)]
    decided = [approval_view(a) for a in await store.approvals(limit=100) if a.status != "pending"][:50]
    trusts = {(t.agent, t.condition): t for t in await store.trusts()}
    for item in pending:
        item["trust"] = trusts.get((item["agent"], item["condition"]))
        item["when"] = time.strftime("%H:%M:%S", time.gmtime(item["time"]))
    return _page("approvals.html", request, session, configured=True, pending=pending, decided=decided)


@post("/approvals/{approval_id:str}", include_in_schema=False)
async def decide(request: Request[Any, Any, Any], data: Form) -> Template:
    _, gateway = await _deciding(request, data)
    approval_id = request.path_params["approval_id"]
    if gateway.approvals is None:
        raise Forbidden(detail="approvals are not configured")
    choice = data.get("decision", "")
    content = data.get("content") if choice == "edit" else None
    error = None
    try:
        decided = await gateway.approvals.decide(
            approval_id,
            Decision(decision=choice, content=content, reason=data.get("reason") or None),  # type: ignore[arg-type]
        )
        view = approval_view(decided)
    except GatewayError as exc:
        error = exc.message
        found = await gateway.approvals.store.approval(approval_id)
        view = approval_view(found) if found is not None else {"id": approval_id, "status": "unknown"}
    return Template(template_name="approval_decided.html", context={"item": view, "error": error})


@get("/routes", include_in_schema=False)
async def routes(request: Request[Any, Any, Any]) -> Template:
    session = await _session(request)
    gateway = _gateway(request)
    assert gateway.store is not None
    period = _period(request)
    by_route = await Figures(gateway.store.store.engine).routes(period)
    since = str(time.time() - PERIODS[period][0])
    rows = []
    for route in gateway.config.routes:
        figures = by_route.get(route.name)
        counts = (figures or {}).get("tiers", {})
        report = await quality_report(gateway, {"route": route.name, "since": since}, counts)
        rows.append({"name": route.name, "report": report, "figures": figures})
    edges = [f"{i / CONFIDENCE_BUCKETS:.1f}" for i in range(CONFIDENCE_BUCKETS)]
    return _page("routes.html", request, session, routes=rows, edges=edges)


def _not_logged_in(request: Request[Any, Any, Any], _: NotLoggedIn) -> Response[Any]:
    if request.headers.get("hx-request"):  # htmx follows a redirect in place: send the page instead
        return Response(b"", status_code=200, headers={"hx-redirect": "/console/login"})
    return Redirect("/console/login")


def _forbidden(request: Request[Any, Any, Any], exc: Forbidden) -> Response[Any]:
    return Template(template_name="forbidden.html", context={"detail": exc.detail}, status_code=403)


console_router = Router(
    path="/console",
    route_handlers=[
        console_home,
        login_form,
        login,
        logout,
        overview,
        agents,
        decisions,
        decision,
        decision_feedback,
        approvals,
        decide,
        routes,
        create_static_files_router(path="/static", directories=[HERE / "static"], include_in_schema=False),
    ],
    exception_handlers={NotLoggedIn: _not_logged_in, Forbidden: _forbidden},
)
