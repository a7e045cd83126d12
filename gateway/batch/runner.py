"""Running batches: each worker looks for work every `batch.poll_s`, claims pending lines (one
worker per line) and runs them through the request path in the background lane, so they get the
same tiers, budgets, cache, validation and records as live requests. A line that rules or the
classifier answer runs at once; one that needs an LLM waits for a window (`batch.windows`), unless its
route's LLM has a Batch API of its own (`batch_api`): then it goes there at once, gathered with the
others into one provider batch at the provider's batch price. A finished batch gets its output and
error files, once, from whichever worker finishes it.

Claims outlive a crash: lines a worker left running go back to pending after LEASE_S (a worker
renews its claims on every pass, so lines waiting hours in a provider batch stay its own), and a
worker that stops gives its lines back at once, so a gateway restarted mid-batch resumes where it
stopped (lines it had sent in a provider batch are sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from gateway.batch.files import FileKeeper
from gateway.batch.store import BatchRecord, FileRecord, Line, SqlBatchStore
from gateway.batch.windows import in_window
from gateway.config.batch import BatchConfig
from gateway.config.models import AgentConfig
from gateway.errors import GatewayError
from gateway.http.wire import InputLimits, decode_chat_request
from gateway.pipeline.results import ChatResult
from gateway.pipeline.routes import RouteTable
from tiers.base import TierRequest
from tiers.lanes import Lane
from tiers.types import Answer, ChatRequest, Escalate

log = logging.getLogger("tiergate")

LEASE_S = 300.0  # a line claimed longer ago than this by a worker that is gone is run again
FINAL = {"cancelling": "cancelled", "in_progress": "completed", "validating": "completed"}


class Chat(Protocol):
    async def complete(
        self, agent: AgentConfig, request: ChatRequest, *, lane: Lane, deferred: bool
    ) -> ChatResult: ...


class BatchRunner:
    def __init__(
        self,
        store: SqlBatchStore,
        files: FileKeeper,
        chat: Chat,
        routes: RouteTable,
        agents: Mapping[str, AgentConfig],
        config: BatchConfig,
        limits: InputLimits,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._files = files
        self._chat = chat
        self._routes = routes
        self._agents = agents
        self._config = config
        self._limits = limits
        self._busy = busy  # whether this worker has live requests in flight
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._deferred: set[asyncio.Task[None]] = set()  # lines in an upstream's own provider batch

    def nudge(self) -> None:
        """Look for work now (a batch was created or cancelled)."""
        self._wake.set()

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            await self._store.reclaim(time.time() - LEASE_S)
        while True:
            try:
                await self._store.renew(self.owner, time.time())
                while await self.pass_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: the next round tries again
                log.error("batches could not be run: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.poll_s)

    async def stop(self) -> None:
        """Give this worker's claimed lines back, for the next worker (or start) to run."""
        for task in list(self._deferred):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._store.reclaim(0.0, owner=self.owner)

    async def pass_once(self) -> bool:
        """One look at every active batch; whether any line ran (so look again at once)."""
        ran = False
        for batch in await self._store.active():
            ran = await self._advance(batch) or ran
        return ran

    async def _advance(self, batch: BatchRecord) -> bool:
        now = time.time()
        if batch.status == "validating":
            stamps = {**batch.stamps, "in_progress_at": now}
            await self._store.update_batch(batch.id, "validating", status="in_progress", stamps=stamps)
            batch = msgspec.structs.replace(batch, status="in_progress", stamps=stamps)
        if batch.status == "cancelling":
            await self._store.fail_open(batch.id, "batch_cancelled", "the batch was cancelled")
        elif now >= batch.expires_at:
            await self._store.fail_open(batch.id, "batch_expired", "the batch expired before this line ran")
            return await self._finish_if_done(batch, "expired")
        ran = False
        if batch.status == "in_progress":
            ran = await self._run_lines(batch, self._may_call_llms(now))
        await self._finish_if_done(batch, FINAL.get(batch.status, "completed"))
        return ran

    def _may_call_llms(self, now: float) -> bool:
        """Inside a window; or, with `when_idle`, while no live request is in flight here."""
        if in_window(now, self._config.windows, self._config.timezone):
            return True
        return self._config.when_idle and not self._busy()

    async def _run_lines(self, batch: BatchRecord, window_open: bool) -> bool:
        """Inside a window, a page of the lines to run (the next pass takes the next); outside
        one, every pending line once, so those that rules or the classifier answer run now and
        those that need an LLM wait for the window without being looked at again."""
        gate = asyncio.Semaphore(self._config.concurrency)
        ran: list[bool] = []

        async def one(line: Line) -> None:
            async with gate:
                if await self._store.claim(line, self.owner, time.time()):
                    ran.append(await self._run(batch, line, window_open))

        after = -1
        while True:
            page = await self._store.pending(batch.id, self._config.concurrency * 4, after, window_open)
            if not page:
                break
            await asyncio.gather(*(one(line) for line in page))
            if window_open:
                break
            after = page[-1].line
        return any(ran)

    async def _run(self, batch: BatchRecord, line: Line, window_open: bool) -> bool:
        """Run one claimed line; False when it goes back to wait for a window."""
        agent = self._agents.get(batch.agent)
        if agent is None or line.body is None:
            error = {"code": "agent_not_found", "message": f"no agent {batch.agent!r} in the config"}
            await self._store.finish(line, self.owner, "failed", error=error)
            return True
        try:
            request = decode_chat_request(line.body.encode(), self._limits)
        except GatewayError as exc:
            await self._store.finish(
                line, self.owner, "failed", error={"code": exc.code, "message": exc.message}
            )
            return True
        request = msgspec.structs.replace(request, stream=False, stream_options=None)
        if self._deferrable(agent, request):  # to the upstream's own Batch API, without a window
            task = asyncio.ensure_future(self._complete(agent, request, line))
            self._deferred.add(task)
            task.add_done_callback(self._deferred.discard)
            return True
        if not window_open and not await self._answered_free(agent, request):
            await self._store.wait(line, self.owner)
            return False
        await self._complete(agent, request, line)
        return True

    def _deferrable(self, agent: AgentConfig, request: ChatRequest) -> bool:
        """Whether the line's route sends what its cheap tiers leave to an upstream with a Batch
        API of its own. It runs now, not held by the worker's concurrency: the provider runs it
        (and every line sent with it) later, at its batch price."""
        try:
            return self._routes.resolve(agent, request.model).deferrable
        except GatewayError:
            return False

    async def _complete(self, agent: AgentConfig, request: ChatRequest, line: Line) -> None:
        """Run a claimed line through the request path and keep its response (or error)."""
        try:
            result = await self._chat.complete(agent, request, lane="background", deferred=True)
        except GatewayError as exc:
            response = {
                "status_code": exc.status,
                "request_id": None,
                "body": msgspec.json.decode(exc.body()),
            }
            await self._store.finish(line, self.owner, "failed", result=response)
            return
        response = {
            "status_code": result.status,
            "request_id": result.headers.get("x-tiergate-decision-id"),
            "body": msgspec.json.decode(result.body or b"{}"),
        }
        await self._store.finish(line, self.owner, "done", result=response)

    async def _answered_free(self, agent: AgentConfig, request: ChatRequest) -> bool:
        """Whether a tier that costs nothing (rules, classifier) settles the line: it may run now."""
        try:
            route = self._routes.resolve(agent, request.model)
        except GatewayError:
            return True  # the request path says what is wrong with it, now
        asked = TierRequest(chat=request, agent=agent.id, prompt_tokens=lambda: 0, lane="background")
        for tier in route.free_tiers:
            decided = await tier.decide(asked)
            if isinstance(decided, Answer) or (isinstance(decided, Escalate) and decided.final):
                return True
        return False

    async def _finish_if_done(self, batch: BatchRecord, final: str) -> bool:
        counts = await self._store.counts(batch.id)
        if counts.open:
            return False
        # one worker writes the files: the one that moves the batch to finalizing
        if not await self._store.update_batch(batch.id, batch.status, status="finalizing"):
            return False
        output: list[bytes] = []
        errors: list[bytes] = []
        for line in await self._store.lines(batch.id):
            entry = {
                "id": f"batch_req_{batch.id.removeprefix('batch_')}_{line.line}",
                "custom_id": line.custom_id,
                "response": None if line.result is None else msgspec.json.decode(line.result),
                "error": None if line.error is None else msgspec.json.decode(line.error),
            }
            (output if line.status == "done" else errors).append(msgspec.json.encode(entry))
        now = time.time()
        fields: dict[str, Any] = {"status": final, "stamps": {**batch.stamps, f"{final}_at": now}}
        for key, lines, purpose in (
            ("output_file_id", output, "batch_output"),
            ("error_file_id", errors, "batch_output"),
        ):
            if lines:
                file_id = FileKeeper.new_id()
                content = b"\n".join(lines) + b"\n"
                self._files.write(file_id, content)
                await self._store.add_file(
                    FileRecord(
                        id=file_id,
                        time=now,
                        agent=batch.agent,
                        purpose=purpose,
                        filename=f"{batch.id}_{key.removesuffix('_file_id')}.jsonl",
                        bytes=len(content),
                    )
                )
                fields[key] = file_id
        await self._store.update_batch(batch.id, "finalizing", **fields)
        log.info("batch %s %s: %d done, %d failed", batch.id, final, counts.done, counts.failed)
        return True
