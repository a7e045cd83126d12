"""Routing: the ladder's walk, complexity scores, and the router metrics (APGR, CPT)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from routing.complexity import HeuristicScorer
from routing.ladder import Ladder
from routing.learned_router import LearnedScorer, RouterRow, apgr, cpt, load_router_rows
from routing.router_training import train_router
from tiers.base import TierRequest
from tiers.types import Answer, ChatRequest, Escalate, Message


class Fixed:
    def __init__(self, name: str, result: str) -> None:
        self.name, self.result, self.calls = name, result, 0

    async def decide(self, request: TierRequest) -> Answer | Escalate:
        self.calls += 1
        if self.result == "answer":
            return Answer(tier=self.name, content=self.name)
        if self.result == "deny":
            return Escalate(tier=self.name, reason="no", final=True, status=403)
        if self.result.startswith("skip:"):
            return Escalate(tier=self.name, reason="jump", skip_to=self.result[5:])
        return Escalate(tier=self.name, reason="declined")


def request(text: str = "hi", **extra: object) -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content=text)], **extra)  # type: ignore[arg-type]


def tier_request(text: str = "hi") -> TierRequest:
    return TierRequest(chat=request(text), agent="a", prompt_tokens=lambda: 5)


async def test_the_ladder_stops_at_the_first_answer_and_records_every_step() -> None:
    tiers = [Fixed("rules", "decline"), Fixed("classifier", "answer"), Fixed("llm:small", "answer")]
    result = await Ladder(tiers).run(tier_request())
    assert result.answer is not None and result.answer.tier == "classifier"
    assert [a.outcome for a in result.attempts] == ["escalated", "answered"]
    assert tiers[2].calls == 0


async def test_a_deny_stops_the_ladder_and_a_skip_jumps_ahead() -> None:
    denied = await Ladder([Fixed("rules", "deny"), Fixed("llm:small", "answer")]).run(tier_request())
    assert denied.answer is None and denied.attempts[-1].outcome == "denied"
    tiers = [Fixed("rules", "skip:large"), Fixed("llm:small", "answer"), Fixed("llm:large", "answer")]
    jumped = await Ladder(tiers).run(tier_request())
    assert jumped.answer is not None and jumped.answer.tier == "llm:large"
    assert [a.outcome for a in jumped.attempts] == ["escalated", "skipped", "answered"]


async def test_tiers_named_in_skip_are_passed_over_with_the_reason() -> None:
    tiers = [Fixed("llm:small", "answer"), Fixed("llm:large", "answer")]
    result = await Ladder(tiers).run(tier_request(), skip={"llm:small": "complexity 0.9 above 0.6"})
    assert result.answer is not None and result.answer.tier == "llm:large"
    assert result.attempts[0].reason == "complexity 0.9 above 0.6" and tiers[0].calls == 0


def test_hard_requests_score_higher_than_routine_ones() -> None:
    scorer = HeuristicScorer()
    routine = scorer.score(request("route this ticket: card not arrived"), 12)
    hard = scorer.score(
        request("Explain step by step why this fails and prove the bound: ```def f(x): return x**2 + 3*4```"),
        900,
    )
    assert 0 <= routine < 0.3 < hard <= 1


def test_apgr_is_one_half_for_random_routing_and_higher_for_an_oracle() -> None:
    rng = random.Random(3)
    rows = [RouterRow("p", rng.random() < 0.6, rng.random() < 0.85) for _ in range(4000)]
    oracle = [
        float(r.strong_correct and not r.weak_correct) - float(r.weak_correct and not r.strong_correct)
        for r in rows
    ]
    assert apgr(oracle, rows) > 0.8
    assert abs(apgr([rng.random() for _ in rows], rows) - 0.5) < 0.05
    assert cpt(oracle, rows) < 0.3
    always_weak_first = [0.0] * len(rows)
    assert 0.4 < apgr(always_weak_first, rows) < 0.6  # ties keep the data's order


def test_a_learned_router_beats_random_on_data_with_a_signal(tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = []
    for _ in range(600):
        hard = rng.random() < 0.4
        prompt = ("prove the integral bound for the matrix " if hard else "what colour is the sky ") + str(
            rng.random()
        )
        rows.append(
            {
                "prompt": prompt,
                "weak_correct": (rng.random() < (0.3 if hard else 0.9)),
                "strong_correct": rng.random() < 0.9,
            }
        )
    path = tmp_path / "router.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_router_rows(path)
    scorer = LearnedScorer(train_router(loaded[:400]))
    held = loaded[400:]
    assert apgr([scorer.score_text(r.prompt) for r in held], held) > 0.65
    model = tmp_path / "router.joblib"
    trained = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "train-router", "--data", str(path), "--out", str(model)],
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stderr
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "eval-router",
            "--model",
            str(model),
            "--data",
            str(path),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    figures = json.loads(report.stdout)
    assert figures["learned"]["apgr"] > 0.65 and 0 < figures["learned"]["cpt50"] < 1
    assert "heuristic" in figures and "learned_alone" in figures
    # rows without subjects: no folds of unseen subjects to learn a blend from
    assert "router saved" in trained.stdout and "of unseen subjects" not in trained.stdout


@pytest.mark.parametrize("line", ['{"prompt": "x"}', "not json"])
def test_bad_router_rows_are_reported(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError):
        load_router_rows(path)
