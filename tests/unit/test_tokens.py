"""Token counting offline: tiktoken's cache when the user has one, the bundled cl100k_base otherwise."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext

from budgets.tokens import OFFLINE_ENCODING, TokenCounter, is_cached, load_encoding

BUNDLED = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"


def test_without_a_cache_the_bundled_encoding_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    encoding = load_encoding("gpt-4o-mini")
    assert encoding.name == OFFLINE_ENCODING
    assert TokenCounter(encoding).count("hello world") == 2


def test_a_users_tiktoken_cache_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    shutil.copy(BUNDLED, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert is_cached("cl100k_base")
    encoding = load_encoding("gpt-4")  # gpt-4 uses cl100k_base
    assert encoding.name == "cl100k_base"
    assert TokenCounter(encoding).count("hello world") == 2


def test_chat_messages_are_framed_and_repeated_texts_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter(load_encoding(None))
    one = counter.count_messages([("hello world", None)])
    assert one == 3 + 3 + 2
    calls = []
    original = counter.encoding.encode

    def spy(text: str, **kwargs: object) -> list[int]:
        calls.append(text)
        return original(text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(counter.encoding, "encode", spy)  # the encoding is shared: restore it after
    conversation = [("You are helpful.", None), ("hello world", None), ("and again", "alice")]
    counter.count_messages(conversation)
    counter.count_messages([*conversation, ("a new message", None)])
    assert calls.count("hello world") == 0  # counted before, from the cache
    assert calls.count("a new message") == 1


def test_the_count_cache_is_bounded_by_the_characters_it_keeps() -> None:
    counter = TokenCounter(load_encoding(None), cache_chars=10_000)
    texts = [f"message {i} " + "word " * 200 for i in range(100)]  # about 1,100 characters each
    counts = [counter.count(text) for text in texts]
    kept = counter._counts
    assert kept.currsize <= 10_000 and 0 < len(kept) < len(texts)
    assert [counter.count(text) for text in texts] == counts  # evicted texts are counted again
    huge = "token " * 5_000  # bigger than a quarter of the cache: counted, never kept
    assert counter.count(huge) == len(counter.encoding.encode(huge)) and huge not in kept


def test_the_encoding_works_without_tiktokens_python_copy_of_the_ranks() -> None:
    encoding = load_encoding(None)
    assert encoding._mergeable_ranks == {}  # freed: the Rust tables do the work
    fresh = tiktoken.Encoding(
        name="fresh-cl100k",
        pat_str=encoding._pat_str,
        mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(BUNDLED)),
        special_tokens=encoding._special_tokens,
    )
    texts = ["hello world", "Ünïcode ✓ 😀 tabs\tand\nlines", "def f(x):\n    return x ** 2", "a" * 500, ""]
    for text in texts:
        assert encoding.encode(text) == fresh.encode(text)
        assert encoding.decode(encoding.encode(text)) == text
    assert encoding.encode("<|endoftext|>", allowed_special="all") == fresh.encode(
        "<|endoftext|>", allowed_special="all"
    )
    assert encoding.max_token_value == fresh.max_token_value
    pickled = pickle.dumps(encoding)
    assert len(pickled) < 200  # registered: pickled by name, not by its ranks
    assert pickle.loads(pickled).encode("hello world") == encoding.encode("hello world")
