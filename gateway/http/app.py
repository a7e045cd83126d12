"""The HTTP edge: a Litestar app built by a factory from the config; handlers translate and delegate."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from litestar.types import Receive, Scope, Send

from gateway.admin.approvals import agent_approval
from gateway.admin.routes import admin_router
from gateway.batch.api import BATCH_HANDLERS
from gateway.config.models import AgentConfig, GatewayConfig
from gateway.console.pages import TEMPLATES, console_router
from gateway.console.sessions import Throttle
from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StatusError,
    Unauthorized,
)
from gateway.http.chat_completions import CHAT, CHAT_PATH, chat_completions
from gateway.http.edge import serve
from gateway.http.embeddings_api import EMBEDDINGS_PATH, create_embeddings, serve_embeddings
from gateway.http.feedback import agent_feedback
from gateway.http.messages_api import MESSAGES, MESSAGES_PATH, create_message
from gateway.http.openapi import openapi_document
from gateway.http.responses_api import RESPONSES, RESPONSES_HANDLERS, RESPONSES_PATH
from gateway.http.state import current_gateway
from gateway.runtime.build import Gateway
from gateway.runtime.holder import GatewayHolder

log = logging.getLogger("tiergate")
JSON = "application/json"


def _gateway(request: Request) -> Gateway:
    return current_gateway(request)


class _Model(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "tiergate"


class _ModelList(msgspec.Struct):
    data: list[_Model]
    object: str = "list"


class _AnthropicModel(msgspec.Struct):
    """A model as Anthropic's SDK lists it."""

    id: str
    display_name: str
    type: str = "model"
    created_at: str = "1970-01-01T00:00:00Z"
    lifecycle: str = "active"


class _AnthropicModelList(msgspec.Struct):
    data: list[_AnthropicModel]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


def _model_agent(request: Request) -> tuple[Gateway, AgentConfig, bool]:
    """The gateway, the calling agent, and whether it asks as Anthropic's SDK does (its
    `anthropic-version` header; its key then may come in `x-api-key`)."""
    gateway = _gateway(request)
    anthropic = "anthropic-version" in request.headers
    key = request.headers.get("x-api-key") if anthropic else None
    authorization = f"Bearer {key}" if key else request.headers.get("authorization")
    return gateway, gateway.agents.authenticate(authorization), anthropic


def _model(name: str, anthropic: bool) -> _Model | _AnthropicModel:
    return _AnthropicModel(name, name) if anthropic else _Model(name)


@get("/v1/models")
async def list_models(request: Request) -> Response[bytes]:
    gateway, agent, anthropic = _model_agent(request)
    names = gateway.chat.routes.visible_to(agent)
    listed: _ModelList | _AnthropicModelList
    if anthropic:
        models = [_AnthropicModel(n, n) for n in names]
        listed = _AnthropicModelList(
            models, first_id=names[0] if names else None, last_id=names[-1] if names else None
        )
    else:
        listed = _ModelList([_Model(n) for n in names])
    return Response(msgspec.json.encode(listed), media_type=JSON)


@get("/v1/models/{name:str}")
async def get_model(request: Request) -> Response[bytes]:
    gateway, agent, anthropic = _model_agent(request)
    name = request.path_params["name"]
    if name not in gateway.chat.routes.visible_to(agent):
        raise NotFound(f"the model {name!r} does not exist", param="model")
    return Response(msgspec.json.encode(_model(name, anthropic)), media_type=JSON)


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(msgspec.json.encode({"status": "ok", "worker": os.getpid()}), media_type=JSON)


@get("/openapi.json")
async def openapi(request: Request) -> Response[bytes]:
    return Response(request.app.state.openapi, media_type=JSON)


