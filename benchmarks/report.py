"""Writes the tables of benchmarks/README.md (and RELIABILITY.md) from the figures in
benchmarks/results/<name>.json, so the documents cannot drift from the runs. Each table sits
between `<!-- results:NAME -->` and `<!-- /results:NAME -->`; everything else is prose kept by hand.

    python benchmarks/report.py          rewrite the tables
    python benchmarks/report.py --check  exit 1 when a document differs from the results
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS / "README.md"
DOCUMENTS = (README, BENCHMARKS / "QUALITY.md", BENCHMARKS.parent / "RELIABILITY.md")
RESULTS = BENCHMARKS / "results"
BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n).*?(<!-- /results:\2 -->)", re.DOTALL)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return (
            f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render(document: dict[str, Any]) -> str:
    lines = [
        f"Measured {document['date']} at commit `{document['commit']}` ({document['machine']}) with"
        f" `{document['command']}`"
    ]
    for table in document["tables"]:
        lines += ["", f"*{table['title']}*", ""]
        lines.append("| " + " | ".join(table["columns"]) + " |")
        lines.append("| " + " | ".join("---" for _ in table["columns"]) + " |")
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def rewritten(text: str, results: Path = RESULTS) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        source = results / f"{name}.json"
        if not source.exists():
            raise SystemExit(f"a document shows results:{name}, but {source} does not exist")
        body = render(json.loads(source.read_text()))
        return f"{match.group(1)}{body}{match.group(3)}"

    return BLOCK.sub(replace, text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for document in DOCUMENTS:
        text = document.read_text()
        new = rewritten(text)
        if new != text:
            stale.append(document.name)
            if not args.check:
                document.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python benchmarks/report.py", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
