"""Training and evaluation data: rows of text and label from CSV or JSON lines. A row whose label is
empty (CSV) or null (JSONL) is out of scope: the model learns to escalate it."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

Row = tuple[str, str | None]


class DataError(Exception):
    """Training or evaluation data that cannot be read."""


def load_rows(path: str | Path, labelled: bool = True) -> list[Row]:
    """Rows from a CSV (columns `text` and `label` or `category`) or JSONL (`{"text", "label"}`).
    With `labelled=False` (texts to predict) a CSV needs only `text`; any label is read as given."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"{file}: no such file")
    rows: list[Row] = []
    if file.suffix in (".jsonl", ".ndjson", ".json"):
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{file}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                    raise DataError(f"{file}:{number}: expected an object with a string `text`")
                label = item.get("label", item.get("category"))
                rows.append((item["text"], None if label in (None, "") else str(label)))
        return rows
    with file.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        column = "label" if "label" in fields else "category" if "category" in fields else None
        if "text" not in fields or (column is None and labelled):
            raise DataError(
                f"{file}: a CSV needs columns `text` and `label` (or `category`); it has {fields}"
            )
        for record in reader:
            label = record[column] if column is not None else None
            rows.append((record["text"], label if label else None))
    return rows


def data_sha256(rows: Sequence[Row]) -> str:
    digest = hashlib.sha256()
    for text, label in rows:
        digest.update(json.dumps([text, label]).encode())
    return digest.hexdigest()
