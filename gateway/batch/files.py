"""The contents of batch files, kept in a folder (their records are in the store)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.store.engine import sqlite_path


def files_directory(configured: str | None, store_url: str) -> Path:
    if configured:
        return Path(configured)
    path = sqlite_path(store_url)
    return path.parent / "files" if path is not None else Path(".tiergate/files")


class FileKeeper:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def new_id() -> str:
        return "file-" + secrets.token_hex(12)

    def write(self, file_id: str, content: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / (file_id + ".tmp")
        temporary.write_bytes(content)
        os.replace(temporary, self.directory / file_id)

    def read(self, file_id: str) -> bytes:
        return (self.directory / file_id).read_bytes()
