"""Complexity routing: is the small model enough for this request, or should it go straight to
the large one? A heuristic score from the request's shape, or a learned router's score."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

from tiers.types import ChatRequest

_CODE = re.compile(r"```|\bdef |\bclass |\bfunction\b|\breturn\b|[{};]\s*$|=>|\bSELECT\b", re.MULTILINE)
_MATH = re.compile(
    r"\d+\s*[-+*/^=<>]\s*\d+|\\frac|\bintegral\b|\bderivative\b|\bprove\b|\bequation\b|\bsqrt\b", re.I
)
_REASONING = re.compile(
    r"\bstep[- ]by[- ]step\b|\bwhy\b|\bexplain\b|\banaly[sz]e\b|\bcompare\b|\btrade-?offs?\b|\bplan\b|"
    r"\bjustify\b|\bevaluate\b|\bdesign\b|\bdebug\b|\breason\b",
    re.I,
)


class ComplexityScorer(Protocol):
    def score(self, request: ChatRequest, prompt_tokens: int) -> float:
        """0 (the smallest model will do) to 1 (needs the largest)."""
        ...


@dataclass(frozen=True, slots=True)
class HeuristicScorer:
    """Signals of a request's difficulty, each worth a share of the score."""

    long_prompt_tokens: int = 2000

    def score(self, request: ChatRequest, prompt_tokens: int) -> float:
        text = request.last_user_text()
        length = min(1.0, math.log1p(prompt_tokens) / math.log1p(self.long_prompt_tokens))
        turns = min(1.0, len(request.messages) / 20)
        tools = min(1.0, len(request.tools or ()) / 5)
        schema = (
            1.0
            if request.response_format is not None and request.response_format.type == "json_schema"
            else 0.0
        )
        code = 1.0 if _CODE.search(text) else 0.0
        maths = 1.0 if _MATH.search(text) else 0.0
        reasoning = min(1.0, len(_REASONING.findall(text)) / 2)
        return min(
            1.0,
            0.25 * length
            + 0.10 * turns
            + 0.10 * tools
            + 0.10 * schema
            + 0.15 * code
            + 0.15 * maths
            + 0.25 * reasoning,
        )
