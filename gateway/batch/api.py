"""The Batch API in OpenAI's shapes, so the official client's `files` and `batches` calls work
unchanged: `POST /v1/files` (purpose `batch`, a JSONL of `/v1/chat/completions` requests),
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}`,
`GET /v1/batches`, `POST /v1/batches/{id}/cancel`. Each agent sees only its own files and batches."""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile

from gateway.batch.files import FileKeeper
from gateway.batch.service import Batches
from gateway.batch.store import BatchRecord, FileRecord, Line, SqlBatchStore
from gateway.config.models import AgentConfig
from gateway.errors import BadRequest, GatewayError, NotConfigured, NotFound, PayloadTooLarge
from gateway.http.state import current_gateway
from gateway.http.wire import InputLimits, decode_chat_request
from gateway.store.runtime import reachable

JSON = "application/json"
ENDPOINT = "/v1/chat/completions"
WINDOWS = {"24h": 86400.0}


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


class _Line(msgspec.Struct):
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


_decode_line = msgspec.json.Decoder(_Line).decode
_decode_body = msgspec.json.Decoder(BatchBody).decode


def _setup(request: Request[Any, Any, Any]) -> tuple[AgentConfig, Batches]:
    gateway = current_gateway(request)
    agent = gateway.agents.authenticate(request.headers.get("authorization"))
    if gateway.batches is None:
        raise NotConfigured("batches need the decision store: set store.url in the config")
    return agent, gateway.batches


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.time),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
    }


async def batch_object(store: SqlBatchStore, batch: BatchRecord) -> dict[str, Any]:
    counts = await store.counts(batch.id)
    stamps = {k: int(v) for k, v in batch.stamps.items()}
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": int(batch.time),
        "expires_at": int(batch.expires_at),
        **{
            name: stamps.get(name)
            for name in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        },
        "request_counts": {"total": counts.total, "completed": counts.done, "failed": counts.failed},
        "metadata": batch.metadata,
    }


def _json(body: Any) -> Response[bytes]:
    return Response(msgspec.json.encode(body), media_type=JSON)


@post("/v1/files", status_code=200)
async def create_file(request: Request[Any, Any, Any]) -> Response[bytes]:
    agent, batches = _setup(request)
    limit = int(batches.config.max_file_mb * 1024 * 1024)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + 64 * 1024:
        raise PayloadTooLarge(f"the file is over the limit of {batches.config.max_file_mb:g} MB")
    form = await request.form()
    purpose, upload = form.get("purpose"), form.get("file")
    if purpose != "batch":
        raise BadRequest(
            "purpose must be batch (the only purpose this gateway keeps files for)", param="purpose"
        )
    if not isinstance(upload, UploadFile):
        raise BadRequest("send the file as multipart form data, field `file`", param="file")
    content = await upload.read()
    if len(content) > limit:
        raise PayloadTooLarge(f"the file is over the limit of {batches.config.max_file_mb:g} MB")
    record = FileRecord(
        id=FileKeeper.new_id(),
        time=time.time(),
        agent=agent.id,
        purpose="batch",
        filename=upload.filename or "batch.jsonl",
        bytes=len(content),
    )
    batches.files.write(record.id, content)
    with reachable():
        await batches.store.add_file(record)
    return _json(file_object(record))


async def _own_file(request: Request[Any, Any, Any]) -> tuple[Batches, FileRecord]:
    agent, batches = _setup(request)
    file_id = request.path_params["file_id"]
    with reachable():
        record = await batches.store.file(file_id)
    if record is None or record.agent != agent.id:
        raise NotFound(f"no file {file_id!r}", param="file_id", code="file_not_found")
    return batches, record


@get("/v1/files/{file_id:str}")
async def get_file(request: Request[Any, Any, Any]) -> Response[bytes]:
    _, record = await _own_file(request)
    return _json(file_object(record))


@get("/v1/files/{file_id:str}/content")
async def file_content(request: Request[Any, Any, Any]) -> Response[bytes]:
    batches, record = await _own_file(request)
    return Response(batches.files.read(record.id), media_type="application/octet-stream")


