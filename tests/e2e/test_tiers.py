"""The ladder end to end: rules, then the classifier, then LLMs; the upstream is called only on escalation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.intents import make_rows, noisy_rows
from tests.servers import gateway_server
from tiers.classifier.model import ClassifierModel, Predictor
from tiers.classifier.training import train

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "intents.joblib"
    # a small closed set of four intents: no labels held out, calibrated to the point estimates
    model = train(noisy_rows(), target_precision=0.95, class_rounds=0, bound=False)
    assert model.reliability is not None  # the gateway serves a confidence model, as trained by default
    model.save(path)
    return path


@pytest.fixture(scope="module")
def gateway(simulator: tuple[str, Any], model_path: Path) -> Iterator[str]:
    path = model_path
    routes = [
        {
            "name": "support",
            "rules": [
                {"when": {"contains_any": ["human", "agent please"]}, "escalate_to": "large"},
                {
                    "when": {"last_user_matches": "(?i)delete my account"},
                    "deny": "accounts are closed by phone",
                },
            ],
            "classifier": {"model": str(path)},
            "llm": ["small", "large"],
            "output_schema": {
                "type": "object",
                "properties": {"intent": {"type": "string"}},
                "required": ["intent"],
            },
        }
    ]
    agents = [{"id": "agent", "api_key": DEMO_KEY}]
    with gateway_server(make_config(simulator[0], routes=routes, agents=agents)) as url:
        yield url


def ask(gateway: str, text: str, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": text}], **extra
    )


def decision(gateway: str, raw: Any) -> dict[str, Any]:
    root = gateway.removesuffix("/v1")
    response = httpx.get(
        f"{root}/admin/decisions/{raw.headers['x-tiergate-decision-id']}",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    return dict(response.json())


def test_a_confident_classifier_answers_without_the_upstream(
    gateway: str, simulator: tuple[str, Any], model_path: Path
) -> None:
    before = simulator[1].stats.requests
    text = "hi, my card has not arrived yet?"
    raw = ask(gateway, text)
    assert raw.parse().choices[0].message.content == "card_arrival"
    assert raw.headers["x-tiergate-tier"] == "classifier"
    expected = Predictor(ClassifierModel.load(model_path)).predict(text).confidence
    assert raw.headers["x-tiergate-confidence"] == f"{expected:.4f}"
    assert simulator[1].stats.requests == before
    record = decision(gateway, raw)
    assert [a["tier"] for a in record["attempts"]] == ["rules", "classifier"]
    assert (
        record["attempts"][0]["outcome"] == "escalated"
        and record["attempts"][0]["reason"] == "no rule matched"
    )


def test_out_of_scope_text_escalates_to_the_llm_with_the_reason_recorded(
    gateway: str, simulator: tuple[str, Any]
) -> None:
    before = simulator[1].stats.requests
    raw = ask(gateway, "tell me a joke about cats")
    assert raw.headers["x-tiergate-tier"] == "llm:small"
    assert simulator[1].stats.requests == before + 1
    attempts = decision(gateway, raw)["attempts"]
    assert [a["outcome"] for a in attempts] == ["escalated", "escalated", "answered"]
    assert attempts[1]["tier"] == "classifier" and attempts[1]["reason"].startswith("out of scope")


def test_an_unsure_in_scope_text_escalates_below_the_threshold(
    gateway: str, simulator: tuple[str, Any]
) -> None:
    before = simulator[1].stats.requests
    raw = ask(gateway, "card issue again")  # labelled either card intent in training
    assert raw.headers["x-tiergate-tier"] == "llm:small"
    assert simulator[1].stats.requests == before + 1
    attempts = decision(gateway, raw)["attempts"]
    assert attempts[1]["tier"] == "classifier" and "below" in attempts[1]["reason"]
    assert "best guess" in attempts[1]["reason"]


def test_a_structured_request_gets_the_label_in_the_routes_schema(gateway: str) -> None:
    raw = ask(gateway, "hi, i lost my card, please block it", response_format={"type": "json_object"})
    assert json.loads(raw.parse().choices[0].message.content) == {"intent": "lost_card"}


def test_a_rule_can_skip_ahead_or_deny(gateway: str) -> None:
    raw = ask(gateway, "I want a human, my card has not arrived")
    assert raw.headers["x-tiergate-tier"] == "llm:large"
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(gateway, "Delete my account now")
    assert "closed by phone" in info.value.message


def test_a_streaming_request_answered_by_the_classifier_is_a_proper_stream(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": "i want a refund"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "refund"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0


def test_a_missing_model_stops_check_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(
        "upstreams: [{name: s, base_url: 'http://127.0.0.1:1/v1', model: m}]\n"
        "routes: [{name: r, classifier: {model: nowhere.joblib}, llm: [s]}]\n"
        "agents: [{id: a, api_key: sk-a}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "routes[0].classifier.model" in result.stderr


def test_a_complex_request_skips_the_small_model(simulator: tuple[str, Any]) -> None:
    routes = [{"name": "auto", "llm": ["small", "large"], "complexity": {"large_above": 0.3}}]
    agents = [{"id": "agent", "api_key": DEMO_KEY}]
    with gateway_server(make_config(simulator[0], routes=routes, agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        easy = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "route this ticket"}]
        )
        hard = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": "Explain step by step why this is slow and prove 2^10 > 10^3: "
                    "```def f(n): return sum(i*i for i in range(n))```",
                }
            ],
        )
        assert easy.headers["x-tiergate-tier"] == "llm:small"
        assert hard.headers["x-tiergate-tier"] == "llm:large"
        record = decision(url, hard)
    assert record["complexity"] > 0.3
    assert record["attempts"][0]["outcome"] == "skipped" and "complexity" in record["attempts"][0]["reason"]


def test_routes_serve_a_model_with_embeddings(
    simulator: tuple[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("models") / "embedded.joblib"
    model = train(make_rows(), target_precision=0.95, embeddings=True)
    assert model.head is not None  # the gateway serves the head too
    model.save(path)
    routes = [{"name": name, "classifier": {"model": str(path)}, "llm": ["small"]} for name in ("one", "two")]
    agents = [{"id": "agent", "api_key": DEMO_KEY}]
    before = simulator[1].stats.requests
    with gateway_server(make_config(simulator[0], routes=routes, agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for route in ("one", "two"):
            raw = client.chat.completions.with_raw_response.create(
                model=route, messages=[{"role": "user", "content": "hi, my card has not arrived yet?"}]
            )
            assert raw.headers["x-tiergate-tier"] == "classifier"
            assert raw.parse().choices[0].message.content == "card_arrival"
    assert simulator[1].stats.requests == before
