"""A shadow classifier: a candidate model that scores every request of its route beside the one
in force. Its decision is recorded with the request's (`shadow` in the decision record) and never
served; `/admin/quality` compares the two. Promotion is a config change and a reload."""

from __future__ import annotations

from gateway.pipeline.routes import ShadowDecision
from tiers.classifier.model import Predictor


class ShadowClassifier:
    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    def score(self, text: str) -> ShadowDecision:
        prediction = self._predictor.predict(text)
        return ShadowDecision(confidence=prediction.confidence, label=prediction.label)
