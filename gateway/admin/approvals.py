"""The approvals API: `GET /admin/approvals[?status=&review=&limit=]`, `GET /admin/approvals/trust`,
`GET|POST /admin/approvals/{id}`, and `GET /v1/approvals/{id}` for the agent that asked."""

from __future__ import annotations

from typing import Any, get_args

import msgspec
from litestar import Request, Response, get, post

from gateway.admin.decisions import MAX_LIMIT
from gateway.approval.gate import ApprovalGate, Decision, edited_body
from gateway.errors import BadRequest, NotConfigured, NotFound
from gateway.http.state import current_gateway
from gateway.http.wire import decode_json
from gateway.store.protocol import Approval, ApprovalStatus
from gateway.store.runtime import reachable

JSON = "application/json"
MAX_DECISION_BYTES = 1024 * 1024
STATUSES = get_args(ApprovalStatus)
_decision = msgspec.json.Decoder(Decision)


def gate_of(request: Request[Any, Any, Any]) -> ApprovalGate:
    gate = current_gateway(request).approvals
    if gate is None:
        raise NotConfigured("approvals need the decision store: set store.url in the config")
    return gate


def approval_view(approval: Approval) -> dict[str, Any]:
    """An approval as the API shows it: its request, answer and edit as JSON, not strings."""
    view = msgspec.structs.asdict(approval)
    for name in ("request", "answer", "edited"):
        if view[name] is not None:
            view[name] = msgspec.json.decode(view[name])
    return {"object": "approval", **view}


def _listed(approvals: list[Approval]) -> Response[bytes]:
    return Response(msgspec.json.encode({"data": [approval_view(a) for a in approvals]}), media_type=JSON)


@get("/approvals")
async def admin_approvals(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Approvals, newest first: `status` (pending, approved, edited, rejected, expired), `review`
    (true: trusted answers waiting for a look), `limit`."""
    params = request.query_params
    unknown = sorted(set(params) - {"status", "review", "limit"})
    if unknown:
        raise BadRequest(
            f"unknown query parameter {unknown[0]!r}; known: limit, review, status", param=unknown[0]
        )
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    review = params.get("review", "false")
    if review not in ("true", "false"):
        raise BadRequest("review must be true or false", param="review")
    limit = params.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", param="limit")
    gate = gate_of(request)
    with reachable():
        found = await gate.store.approvals(status, review == "true", int(limit))  # type: ignore[arg-type]
    return _listed(found)


@get("/approvals/trust")
async def admin_trust(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Who holds trust for what, and why (and each agent's run of approvals towards it)."""
    gate = gate_of(request)
    with reachable():
        held = await gate.store.trusts()
    body = {"data": [{"object": "trust", **msgspec.structs.asdict(t)} for t in held]}
    return Response(msgspec.json.encode(body), media_type=JSON)


@get("/approvals/{approval_id:str}")
async def admin_approval(request: Request[Any, Any, Any]) -> Response[bytes]:
    gate = gate_of(request)
    approval_id = request.path_params["approval_id"]
    with reachable():
        found = await gate.store.approval(approval_id)
    if found is None:
        raise NotFound(f"no approval {approval_id!r}", code="approval_not_found")
    return Response(msgspec.json.encode(approval_view(found)), media_type=JSON)


@post("/approvals/{approval_id:str}", status_code=200)
async def admin_decide(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A reviewer's decision: `{"decision": "approve" | "reject" | "edit", "content"?, "reason"?}`;
    a second decision on the same approval is 409."""
    gate = gate_of(request)
    decision = decode_json(await request.body(), _decision, MAX_DECISION_BYTES)
    with reachable():
        decided = await gate.decide(request.path_params["approval_id"], decision)
    return Response(msgspec.json.encode(approval_view(decided)), media_type=JSON)


@get("/v1/approvals/{approval_id:str}")
async def agent_approval(request: Request[Any, Any, Any]) -> Response[bytes]:
    """An approval, for the agent whose request it holds (any other agent gets 404)."""
    gateway = current_gateway(request)
    agent = gateway.agents.authenticate(request.headers.get("authorization"))
    gate = gate_of(request)
    approval_id = request.path_params["approval_id"]
    with reachable():
        found = await gate.store.approval(approval_id)
    if found is None or found.agent != agent.id:
        raise NotFound(f"no approval {approval_id!r} of this agent", code="approval_not_found")
    view = approval_view(found)
    # the agent sees the answer only once a person let it through (as edited, if it was)
    if found.status == "edited" and found.edited is not None:
        view["answer"] = msgspec.json.decode(
            edited_body(found.answer.encode(), msgspec.json.decode(found.edited))
        )
    elif found.status != "approved":
        view["answer"] = None
    return Response(msgspec.json.encode(view), media_type=JSON)
