"""Screenshots of the operator console's pages for the docs (docs/console/*.png).

Starts the simulated upstream and a gateway with a SQLite store, sends it a morning's worth of
mixed traffic (rules and LLM answers, a budget running out, answers held for approval), logs in
with headless Chromium and photographs each page.

    python docs/console/screenshots.py [--out docs/console] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness import gateway, simulator  # noqa: E402

ADMIN_KEY = "sk-docs-admin"
AGENTS = {"support-bot": "sk-docs-support", "billing-bot": "sk-docs-billing", "intern-bot": "sk-docs-intern"}


def config(sim: str, folder: str) -> dict[str, Any]:
    return {
        "server": {"admin_key": ADMIN_KEY},
        "upstreams": [
            {"name": "small", "base_url": sim, "model": "sim-small", "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
            {"name": "large", "base_url": sim, "model": "sim-large", "price": {"input_per_mtok": 2.5, "output_per_mtok": 10}},
        ],
        "agents": [
            {"id": "support-bot", "api_key": AGENTS["support-bot"], "budget": {"tokens_per_day": 200_000}},
            {"id": "billing-bot", "api_key": AGENTS["billing-bot"], "budget": {"tokens_per_day": 50_000}},
            {"id": "intern-bot", "api_key": AGENTS["intern-bot"], "budget": {"tokens_per_day": 1_200}},
        ],
        "routes": [
            {
                "name": "triage",
                "rules": [
                    {"when": {"last_user_matches": "(?i)reset (my )?password"}, "answer": "account_access"},
                    {"when": {"last_user_matches": "(?i)refund"}, "answer": "billing"},
                ],
                "llm": ["small", "large"],
                "approval": {"when": [{"metadata": {"impact": "high"}}], "hold_s": 1},
            },
            {"name": "auto", "llm": ["small", "large"]},
        ],
        "store": {"url": f"sqlite:///{folder}/store.db", "spool_dir": f"{folder}/spool", "ship_interval_s": 0.1},
    }


def traffic(url: str) -> None:
    texts = ["reset my password", "I want a refund for order 1182", "where is my parcel?", "summarise this thread"]
    for i in range(40):
        for agent, key in AGENTS.items():
            client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
            model = "triage" if i % 3 else "auto"
            try:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": texts[i % 4]}])
            except openai.APIStatusError:
                pass  # the intern's budget runs out: refusals are part of the picture
    held = openai.OpenAI(base_url=url, api_key=AGENTS["support-bot"], max_retries=0)
    for text in ("close account 4411 and delete its data", "issue a $900 goodwill credit to customer 73"):
        try:
            held.chat.completions.create(
                model="triage", messages=[{"role": "user", "content": text}], metadata={"impact": "high"}
            )
        except openai.ConflictError:
            pass  # held for a person: it waits in the approvals inbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "console"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as folder, simulator() as sim, gateway(config(sim, folder)) as url:
        traffic(url)
        base = url.removesuffix("/v1")
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # until the store has the traffic
            listed = httpx.get(f"{base}/admin/decisions", params={"limit": 200}, headers=admin).json()
            if len(listed["data"]) >= 100:
                break
            time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{base}/console/login")
            page.screenshot(path=str(out / "login.png"))
            page.fill("#key", ADMIN_KEY)
            page.click("#login button")
            page.wait_for_url("**/console/overview")
            for name in ("overview", "agents", "decisions", "approvals", "routes"):
                page.goto(f"{base}/console/{name}")
                page.wait_for_timeout(300)  # charts drawn
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            page.goto(f"{base}/console/decisions?tier=llm:small")
            page.locator("#decisions a").first.click()
            page.screenshot(path=str(out / "decision.png"), full_page=True)
            browser.close()
    print(f"screenshots in {out}")



if __name__ == "__main__":
    main()
