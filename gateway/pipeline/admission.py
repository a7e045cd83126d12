"""The guards at the start of the request path: the route the agent may call, the parameters and
tools it may use, loop detection, and the checks its structured answers must pass."""

from __future__ import annotations

import msgspec

from gateway.config.models import AgentConfig
from gateway.errors import BadRequest, Forbidden, clip
from gateway.pipeline.loops import LoopGuard, LoopLimits
from gateway.pipeline.review import OutputCheck, SchemaValidators, output_check
from gateway.pipeline.routes import ResolvedRoute, RouteTable
from tiers.lanes import LANES, RANK, Lane
from tiers.types import ChatRequest


class Admitted(msgspec.Struct, frozen=True):
    route: ResolvedRoute
    check: OutputCheck | None  # None: nothing about the answers is structured


def requested_lane(agent: AgentConfig, header: str | None) -> Lane:
    """The lane a request asks for (`x-tiergate-priority`), else its agent's; never above the
    agent's `max_priority`."""
    if header is None:
        return agent.priority
    lane = header.strip().lower()
    if lane not in RANK:
        raise BadRequest(
            f"x-tiergate-priority must be one of {', '.join(LANES)}", param="x-tiergate-priority"
        )
    if RANK[lane] < RANK[agent.max_priority]:
        raise Forbidden(
            f"agent {agent.id!r} may ask for lanes up to {agent.max_priority!r}, not {lane!r}",
            param="x-tiergate-priority",
            code="lane_not_allowed",
        )
    return lane  # type: ignore[return-value]


class Admission:
    def __init__(self, routes: RouteTable, loops: LoopGuard, loop_limits: dict[str, LoopLimits]) -> None:
        self.routes = routes
        self._loops = loops
        self._loop_limits = loop_limits
        self._validators = SchemaValidators()

    def admit(self, agent: AgentConfig, request: ChatRequest, conversation: str | None) -> Admitted:
        """The request's route and output checks, or the GatewayError that refuses it."""
        route = self.routes.resolve(agent, request.model)
        check_permissions(agent, request)
        self._loops.check(agent.id, self._loop_limits[agent.id], request, conversation)
        return Admitted(route, output_check(self._validators, request, route.output_schema))


def check_permissions(agent: AgentConfig, request: ChatRequest) -> None:
    if request.logprobs and not agent.allow_logprobs:
        raise Forbidden(f"agent {agent.id!r} may not request logprobs", param="logprobs")
    if request.logit_bias and not agent.allow_logit_bias:
        raise Forbidden(f"agent {agent.id!r} may not set logit_bias", param="logit_bias")
    if agent.tools is not None:
        for i, tool in enumerate(request.tools or ()):
            if tool.function.name not in agent.tools:
                raise Forbidden(
                    f"agent {agent.id!r} may not use the tool {clip(tool.function.name)!r}",
                    param=f"tools[{i}].function.name",
                    code="tool_not_allowed",
                )
