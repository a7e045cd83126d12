"""The simulated upstream's Batch API, in OpenAI's shapes: `POST /v1/files` (purpose `batch`),
`POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/files/{id}/content`. A batch runs after
`batch_delay_s`, each line answered as the chat endpoint would answer it (faults included)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

LineAnswer = Callable[[bytes], tuple[int, dict[str, Any]]]


class SimulatedBatches:
    def __init__(self, answer: LineAnswer, delay_s: float = 0.0) -> None:
        self._answer = answer
        self._delay_s = delay_s
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.created = 0  # batches created
        self.lines = 0  # lines answered in batches

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches/{id}", self.retrieve)

    def _file(self, content: bytes, purpose: str, filename: str) -> dict[str, Any]:
        file_id = f"file-sim{next(self._ids)}"
        self._files[file_id] = content
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
        }

    async def upload(self, http: web.Request) -> web.Response:
        form = await http.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField) or form.get("purpose") != "batch":
            return _error(400, "a file and purpose=batch are required")
        return web.json_response(self._file(upload.file.read(), "batch", upload.filename))

    async def content(self, http: web.Request) -> web.Response:
        content = self._files.get(http.match_info["id"])
        if content is None:
            return _error(404, "no such file")
        return web.Response(body=content, content_type="application/jsonl")

    async def create(self, http: web.Request) -> web.Response:
        asked = msgspec.json.decode(await http.read())
        if asked.get("input_file_id") not in self._files:
            return _error(400, "input_file_id names no file")
        batch_id = f"batch_sim{next(self._ids)}"
        batch: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": asked.get("endpoint"),
            "input_file_id": asked["input_file_id"],
            "completion_window": asked.get("completion_window", "24h"),
            "status": "in_progress",
            "created_at": int(time.time()),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        self._batches[batch_id] = batch
        self.created += 1
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch)

    async def retrieve(self, http: web.Request) -> web.Response:
        batch = self._batches.get(http.match_info["id"])
        return _error(404, "no such batch") if batch is None else web.json_response(batch)

    async def _run(self, batch: dict[str, Any]) -> None:
        await asyncio.sleep(self._delay_s)
        output: list[bytes] = []
        errors: list[bytes] = []
        for raw in self._files[batch["input_file_id"]].splitlines():
            if not raw.strip():
                continue
            line = msgspec.json.decode(raw)
            status, body = self._answer(msgspec.json.encode(line["body"]))
            self.lines += 1
            entry = {
                "id": f"batch_req_sim{next(self._ids)}",
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": None, "body": body},
                "error": None,
            }
            (output if status == 200 else errors).append(msgspec.json.encode(entry))
        counts = {"total": len(output) + len(errors), "completed": len(output), "failed": len(errors)}
        batch.update(status="completed", request_counts=counts)
        if output:
            batch["output_file_id"] = self._file(b"\n".join(output) + b"\n", "batch_output", "output.jsonl")[
                "id"
            ]
        if errors:
            batch["error_file_id"] = self._file(b"\n".join(errors) + b"\n", "batch_output", "errors.jsonl")[
                "id"
            ]


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}}, status=status
    )
