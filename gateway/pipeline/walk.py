"""The ladder stage of the request path: the planned tiers walked cheapest first, each whole answer
reviewed; when none answers, the most telling error."""

from __future__ import annotations

import time

from gateway.errors import BadRequest, Forbidden, GatewayError, error_for_status
from gateway.pipeline.admission import Admitted
from gateway.pipeline.review import Review
from gateway.pipeline.settlement import Settlement
from routing.ladder import LadderResult
from tiers.base import TierRequest
from tiers.types import Answer, Escalate


class LadderWalk:
    async def walk(self, settlement: Settlement, admitted: Admitted, request: TierRequest) -> Answer:
        """The answer of the first tier that gives one, or the error that says why none did."""
        plan = settlement.plan
        reviewer = (
            Review(admitted.check, admitted.route.output_schema, settlement.draft.request)
            if admitted.check is not None
            else None
        )
        began = time.perf_counter()
        result = await plan.grant.ladder.run(request, plan.skip, reviewer, admitted.route.repair)
        settlement.tried(result, (time.perf_counter() - began) * 1000)
        if result.answer is None:
            raise declined(result, plan.grant.denial)
        return result.answer


def declined(result: LadderResult, denial: GatewayError | None) -> GatewayError:
    """Why no tier answered: a rule's deny, else the budget's denial when only the free tiers were
    allowed, else the failures of the tiers tried."""
    denied = next((f for f in result.failures if f.final), None)
    if denied is not None:
        return Forbidden(denied.reason, code="denied_by_rule")
    if denial is not None:
        return denial
    return failure_from(result.failures)


def failure_from(failures: list[Escalate]) -> GatewayError:
    """The most telling error when every tier declined: one status shared by all failures is
    reported as is; a mix becomes 502 with every reason listed."""
    if not failures:
        return error_for_status(502, "no tier could answer this request")
    statuses = {f.status or 502 for f in failures}
    message = "; ".join(f"{f.tier}: {f.reason}" for f in failures)
    retry_after = min((f.retry_after_s for f in failures if f.retry_after_s is not None), default=None)
    status = statuses.pop() if len(statuses) == 1 else 502
    if status == 400:
        return BadRequest(message, code="upstream_rejected")
    return error_for_status(status, message, retry_after)
