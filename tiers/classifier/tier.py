"""The classifier tier: answers with the model's label when it is confident enough, escalates
otherwise, saying why (tiers/classifier/model.py computes the prediction)."""

from __future__ import annotations

import asyncio

from tiers.base import TierRequest
from tiers.classifier.model import Predictor
from tiers.types import Answer, Escalate

# Texts longer than this are scored in a worker thread so the event loop never waits on them.
INLINE_CHARS = 2000


class ClassifierTier:
    name = "classifier"

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    @property
    def predictor(self) -> Predictor:
        return self._predictor

    async def decide(self, request: TierRequest) -> Answer | Escalate:
        text = request.chat.last_user_text()
        if len(text) > INLINE_CHARS:
            prediction = await asyncio.to_thread(self._predictor.predict, text)
        else:
            prediction = self._predictor.predict(text)
        if prediction.escalate:
            reason = (
                f"confidence {prediction.confidence:.3f} below {self._predictor.threshold:.3f}"
                f" (best guess {prediction.best!r})"
                + ("" if prediction.why is None else f": {prediction.why}")
                if prediction.ahead
                else f"out of scope: the best label {prediction.best!r} does not lead the out-of-scope"
                " class (or ties another label)"
            )
            return Escalate(tier=self.name, reason=reason, confidence=prediction.confidence)
        return Answer(tier=self.name, content=prediction.label, confidence=prediction.confidence)
