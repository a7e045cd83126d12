"""The operator console in a real browser (Debian's Chromium, headless, driven by Playwright):
log in, figures that match the admin API for the same traffic, a decision's page, approving a
waiting answer by clicking its button (the agent's request is answered), logging out; a viewer key
that sees everything and can decide nothing; wrong keys, rate-limited; CSRF on every form."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config, store_settings
from tests.servers import gateway_server, until

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
VIEWER_KEY = "sk-console-viewer-0001"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; the test fails (never skips) when it cannot run."""
    executable = shutil.which("chromium") or CHROMIUM
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def console_config(simulator_url: str, store_url: str, tmp_path: Any, **agent: Any) -> Any:
    return make_config(
        simulator_url,
        store=store_settings(store_url, tmp_path),
        server={"admin_key": ADMIN_KEY, "viewer_keys": [VIEWER_KEY]},
        routes=[
            {
                "name": "triage",
                "rules": [
                    {"when": {"last_user_matches": "(?i)reset (my )?password"}, "answer": "account_access"}
                ],
                "llm": ["small", "large"],
                "approval": {"when": [{"metadata": {"impact": "high"}}], "hold_s": 20},
            },
            {"name": "auto", "llm": ["small", "large"]},
        ],
        agents=[{"id": "agent", "api_key": DEMO_KEY, "routes": ["triage", "auto"], **agent}],
    )


def root(url: str) -> str:
    return url.removesuffix("/v1")


def stored(url: str, n: int) -> list[dict[str, Any]]:
    """The store's decisions once it holds `n` of them (records reach it within a shipping pass)."""

    def listed() -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = httpx.get(f"{root(url)}/admin/decisions", headers=ADMIN).json()["data"]
        return data if len(data) >= n else []

    found = until(listed, timeout_s=15)
    assert len(found) == n
    return found


def log_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{root(url)}/console")
    expect(page).to_have_url(f"{root(url)}/console/login")
    page.fill("#key", key)
    page.click("#login button")
    expect(page).to_have_url(f"{root(url)}/console/overview")


def held_request(client: openai.OpenAI, answers: list[Any]) -> threading.Thread:
    """An agent's request whose answer is held for approval, waiting in the background."""

    def ask() -> None:
        try:
            answers.append(
                client.chat.completions.with_raw_response.create(
                    model="triage",
                    messages=[{"role": "user", "content": "close the customer's account"}],
                    metadata={"impact": "high"},
                )
            )
        except openai.ConflictError as exc:  # still pending when its hold ended
            answers.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    return thread


def pending(url: str) -> list[dict[str, Any]]:
    listed = httpx.get(f"{root(url)}/admin/approvals", params={"status": "pending"}, headers=ADMIN)
    return list(listed.json()["data"])


def test_an_operator_sees_the_traffic_opens_a_decision_and_approves_a_waiting_answer(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any, browser: Browser
) -> None:
    with gateway_server(console_config(simulator[0], store_url, tmp_path)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        for _ in range(3):
            ask = [{"role": "user", "content": "reset my password"}]
            client.chat.completions.create(model="triage", messages=ask)  # type: ignore[arg-type]
        for i in range(2):
            ask = [{"role": "user", "content": f"summarise ticket {i}"}]
            client.chat.completions.create(model="auto", messages=ask)  # type: ignore[arg-type]
        decisions = stored(url, 5)
        page = browser.new_page()
        log_in(page, url, ADMIN_KEY)
        # the overview's figures are the admin API's, for the same traffic
        expect(page.locator("#requests")).to_have_attribute("data-value", "5")
        spend = float(page.locator("#spend").get_attribute("data-value") or "nan")
        assert spend == pytest.approx(sum(d.get("cost_usd", 0.0) for d in decisions), abs=1e-6)
        assert page.locator("#tiers").inner_text().count("rules") == 1
        # a decision's page, from the list
        page.click("text=Decisions")
        page.locator("#decisions a").first.click()
        expect(page.locator("#decision-id")).to_have_text(decisions[0]["id"])
        expect(page.locator("#tier")).to_contain_text(decisions[0]["tier"])
        page.check("#feedback-form input[value=false]")
        page.fill("#feedback-form input[name=comment]", "should have gone to billing")
        page.click("#feedback-form button")
        expect(page.locator("#notice")).to_have_text("Feedback saved.")
        expect(page.locator("#feedback")).to_contain_text("reviewer: wrong — should have gone to billing")
        said = httpx.get(f"{root(url)}/admin/decisions/{decisions[0]['id']}", headers=ADMIN).json()
        assert [f["source"] for f in said["feedback"]] == ["reviewer"]
        # the list, filtered by tier, and by time (nothing before the traffic began)
        page.goto(f"{root(url)}/console/decisions")
        page.fill("#filters input[name=tier]", "rules")
        page.click("#filters button")
        expect(page.locator("#decisions tr.decision")).to_have_count(3)
        page.fill("#filters input[name=until]", "2020-01-01T00:00")
        page.click("#filters button")
        expect(page.locator("#decisions tr.decision")).to_have_count(0)
        # an answer held for approval, approved by clicking its button
        agent = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=5)
        answers: list[Any] = []
        waiting = held_request(agent, answers)
        assert until(lambda: pending(url), timeout_s=10)
        page.click("text=Approvals")
        card = page.locator("article.approval").first
        expect(card).to_contain_text("close the customer's account")
        card.locator("button.approve").click()
        expect(page.locator("article.approval.decided")).to_contain_text("approved")
        waiting.join(30)
        assert answers and answers[0].headers["x-tiergate-approval"] == "approved"
        assert answers[0].parse().choices[0].message.content
        # the decided history leads to the decision, which shows its approval
        page.reload()
        page.locator("#decided a").first.click()
        expect(page.locator("#approval")).to_contain_text("approved")
        # logging out ends the session
        page.click("#logout")
        expect(page).to_have_url(f"{root(url)}/console/login")
        page.goto(f"{root(url)}/console/overview")
        expect(page).to_have_url(f"{root(url)}/console/login")


