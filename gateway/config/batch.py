"""The Batch API's settings: windows for LLM lines, files, limits."""

from __future__ import annotations

import re
import zoneinfo

from pydantic import Field, field_validator

from gateway.config.base import Model


class BatchConfig(Model):
    """The Batch API: deferred work, run in the background lane."""

    windows: list[str] = Field(
        [],
        description='when lines that need an LLM run, as "HH:MM-HH:MM" (may pass midnight); none: any time'
        " (rules and classifier answers run at once in any case)",
    )
    timezone: str = Field("UTC", description="of the windows (an IANA name)")
    when_idle: bool = Field(
        False, description="outside the windows, also run LLM lines while a worker has no live request"
    )
    files_dir: str | None = Field(
        None, description="where uploaded and written files are kept; default: `files` beside the store"
    )
    max_file_mb: float = Field(100.0, gt=0)
    max_lines: int = Field(50_000, ge=1)
    concurrency: int = Field(4, ge=1, le=256, description="lines run at once by each worker")
    poll_s: float = Field(1.0, gt=0, le=60, description="how often each worker looks for work")

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        for window in windows:
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", window):
                raise ValueError(f'a window is "HH:MM-HH:MM", not {window!r}')
        return windows

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name
