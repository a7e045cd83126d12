"""Classifier model files a config names: which are missing, and training those it says how to.

A route's `classifier.train_from` names rows to train its model from when the file does not exist
yet (the quickstart ships a small example set this way). Training is for small sets: a few seconds,
calibrated to the point estimates of its promises (a hundred rows cannot show a lower bound of
0.975); a real model is trained with `tiergate train` and its figures read before it serves."""

from __future__ import annotations

import logging
import os
import time

from gateway.config.models import GatewayConfig

log = logging.getLogger("tiergate")


def missing_models(config: GatewayConfig) -> list[str]:
    """A line for each classifier model that neither exists nor can be trained from its rows."""
    problems = []
    for i, route in enumerate(config.routes):
        classifier = route.classifier
        if classifier is None or os.path.exists(classifier.model):
            continue
        if classifier.train_from is None:
            problems.append(
                f"routes[{i}].classifier.model: no such file {classifier.model!r} "
                "(train one with `tiergate train`, or name its rows in classifier.train_from)"
            )
        elif not os.path.exists(classifier.train_from):
            problems.append(
                f"routes[{i}].classifier.train_from: no such file {classifier.train_from!r} "
                f"to train {classifier.model!r} from"
            )
    return problems


def train_missing_models(config: GatewayConfig) -> None:
    """Train each missing model that has `train_from` rows; written whole or not at all."""
    for route in config.routes:
        classifier = route.classifier
        if classifier is None or classifier.train_from is None or os.path.exists(classifier.model):
            continue
        from tiers.classifier.rows import load_rows
        from tiers.classifier.training import train

        started = time.perf_counter()
        log.warning("training %s from %s (it does not exist yet)", classifier.model, classifier.train_from)
        # an example set is too small for the promises' lower bounds: their point estimates
        model = train(load_rows(classifier.train_from), bound=False)
        directory = os.path.dirname(classifier.model)
        if directory:
            os.makedirs(directory, exist_ok=True)
        partial = f"{classifier.model}.{os.getpid()}.partial"
        model.save(partial)
        os.replace(partial, classifier.model)
        held = model.metrics["out_of_fold"]
        log.warning(
            "trained %s in %.1fs: %d classes, threshold %.3f; out of fold, coverage %.2f at accuracy %.3f",
            classifier.model,
            time.perf_counter() - started,
            len(model.classes),
            model.threshold,
            held["coverage"],
            held["accuracy_answered"],
        )
