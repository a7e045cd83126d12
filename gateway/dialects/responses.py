"""Answers in the Responses API's shape: a whole `response` object, or its event stream
(`response.created`, output items and their deltas, `response.completed` with usage), written
from the request path's chat answers (gateway/dialects/chat_view.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import msgspec

from gateway.dialects import chat_view
from gateway.dialects.responses_request import ResponsesRequest
from gateway.pipeline.results import Frames
from tiers.types import Usage


class InputDetails(msgspec.Struct):
    cached_tokens: int = 0


class OutputDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputDetails = msgspec.field(default_factory=InputDetails)
    output_tokens_details: OutputDetails = msgspec.field(default_factory=OutputDetails)

    @classmethod
    def of(cls, usage: Usage) -> ResponseUsage:
        return cls(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


class OutputText(msgspec.Struct):
    text: str
    type: str = "output_text"
    annotations: list[Any] = []
    logprobs: list[Any] = []


class OutputMessage(msgspec.Struct):
    id: str
    content: list[OutputText]
    status: str = "completed"
    type: str = "message"
    role: str = "assistant"


class FunctionCallItem(msgspec.Struct):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str = "completed"
    type: str = "function_call"


OutputItem = OutputMessage | FunctionCallItem


class ResponseObject(msgspec.Struct):
    id: str
    created_at: int
    model: str
    status: str
    output: list[OutputItem]
    usage: ResponseUsage | None
    instructions: str | None
    max_output_tokens: int | None
    previous_response_id: str | None
    temperature: float | None
    top_p: float | None
    tool_choice: Any
    tools: list[Any]
    parallel_tool_calls: bool
    text: dict[str, Any]
    metadata: dict[str, str]
    store: bool
    user: str | None
    object: str = "response"
    error: Any = None
    incomplete_details: dict[str, str] | None = None
    truncation: str = "disabled"
    reasoning: dict[str, Any] = msgspec.field(default_factory=lambda: {"effort": None, "summary": None})
    background: bool = False


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseWriter:
    """The response objects of one request, by its decision id."""

    def __init__(self, request: ResponsesRequest, decision_id: str, stored: bool) -> None:
        self.request = request
        self.id = f"resp_{decision_id}"
        self._decision = decision_id
        self._created = int(time.time())
        self._stored = stored

    def message_id(self) -> str:
        return f"msg_{self._decision}"

    def call_id(self, index: int) -> str:
        return f"fc_{self._decision}_{index}"

    def response(
        self,
        output: list[OutputItem],
        usage: Usage | None,
        finish_reason: str | None,
        status: str | None = None,
        error: dict[str, str] | None = None,
    ) -> ResponseObject:
        request = self.request
        incomplete = _INCOMPLETE.get(finish_reason or "")
        text = (
            {"format": {"type": "text"}}
            if request.text is None or request.text.format is None
            else {"format": msgspec.to_builtins(request.text.format)}
        )
        return ResponseObject(
            id=self.id,
            created_at=self._created,
            model=request.model,
            status=status or ("incomplete" if incomplete else "completed"),
            output=output,
            usage=None if usage is None else ResponseUsage.of(usage),
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            previous_response_id=request.previous_response_id,
            temperature=request.temperature,
            top_p=request.top_p,
            tool_choice=request.tool_choice or "auto",
            tools=msgspec.to_builtins(request.tools or []),
            parallel_tool_calls=request.parallel_tool_calls is not False,
            text=text,
            metadata=request.metadata or {},
            store=self._stored,
            user=request.user,
            error=error,
            incomplete_details=None if incomplete is None or status else {"reason": incomplete},
        )

    def whole(self, completion: chat_view.Completion) -> ResponseObject:
        output: list[OutputItem] = []
        if completion.text or not completion.tool_calls:
            output.append(OutputMessage(self.message_id(), [OutputText(completion.text)]))
        output += [
            FunctionCallItem(self.call_id(i), call.id, call.name, call.arguments)
            for i, call in enumerate(completion.tool_calls)
        ]
        return self.response(output, completion.usage, completion.finish_reason)


def _event(kind: str, fields: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode({"type": kind, **fields}) + b"\n\n"


class EventWriter:
    """A chat stream's events as the Responses API's: each output item is opened when its first
    delta arrives and closed at the end; `response.completed` carries the whole response."""

    def __init__(self, writer: ResponseWriter, on_done: Callable[[ResponseObject], Awaitable[None]]) -> None:
        self._writer = writer
        self._on_done = on_done
        self._sequence = itertools.count()
        self._output: list[OutputItem] = []
        self._text: list[str] = []
        self._message: OutputMessage | None = None
        self._calls: dict[int, tuple[FunctionCallItem, list[str]]] = {}  # chat index -> item, arguments

    def emit(self, kind: str, **fields: Any) -> bytes:
        return _event(kind, {**fields, "sequence_number": next(self._sequence)})

    async def write(self, frames: Frames) -> AsyncGenerator[bytes, None]:
        writer = self._writer
        snapshot = writer.response([], None, None, status="in_progress")
        yield self.emit("response.created", response=snapshot)
        yield self.emit("response.in_progress", response=snapshot)
        usage: Usage | None = None
        finish: str | None = None
        async for event in chat_view.events(frames):
            if isinstance(event, chat_view.TextDelta):
                for chunk in self._text_delta(event.text):
                    yield chunk
            elif isinstance(event, chat_view.ToolStart):
                yield self._tool_start(event)
            elif isinstance(event, chat_view.ToolArguments):
                for chunk in self._tool_arguments(event):
                    yield chunk
            elif isinstance(event, chat_view.Finished):
                finish = event.reason
            elif isinstance(event, chat_view.Used):
                usage = event.usage
            else:  # Failed: the stream ends with an error event the SDK raises
                error = {"code": event.code, "message": event.message}
                yield self.emit("error", code=event.code, message=event.message, param=None, error=error)
                failed = writer.response(self._output, usage, None, status="failed", error=error)
                yield self.emit("response.failed", response=failed)
                return
        for chunk in self._close_items():
            yield chunk
        done = writer.response(self._output, usage, finish)
        await self._on_done(done)  # kept before the client hears it is complete
        yield self.emit("response.completed", response=done)

    def _text_delta(self, text: str) -> list[bytes]:
        chunks = []
        if self._message is None:
            self._message = OutputMessage(self._writer.message_id(), [], status="in_progress")
            self._output.append(self._message)
            index = len(self._output) - 1
            chunks.append(self.emit("response.output_item.added", output_index=index, item=self._message))
            chunks.append(
                self.emit(
                    "response.content_part.added",
                    item_id=self._message.id,
                    output_index=index,
                    content_index=0,
                    part=OutputText(""),
                )
            )
        self._text.append(text)
        chunks.append(
            self.emit(
                "response.output_text.delta",
                item_id=self._message.id,
                output_index=self._output.index(self._message),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return chunks

    def _tool_start(self, event: chat_view.ToolStart) -> bytes:
        item = FunctionCallItem(
            self._writer.call_id(event.index), event.id, event.name, "", status="in_progress"
        )
        self._calls[event.index] = (item, [])
        self._output.append(item)
        return self.emit("response.output_item.added", output_index=len(self._output) - 1, item=item)

    def _tool_arguments(self, event: chat_view.ToolArguments) -> list[bytes]:
        chunks = []
        if event.index not in self._calls:  # arguments before the call's name: open it unnamed
            chunks.append(self._tool_start(chat_view.ToolStart(event.index, f"call_{event.index}", "")))
        item, arguments = self._calls[event.index]
        arguments.append(event.arguments)
        chunks.append(
            self.emit(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=self._output.index(item),
                delta=event.arguments,
            )
        )
        return chunks

    def _close_items(self) -> list[bytes]:
        chunks = []
        for index, item in enumerate(self._output):
            if isinstance(item, OutputMessage):
                part = OutputText("".join(self._text))
                item.content, item.status = [part], "completed"
                where = {"item_id": item.id, "output_index": index, "content_index": 0}
                chunks.append(self.emit("response.output_text.done", **where, text=part.text, logprobs=[]))
                chunks.append(self.emit("response.content_part.done", **where, part=part))
            else:
                item.arguments = "".join(self._calls[self._call_index(item)][1])
                item.status = "completed"
                chunks.append(
                    self.emit(
                        "response.function_call_arguments.done",
                        item_id=item.id,
                        output_index=index,
                        name=item.name,
                        arguments=item.arguments,
                    )
                )
            chunks.append(self.emit("response.output_item.done", output_index=index, item=item))
        return chunks

    def _call_index(self, item: FunctionCallItem) -> int:
        return next(i for i, (found, _) in self._calls.items() if found is item)
