"""The store's tables, in SQLAlchemy Core: the same definitions for SQLite and PostgreSQL.

Migrations (gateway/store/migrations/versions) create and change them; this module is what the
code reads and writes, and a test checks that the two agree."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row per request: the columns a query filters on, and the whole record as its JSON line.
decisions = Table(
    "decisions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("time", Double, nullable=False),
    Column("agent", String(128), nullable=False),
    Column("route", String(128), nullable=False),
    Column("tier", String(128)),
    Column("status", Integer, nullable=False),
    Column("record", Text, nullable=False),
    Index("ix_decisions_time", "time", "id"),
    Index("ix_decisions_agent_time", "agent", "time"),
    Index("ix_decisions_route_time", "route", "time"),
)

# What an agent or a reviewer said of a decision: one row per decision and source (a repeat
# replaces it).
feedback = Table(
    "feedback",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("source", String(16), primary_key=True),  # "agent" or "reviewer"
    Column("time", Double, nullable=False),
    Column("agent", String(128), nullable=False),
    Column("route", String(128), nullable=False),
    Column("label", Text),
    Column("correct", Boolean),
    Column("score", Double),
    Column("comment", Text),
    # what the feedback says of the answer: right (true), wrong (false), or nothing either way
    Column("agreed", Boolean),
    Column("tier", String(128)),
    Column("confidence", Double),
    Index("ix_feedback_route_time", "route", "time"),
)

# An answer of a cheap tier, also asked of the route's reference tier in the background.
audits = Table(
    "audits",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("time", Double, nullable=False),
    Column("route", String(128), nullable=False),
    Column("tier", String(128), nullable=False),
    Column("label", Text),
    Column("confidence", Double),
    Column("reference", String(128), nullable=False),
    Column("reference_label", Text),
    Column("agreed", Boolean, nullable=False),
    Column("tokens", Integer, nullable=False),
    Index("ix_audits_route_time", "route", "time"),
)

# Things that happened to the gateway and matter later: breaches, drift, promotions.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Double, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("route", String(128)),
    Column("detail", Text, nullable=False),
    Index("ix_events_time", "time"),
)

# An answer held for a person, and what they decided. `status`: pending, approved, edited,
# rejected or expired; an answer approved automatically (its agent is trusted for the condition)
# is stored approved with `automatic`, and `review` pending when it was sampled for a look after
# the fact.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("time", Double, nullable=False),
    Column("agent", String(128), nullable=False),
    Column("route", String(128), nullable=False),
    Column("decision_id", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),  # the condition that held, in words
    Column("condition", Text, nullable=False),  # and as its key (trust is earned per condition)
    Column("tier", String(128), nullable=False),
    Column("confidence", Double, nullable=False),
    Column("request", Text, nullable=False),  # the request's JSON
    Column("answer", Text, nullable=False),  # the proposed answer's body (chat.completion JSON)
    Column("expires_at", Double, nullable=False),
    Column("decided_at", Double),
    Column("note", Text),  # the reviewer's reason
    Column("edited", Text),  # the answer as edited (JSON: content and/or tool calls)
    Column("automatic", Boolean, nullable=False),
    Column("review", String(16)),  # pending or done, for a trusted answer sampled for review
    Column("delivered", Boolean, nullable=False),
    Index("ix_approvals_status_time", "status", "time"),
    Index("ix_approvals_agent_request", "agent", "request_hash", "time"),
    Index("ix_approvals_decision", "decision_id"),
)

# Who holds trust for what: per agent and condition, the run of approvals since the last edit or
# rejection.
trust = Table(
    "trust",
    metadata,
    Column("agent", String(128), primary_key=True),
    Column("condition", String(512), primary_key=True),
    Column("streak", Integer, nullable=False),
    Column("trusted", Boolean, nullable=False),
    Column("since", Double, nullable=False),
    Column("reason", Text, nullable=False),
)

# Files uploaded for (or written by) batches; their contents are kept in the files folder.
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("time", Double, nullable=False),
    Column("agent", String(128), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("filename", Text, nullable=False),
    Column("bytes", Integer, nullable=False),
)

# A batch job: its lines run through the request path in the background lane.
batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("time", Double, nullable=False),
    Column("agent", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("completion_window", String(16), nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("stamps", Text, nullable=False),  # JSON: in_progress_at, completed_at, cancelled_at, ...
    Column("metadata", Text),
    Index("ix_batches_status", "status"),
    Index("ix_batches_agent_time", "agent", "time"),
)

# Each line of a batch: pending, running (claimed by a worker), done or failed.
batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("body", Text),  # the request's JSON (None: the line could not be read)
    Column("owner", String(128)),
    Column("claimed_at", Double),
    Column("result", Text),  # JSON: status_code, request_id, body
    Column("error", Text),  # JSON: code, message (a line that could not run)
    Index("ix_batch_lines_status", "batch_id", "status"),
)

# Latency edges (ms) and confidence edges of the rollups' histograms: bucket i counts values under
# LATENCY_EDGES_MS[i] (and at least the edge before); the last bucket counts the rest.
LATENCY_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
CONFIDENCE_BUCKETS = 10


def _rollup(name: str) -> Table:
    """Decisions summed per slot of time, agent, route and tier ("" where none answered): what the
    console's pages read, so they stay fast however many decisions are stored."""
    return Table(
        name,
        metadata,
        Column("slot", Integer, primary_key=True),  # epoch seconds // the slot's width
        Column("agent", String(128), primary_key=True),
        Column("route", String(128), primary_key=True),
        Column("tier", String(128), primary_key=True),
        Column("requests", Integer, nullable=False),
        Column("errors", Integer, nullable=False),  # status >= 500
        Column("refused", Integer, nullable=False),  # 4xx: budgets, loops, bad requests, approvals
        Column("loops", Integer, nullable=False),  # stopped as loops
        Column("cache_hits", Integer, nullable=False),
        Column("prompt_tokens", Integer, nullable=False),
        Column("completion_tokens", Integer, nullable=False),
        Column("cost_usd", Double, nullable=False),
        Column("baseline_usd", Double, nullable=False),  # had it gone to the route's dearest LLM
        *(Column(f"lat_{i}", Integer, nullable=False) for i in range(len(LATENCY_EDGES_MS) + 1)),
        *(Column(f"conf_{i}", Integer, nullable=False) for i in range(CONFIDENCE_BUCKETS)),
        Index(f"ix_{name}_agent", "agent", "slot"),
        Index(f"ix_{name}_route", "route", "slot"),
    )


# per minute (the last hour's pages) and per hour (a day's, a week's)
decision_minutes = _rollup("decision_minutes")
decision_hours = _rollup("decision_hours")

# Who is logged in to the console: the session's digest (the cookie holds the secret), its role
# (admin or viewer) and the CSRF token its forms carry.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created", Double, nullable=False),
    Column("expires", Double, nullable=False),
)

# Responses API responses kept for `previous_response_id` and `GET /v1/responses/{id}`: the
# response object and the conversation it ends (as chat messages), both JSON.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("agent", String(128), nullable=False),
    Column("created", Double, nullable=False),
    Column("expires", Double, nullable=False),
    Column("response", Text, nullable=False),
    Column("history", Text, nullable=False),
    Index("ix_responses_expires", "expires"),
)
