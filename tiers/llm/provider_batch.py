"""An upstream's own Batch API (OpenAI's shape): deferred requests gathered into one provider batch.

Requests handed to `ProviderBatches.complete` within `collect_s` of each other (at most
`max_lines`) go as one JSONL file (`POST /files`, purpose `batch`) and one batch
(`POST /batches`); the batch is polled every `poll_s` until it ends, its output file read, and
each request gets its own answer body, or its own error. The provider's batch price is lower;
the wait is the provider's (up to its completion window).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tiers.errors import UpstreamError

log = logging.getLogger("tiergate.upstream")

ENDPOINT = "/v1/chat/completions"
RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


@dataclass(frozen=True, slots=True)
class ProviderBatchSettings:
    collect_s: float = 2.0  # requests arriving this close together share one provider batch
    max_lines: int = 50_000
    poll_s: float = 30.0
    completion_window: str = "24h"
    request_timeout_s: float = 60.0  # for each call to the Batch API itself (upload, create, poll)


class _BatchView(msgspec.Struct):
    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None


class _ResponseView(msgspec.Struct):
    status_code: int = 0
    body: msgspec.Raw = msgspec.Raw(b"null")


class _ErrorView(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _LineView(msgspec.Struct):
    custom_id: str
    response: _ResponseView | None = None
    error: _ErrorView | None = None


@dataclass(slots=True)
class _Waiting:
    custom_id: str
    body: bytes  # the chat completion request, as the upstream takes it
    answer: asyncio.Future[bytes]


class ProviderBatches:
    """One upstream's provider batches: gathering, submitting, polling, handing answers back."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: Mapping[str, str],
        session: aiohttp.ClientSession,
        settings: ProviderBatchSettings,
    ) -> None:
        self._name = name
        self._base = base_url
        self._headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._session = session
        self._settings = settings
        self._gathering: list[_Waiting] = []
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._ids = (f"{secrets.token_hex(4)}-{n}" for n in itertools.count())
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout_s)

    async def complete(self, body: bytes) -> bytes:
        """The upstream's answer to one chat completion request (its JSON body), once the
        provider batch it joined has run. Raises UpstreamError for a line or batch that failed."""
        waiting = _Waiting(next(self._ids), body, asyncio.get_running_loop().create_future())
        self._gathering.append(waiting)
        if len(self._gathering) >= self._settings.max_lines:
            self._submit()
        elif self._collector is None:
            self._collector = asyncio.ensure_future(self._collect())
        return await waiting.answer

    async def _collect(self) -> None:
        try:
            await asyncio.sleep(self._settings.collect_s)
        finally:
            self._collector = None
        self._submit()

    def _submit(self) -> None:
        lines, self._gathering = self._gathering, []
        lines = [w for w in lines if not w.answer.done()]  # their requests were given up meanwhile
        if not lines:
            return
        task = asyncio.ensure_future(self._run(lines))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, lines: list[_Waiting]) -> None:
        try:
            batch = await self._start(lines)
            log.info("provider batch %s on %r: %d request(s)", batch.id, self._name, len(lines))
            while batch.status in RUNNING:
                await asyncio.sleep(self._settings.poll_s)
                batch = msgspec.json.decode(await self._call("GET", f"/batches/{batch.id}"), type=_BatchView)
            answered = await self._results(batch)
        except UpstreamError as exc:
            self._fail(lines, exc)
            return
        except BaseException:
            self._fail(lines, UpstreamError(f"the provider batch on {self._name!r} was abandoned"))
            raise
        for waiting in lines:
            outcome = answered.get(waiting.custom_id) or UpstreamError(
                f"upstream {self._name!r} batch {batch.id} ended {batch.status} without this request",
                status=502,
            )
            if waiting.answer.done():
                continue
            if isinstance(outcome, UpstreamError):
                waiting.answer.set_exception(outcome)
            else:
                waiting.answer.set_result(outcome)

    async def _start(self, lines: list[_Waiting]) -> _BatchView:
        content = b"".join(
            b'{"custom_id":"%s","method":"POST","url":"%s","body":%s}\n'
            % (w.custom_id.encode(), ENDPOINT.encode(), w.body)
            for w in lines
        )
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename="tiergate-batch.jsonl", content_type="application/jsonl")
        uploaded = msgspec.json.decode(await self._call("POST", "/files", data=form))
        created = {
            "input_file_id": uploaded["id"],
            "endpoint": ENDPOINT,
            "completion_window": self._settings.completion_window,
        }
        return msgspec.json.decode(await self._call("POST", "/batches", json_body=created), type=_BatchView)

    async def _results(self, batch: _BatchView) -> dict[str, bytes | UpstreamError]:
        """Each request's answer body, or its error, from the batch's output and error files."""
        out: dict[str, bytes | UpstreamError] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for raw in (await self._call("GET", f"/files/{file_id}/content")).splitlines():
                if not raw.strip():
                    continue
                line = msgspec.json.decode(raw, type=_LineView)
                response = line.response
                if response is not None and response.status_code == 200:
                    out[line.custom_id] = bytes(response.body)
                else:
                    status = response.status_code if response is not None else 502
                    detail = (
                        line.error.message
                        if line.error is not None
                        else bytes(response.body if response is not None else b"")[:300].decode(
                            "utf-8", "replace"
                        )
                    )
                    out[line.custom_id] = UpstreamError(
                        f"upstream {self._name!r} batch {batch.id} answered {status}: {detail}",
                        status=status or 502,
                    )
        return out

    async def _call(
        self, method: str, path: str, data: Any = None, json_body: dict[str, Any] | None = None
    ) -> bytes:
        headers = dict(self._headers)
        if json_body is not None:
            headers["content-type"] = "application/json"
            data = msgspec.json.encode(json_body)
        try:
            async with self._session.request(
                method, f"{self._base}{path}", data=data, headers=headers, timeout=self._timeout
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(
                f"upstream {self._name!r} Batch API could not be reached ({type(exc).__name__})",
                retryable=True,
            ) from None
        if response.status != 200:
            raise UpstreamError(
                f"upstream {self._name!r} Batch API answered {response.status} to {method} {path}",
                status=response.status,
            )
        return body

    @staticmethod
    def _fail(lines: list[_Waiting], error: UpstreamError) -> None:
        for waiting in lines:
            if not waiting.answer.done():
                waiting.answer.set_exception(error)

    async def close(self) -> None:
        """Abandon what is gathering or running (their requests fail; the runner runs them again)."""
        for task in [*self._running, *([self._collector] if self._collector else [])]:
            task.cancel()
        self._fail(self._gathering, UpstreamError(f"upstream {self._name!r} is closing"))
        self._gathering = []
