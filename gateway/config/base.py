"""What every config model shares: strict (unknown keys are errors) and frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