def test_a_viewer_sees_everything_and_can_decide_nothing(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any, browser: Browser
) -> None:
    config = console_config(simulator[0], store_url, tmp_path, loops={"max_repeats": 1})
    with gateway_server(config) as url:
        agent = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        ask = [{"role": "user", "content": "summarise the ticket"}]
        agent.chat.completions.create(model="auto", messages=ask)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):  # the same request again: stopped as a loop
            agent.chat.completions.create(model="auto", messages=ask)  # type: ignore[arg-type]
        stored(url, 2)
        answers: list[Any] = []
        waiting = held_request(agent, answers)
        [held] = until(lambda: pending(url), timeout_s=10)
        page = browser.new_page()
        log_in(page, url, VIEWER_KEY)
        expect(page.locator("#role")).to_have_text("viewer")
        expect(page.locator("li.attention.loops")).to_contain_text("agent: 1 request(s) stopped as loops")
        page.goto(f"{root(url)}/console/approvals")
        expect(page.locator("article.approval")).to_contain_text("close the customer's account")
        assert page.locator("button.approve").count() == 0
        # a decision forged with the viewer's own session and CSRF token is refused
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        forged = page.request.post(
            f"{root(url)}/console/approvals/{held['id']}", form={"csrf": csrf or "", "decision": "approve"}
        )
        assert forged.status == 403
        assert [a["id"] for a in pending(url)] == [held["id"]]
        for name in ("overview", "agents", "decisions", "routes"):
            assert page.goto(f"{root(url)}/console/{name}").status == 200  # type: ignore[union-attr]
        waiting.join(30)  # its hold ends: 409 approval_pending
        assert len(answers) == 1 and isinstance(answers[0], openai.ConflictError)


def test_wrong_keys_get_the_form_again_and_too_many_are_slowed_down(
    simulator: tuple[str, Any], store_url: str, tmp_path: Any, browser: Browser
) -> None:
    with gateway_server(console_config(simulator[0], store_url, tmp_path)) as url:
        # the session cookie, and a form without the session's CSRF token changing nothing
        other = browser.new_page()
        log_in(other, url, VIEWER_KEY)
        [cookie] = [c for c in other.context.cookies() if c["name"] == "tiergate_console"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert other.request.post(f"{root(url)}/console/logout", form={"csrf": "forged"}).status == 403
        assert other.goto(f"{root(url)}/console/overview").url.endswith("/console/overview")  # type: ignore[union-attr]
        assert ADMIN_KEY not in other.content() and VIEWER_KEY not in other.content()
        # wrong keys: the form again, with why; past five a minute from one address, a wait
        page = browser.new_page()
        page.goto(f"{root(url)}/console/login")
        for _ in range(5):
            page.fill("#key", "sk-not-a-key")
            page.click("#login button")
            expect(page.locator("#login-error")).to_contain_text("neither the admin key nor a viewer key")
            assert "key" not in page.url.split("/console/")[-1]  # no key in any URL
        page.fill("#key", ADMIN_KEY)  # even the right key waits now
        page.click("#login button")
        expect(page.locator("#login-error")).to_contain_text("Too many wrong keys")
