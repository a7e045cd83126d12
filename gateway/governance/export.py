"""Training rows from what the loop learned: corrections in feedback, and audited answers.

For each decision of the route, the most trusted verdict wins: a reviewer's feedback, then the
agent's, then an audit. A verdict gives a row when it names the right label: a correction (`label`),
a confirmation (`correct: true`, or an audit that agreed) of the label answered, or the reference's
label when an audit disagreed and the reference named one. The text is the decision's last user
message, so a route whose records are redacted (`records.redact`) yields no rows."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from gateway.store.protocol import Store

TRUST = {"reviewer": 0, "agent": 1, "audit": 2}


class _Said(msgspec.Struct):
    label: str | None = None
    last_user_message: str | None = None


class Row(msgspec.Struct, frozen=True):
    text: str
    label: str
    source: str
    decision_id: str


async def training_rows(store: Store, route: str, since: float | None) -> list[Row]:
    verdicts: dict[str, tuple[int, str | None, bool | None]] = {}  # id -> (trust, label, confirms)

    def offer(decision_id: str, source: str, label: str | None, confirms: bool | None) -> None:
        held = verdicts.get(decision_id)
        if held is None or TRUST[source] < held[0]:
            verdicts[decision_id] = (TRUST[source], label, confirms)

    for said in await store.feedback(route, since):
        offer(said.decision_id, said.source, said.label, said.correct)
    for audit in await store.audits(route, limit=1_000_000, since=since):
        offer(audit.decision_id, "audit", None if audit.agreed else audit.reference_label, audit.agreed)
    records = await store.records(sorted(verdicts))
    decode = msgspec.json.Decoder(_Said).decode
    sources = {trust: source for source, trust in TRUST.items()}
    rows = []
    for decision_id, (trust, label, confirms) in sorted(verdicts.items()):
        record = records.get(decision_id)
        if record is None:
            continue
        stored = decode(record)
        text = stored.last_user_message
        right = label if label is not None else (stored.label if confirms else None)
        if text and right:
            rows.append(Row(text, right, sources[trust], decision_id))
    return rows


def jsonl(rows: list[Row]) -> Iterator[bytes]:
    for row in rows:
        yield msgspec.json.encode({"text": row.text, "label": row.label}) + b"\n"
