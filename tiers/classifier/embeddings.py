"""Static word-piece embeddings: a text's vector as the normalised sum of its tokens' vectors.

An optional second view of a text for the classifier tier, next to its TF-IDF n-grams: n-grams know
only the words seen in training, while the embedding places paraphrases ("my card has not come",
"still waiting for the card") near each other (its effect on accuracy and coverage:
benchmarks/README.md).

The vectors are WordLlama's `l2_supercat` token embeddings (32,000 Llama-2 word pieces x 256
dimensions, half precision), which the `wordllama` package ships inside its wheel: nothing is
downloaded. Only its two files are read; the package itself is not imported (with its tokenizer
library it would add about 45 MiB to every worker). The weights are mapped from the file, not copied,
so workers on one machine share them. The word pieces come from a small byte-pair encoder over the
tokenizer file's vocabulary and merges, with each word's pieces worked out once and kept.

The WordLlama weights derive from Llama-family models' token embeddings; their terms (the Llama 2
Community License) apply to a deployment that turns this view on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCE = "wordllama-l2-supercat-256"
_WEIGHTS = "weights/l2_supercat_256.safetensors"
_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
_SPACE = "\u2581"  # the word pieces' mark for a word's start


class EmbeddingsError(Exception):
    """Embeddings that cannot be loaded (package missing, files damaged or changed)."""


def _package_dir() -> Path:
    spec = importlib.util.find_spec("wordllama")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingsError(
            f"the {SOURCE} embeddings need the `wordllama` package: pip install 'tiergate[embeddings]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _mapped_weights(path: Path) -> np.ndarray:
    """The embedding matrix of a safetensors file, mapped read-only."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        entry = header["embedding.weight"]
        if entry["dtype"] != "F16" or len(entry["shape"]) != 2:
            raise ValueError(f"expected a 2-d F16 tensor, found {entry['dtype']} {entry['shape']}")
        start, end = entry["data_offsets"]
        rows, dims = entry["shape"]
        if end - start != rows * dims * 2:
            raise ValueError("tensor size does not match its shape")
    except (OSError, KeyError, ValueError, struct.error) as exc:
        raise EmbeddingsError(f"{path}: not readable embeddings ({exc})") from None
    return np.memmap(path, dtype=np.float16, mode="r", offset=8 + size + start, shape=(rows, dims))


class WordPieces:
    """Byte-pair encoding of one word into the tokenizer's pieces (ids), as its vocabulary and
    ranked merges define; characters outside the vocabulary fall back to their UTF-8 bytes.

    The merges are kept as integers, (left id, right id) -> (rank, merged id), packed: about a third
    of the memory of a table of string pairs (61,249 merges)."""

    WORD_CACHE = 20_000  # words kept with their pieces (then forgotten all at once): at most ~4 MiB

    def __init__(self, vocabulary: dict[str, int], merges: list[str] | list[list[str]]) -> None:
        if len(vocabulary) > 1 << 16:
            raise ValueError(f"{len(vocabulary)} pieces: at most {1 << 16} are supported")
        self._merges: dict[int, int] = {}
        for rank, merge in enumerate(merges):  # "left right" or, in newer files, [left, right]
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            ids = vocabulary.get(left), vocabulary.get(right), vocabulary.get(left + right)
            if None in ids:
                raise ValueError(f"merge {merge!r} names pieces outside the vocabulary")
            key = ids[0] << 16 | ids[1]  # type: ignore[operator]
            if key not in self._merges:  # a repeated merge keeps its first (lowest) rank
                self._merges[key] = rank << 16 | ids[2]  # type: ignore[operator]
        # what a word starts from: its characters' pieces, and the byte pieces for the rest
        self._chars = {piece: index for piece, index in vocabulary.items() if len(piece) == 1}
        self._bytes = tuple(vocabulary[f"<0x{byte:02X}>"] for byte in range(256))
        self._words: dict[str, tuple[int, ...]] = {}

    def encode(self, word: str) -> list[int]:
        """The piece ids of `word` (which carries its start mark), merged pair by pair in rank order.
        A character outside the vocabulary is never merged and ends as its bytes' pieces."""
        chars = self._chars
        symbols = [chars.get(c, -1 - i) for i, c in enumerate(word)]  # negative: unknown, by position
        merges = self._merges
        while len(symbols) > 1:
            best = best_pair = -1  # the lowest-ranked mergeable pair: (rank << 16 | merged id), key
            for i in range(len(symbols) - 1):
                left, right = symbols[i], symbols[i + 1]
                if left >= 0 and right >= 0:
                    pair = left << 16 | right
                    found = merges.get(pair)
                    if found is not None and (best < 0 or found < best):
                        best, best_pair = found, pair
            if best < 0:
                break
            merged_id, left, right = best & 0xFFFF, best_pair >> 16, best_pair & 0xFFFF
            out: list[int] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == left and symbols[i + 1] == right:
                    out.append(merged_id)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        ids: list[int] = []
        for symbol in symbols:
            if symbol >= 0:
                ids.append(symbol)
            else:
                ids.extend(self._bytes[byte] for byte in word[-1 - symbol].encode("utf-8"))
        return ids

    def ids(self, word: str) -> tuple[int, ...]:
        found = self._words.get(word)
        if found is None:
            if len(self._words) >= self.WORD_CACHE:
                self._words.clear()
            found = self._words[word] = tuple(self.encode(_SPACE + word))
        return found

    def text_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in text.split():
            ids += self.ids(word)
        return ids


@dataclass(frozen=True)
class StaticEmbeddings:
    """A text's unit vector: its word pieces' vectors summed in single precision, in order, then
    l2-normalised in double precision (as the compiled kernel computes it); all zeros for a text
    with no words. Summing and normalising is the mean's direction: the mean is not needed."""

    pieces: WordPieces
    weights: np.ndarray  # pieces x dims, float16
    sha256: str

    @property
    def dims(self) -> int:
        return int(self.weights.shape[1])

    def embed(self, text: str) -> np.ndarray:
        ids = self.pieces.text_ids(text)
        if not ids:
            return np.zeros(self.dims)
        total = self.weights[ids].sum(axis=0, dtype=np.float32).astype(np.float64)
        norm = np.sqrt(total @ total)
        if norm > 0:
            total /= norm
        return total

    @classmethod
    def load(cls, source: str = SOURCE) -> StaticEmbeddings:
        root = _source_dir(source)
        weights_path, tokenizer_path = root / _WEIGHTS, root / _TOKENIZER
        weights = _mapped_weights(weights_path)
        try:
            with tokenizer_path.open("rb") as handle:
                model = json.load(handle)["model"]
            pieces = WordPieces(model["vocab"], model["merges"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingsError(f"{tokenizer_path}: not a readable tokenizer ({exc})") from None
        return cls(pieces, weights, _file_sha256(weights_path))


def installed_sha256(source: str = SOURCE) -> str:
    """The sha256 of the installed vectors, without loading them (a model file records the one it
    was trained on)."""
    return _file_sha256(_source_dir(source) / _WEIGHTS)


def _source_dir(source: str) -> Path:
    if source != SOURCE:
        raise EmbeddingsError(f"unknown embeddings {source!r}; this tiergate knows {SOURCE!r}")
    return _package_dir()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise EmbeddingsError(f"{path}: not readable ({exc})") from None
    return digest.hexdigest()
