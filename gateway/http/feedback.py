"""`POST /v1/feedback`: an agent says, with its own key, how one of its decisions turned out."""

from __future__ import annotations

from litestar import Request, Response, post

from gateway.governance.feedback import feedback_body, record_feedback
from gateway.http.state import current_gateway
from gateway.store.runtime import reachable

JSON = "application/json"


@post("/v1/feedback", status_code=200)
async def agent_feedback(request: Request) -> Response[bytes]:
    gateway = current_gateway(request)
    agent = gateway.agents.authenticate(request.headers.get("authorization"))
    with reachable():
        said = await record_feedback(await request.body(), "agent", agent.id, gateway.store, gateway.recent)
    return Response(feedback_body(said), media_type=JSON)