@get("/readyz")
async def readyz(request: Request) -> Response[bytes]:
    gateway = _gateway(request)
    checks = {"config": True, "state": await gateway.ledger.ping()}
    circuits = {name: breaker.state for name, breaker in gateway.circuits.items()}
    # ready while the state backend answers and at least one upstream would take a request
    checks["upstreams"] = not circuits or any(state != "open" for state in circuits.values())
    ready = all(checks.values())
    body = msgspec.json.encode(
        {"status": "ready" if ready else "not ready", "checks": checks, "circuits": circuits}
    )
    return Response(body, media_type=JSON, status_code=200 if ready else 503)


@get("/metrics")
async def metrics(request: Request) -> Response[bytes]:
    return Response(_gateway(request).metrics.render(), media_type="text/plain; version=0.0.4")


def _gateway_error(_: Request, exc: GatewayError) -> Response[bytes]:
    return Response(exc.body(), status_code=exc.status, media_type=JSON, headers=exc.headers())


def _http_error(request: Request, exc: HTTPException) -> Response[bytes]:
    error: GatewayError
    if exc.status_code == 413:
        error = PayloadTooLarge("request body is over the size limit")
    elif exc.status_code == 404:
        error = NotFound(f"no such endpoint: {request.method} {request.url.path}", code="not_found")
    elif exc.status_code == 401:
        error = Unauthorized(exc.detail)
    elif exc.status_code == 400:
        error = BadRequest(exc.detail or "bad request")
    elif exc.status_code == 405:
        error = MethodNotAllowed(exc.detail or "method not allowed")
    else:
        error = StatusError(exc.status_code, exc.detail or "error")
    return _gateway_error(request, error)


def _internal_error(request: Request, exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _gateway_error(request, GatewayError("internal error; see the gateway's log"))


Direct = Callable[[Gateway, Scope, Receive, Send], Awaitable[None]]


class GatewayApp:
    """The ASGI app: the model APIs' exact paths go straight to their handlers; everything else
    (lifespan, admin, health, metrics, and unusual spellings of those paths) through Litestar."""

    def __init__(self, framework: Litestar) -> None:
        self.framework = framework
        self._direct: dict[str, Direct] = {
            CHAT_PATH: functools.partial(serve, CHAT),
            RESPONSES_PATH: functools.partial(serve, RESPONSES),
            MESSAGES_PATH: functools.partial(serve, MESSAGES),
            EMBEDDINGS_PATH: serve_embeddings,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self._direct.get(scope["path"]) if scope["type"] == "http" else None
        if direct is not None:
            await direct(self.framework.state.holder.current, scope, receive, send)
        else:
            await self.framework(scope, receive, send)


def create_app(
    config: GatewayConfig,
    load: Callable[[], GatewayConfig] | None = None,
    reload_via_parent: bool = False,
    freeze_heap: bool = False,
) -> GatewayApp:
    """The app for one worker. `load` re-reads the config for hot reload (SIGHUP or POST
    /admin/reload); with several workers a reload request is passed to the supervisor.
    `freeze_heap`: for a process that only serves this app (see gateway/runtime/holder.py)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        holder = GatewayHolder(config, load, config.server.shutdown_grace_s, freeze_heap)
        await holder.start()
        app.state.holder = holder
        app.state.openapi = msgspec.json.encode(openapi_document())
        app.state.reload_via_parent = reload_via_parent
        app.state.console_throttle = Throttle()
        loop = asyncio.get_running_loop()
        on_main_thread = threading.current_thread() is threading.main_thread()
        if on_main_thread:  # signals reach only the main thread (an app embedded in a thread has none)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(holder.reload()))
        try:
            yield
        finally:
            if on_main_thread:
                loop.remove_signal_handler(signal.SIGHUP)
            await holder.close()

    framework = Litestar(
        route_handlers=[
            chat_completions,
            *RESPONSES_HANDLERS,
            create_message,
            create_embeddings,
            agent_feedback,
            agent_approval,
            *BATCH_HANDLERS,
            list_models,
            get_model,
            healthz,
            readyz,
            openapi,
            metrics,
            admin_router,
            console_router,
        ],
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        lifespan=[lifespan],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    return GatewayApp(framework)
