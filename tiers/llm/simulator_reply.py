"""One simulated answer, encoded as a whole chat completion or as the chunks of its stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tiers.types import ChatRequest, Usage


@dataclass(frozen=True, slots=True)
class Reply:
    """One simulated answer, encoded as a whole completion or as stream chunks."""

    request: ChatRequest
    text: str
    calls: list[dict[str, Any]]
    finish: str
    usage: Usage
    ident: str
    created: int
    fault: str

    def completion(self) -> dict[str, Any]:
        message = {
            "role": "assistant",
            "content": self.text or None,
            "refusal": None,
            **({"tool_calls": self.calls} if self.calls else {}),
        }
        body: dict[str, Any] = {
            "id": self.ident,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish, "logprobs": None}],
        }
        if self.fault != "no-usage":
            body["usage"] = msgspec.to_builtins(self.usage)
        return body

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + msgspec.json.encode(payload) + b"\n\n"

    def chunk(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    def usage_chunk(self) -> bytes:
        return self._event([], usage=msgspec.to_builtins(self.usage))

    def opening(self) -> list[bytes]:
        """The stream's first chunks: the role, then each tool call and its arguments in two pieces."""
        chunks = [self.chunk({"role": "assistant", "content": ""}, None)]
        for index, call in enumerate(self.calls):
            opening = {
                **call,
                "index": index,
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            chunks.append(self.chunk({"tool_calls": [opening]}, None))
            arguments = call["function"]["arguments"]
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                chunks.append(
                    self.chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
                )
        return chunks

    def pieces(self) -> list[str]:
        """The text as the stream sends it, a word at a time."""
        pieces = [w + " " for w in self.text.split(" ")] if self.text or not self.calls else []
        if pieces:
            pieces[-1] = pieces[-1].rstrip(" ")
        return pieces

    def frames(self) -> list[bytes]:
        """The whole stream, faults aside, with its usage chunk."""
        return [
            *self.opening(),
            *(self.chunk({"content": piece}, None) for piece in self.pieces()),
            self.chunk({}, self.finish),
            self.usage_chunk(),
            b"data: [DONE]\n\n",
        ]