def read_lines(content: bytes, batch_id: str, limits: InputLimits, max_lines: int) -> list[Line]:
    """The file's requests, each a line to run, or one that failed to be read (with why)."""
    lines: list[Line] = []
    seen: set[str] = set()
    for number, raw in enumerate(line for line in content.splitlines() if line.strip()):
        if number >= max_lines:
            raise BadRequest(f"the file has more than {max_lines} requests", param="input_file_id")
        try:
            parsed = _decode_line(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = {"code": "invalid_request", "message": f"line {number + 1}: {exc}"}
            custom = f"line-{number + 1}"
            lines.append(
                Line(batch_id=batch_id, line=number, custom_id=custom, status="failed", error=_text(error))
            )
            continue
        if parsed.custom_id in seen:
            raise BadRequest(
                f"custom_id {parsed.custom_id!r} appears twice; each must be unique", param="custom_id"
            )
        seen.add(parsed.custom_id)
        problem = None
        if parsed.method != "POST" or parsed.url != ENDPOINT:
            problem = f"line {number + 1}: only POST {ENDPOINT} is supported"
        else:
            try:
                decode_chat_request(msgspec.json.encode(parsed.body), limits)
            except GatewayError as exc:
                problem = f"line {number + 1}: {exc.message}"
        if problem is not None:
            error = {"code": "invalid_request", "message": problem}
            lines.append(
                Line(
                    batch_id=batch_id,
                    line=number,
                    custom_id=parsed.custom_id,
                    status="failed",
                    error=_text(error),
                )
            )
            continue
        body = msgspec.json.encode(parsed.body).decode()
        lines.append(
            Line(batch_id=batch_id, line=number, custom_id=parsed.custom_id, status="pending", body=body)
        )
    if not lines:
        raise BadRequest("the file holds no requests", param="input_file_id")
    return lines


def _text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@post("/v1/batches", status_code=200)
async def create_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    agent, batches = _setup(request)
    body = await request.body()
    try:
        asked = _decode_body(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequest(f"invalid batch request: {exc}") from None
    if asked.endpoint != ENDPOINT:
        raise BadRequest(f"endpoint must be {ENDPOINT}", param="endpoint")
    if asked.completion_window not in WINDOWS:
        raise BadRequest("completion_window must be 24h", param="completion_window")
    with reachable():
        source = await batches.store.file(asked.input_file_id)
    if source is None or source.agent != agent.id or source.purpose != "batch":
        raise NotFound(f"no batch file {asked.input_file_id!r}", param="input_file_id", code="file_not_found")
    now = time.time()
    batch = BatchRecord(
        id="batch_" + secrets.token_hex(12),
        time=now,
        agent=agent.id,
        status="validating",
        endpoint=ENDPOINT,
        input_file_id=source.id,
        completion_window=asked.completion_window,
        expires_at=now + WINDOWS[asked.completion_window],
        metadata=asked.metadata,
    )
    lines = read_lines(batches.files.read(source.id), batch.id, batches.limits, batches.config.max_lines)
    with reachable():
        await batches.store.add_batch(batch, lines)
        shown = await batch_object(batches.store, batch)
    batches.runner.nudge()
    return _json(shown)


async def _own_batch(request: Request[Any, Any, Any]) -> tuple[Batches, BatchRecord]:
    agent, batches = _setup(request)
    batch_id = request.path_params["batch_id"]
    with reachable():
        batch = await batches.store.batch(batch_id)
    if batch is None or batch.agent != agent.id:
        raise NotFound(f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")
    return batches, batch


@get("/v1/batches/{batch_id:str}")
async def get_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    batches, batch = await _own_batch(request)
    with reachable():
        return _json(await batch_object(batches.store, batch))


@get("/v1/batches")
async def list_batches(request: Request[Any, Any, Any]) -> Response[bytes]:
    agent, batches = _setup(request)
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise BadRequest("limit must be a whole number from 1 to 100", param="limit")
    with reachable():
        found = await batches.store.batches(agent.id, int(limit) + 1, request.query_params.get("after"))
        data = [await batch_object(batches.store, b) for b in found[: int(limit)]]
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(found) > int(limit),
    }
    return _json(body)


@post("/v1/batches/{batch_id:str}/cancel", status_code=200)
async def cancel_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    batches, batch = await _own_batch(request)
    with reachable():
        for status in ("validating", "in_progress"):
            stamps = {**batch.stamps, "cancelling_at": time.time()}
            if await batches.store.update_batch(batch.id, status, status="cancelling", stamps=stamps):
                break
        batches.runner.nudge()
        current = await batches.store.batch(batch.id)
        assert current is not None
        return _json(await batch_object(batches.store, current))


BATCH_HANDLERS = [create_file, get_file, file_content, create_batch, get_batch, list_batches, cancel_batch]
