"""benchmarks/README.md shows exactly the figures of benchmarks/results/*.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402


def test_the_readme_tables_are_the_committed_results() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_table_is_rewritten_from_its_results_and_stamped(tmp_path: Path) -> None:
    document = {
        "benchmark": "demo",
        "date": "2026-01-02 03:04 UTC",
        "commit": "abc1234",
        "machine": "x86_64, 2 cores, Python 3.11.7",
        "command": "python benchmarks/demo.py --fast",
        "tables": [
            {"title": "Demo", "columns": ["what", "µs"], "rows": [["a step", 12.345], ["more", 2500.0]]}
        ],
    }
    (tmp_path / "demo.json").write_text(json.dumps(document))
    page = "intro\n<!-- results:demo -->\nstale figures\n<!-- /results:demo -->\noutro\n"
    new = report.rewritten(page, tmp_path)
    assert "stale" not in new and new.startswith("intro\n") and new.endswith("outro\n")
    assert "at commit `abc1234`" in new and "`python benchmarks/demo.py --fast`" in new
    assert "| a step | 12.3 |" in new and "| more | 2,500 |" in new
    assert report.rewritten(new, tmp_path) == new  # idempotent


def test_a_table_without_results_is_an_error(tmp_path: Path) -> None:
    page = "<!-- results:missing -->\n<!-- /results:missing -->\n"
    with pytest.raises(SystemExit, match="missing"):
        report.rewritten(page, tmp_path)
