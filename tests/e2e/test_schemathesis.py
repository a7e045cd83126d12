"""Schemathesis against the gateway's own OpenAPI description: thousands of generated requests,
never a server error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, DEMO_KEY, make_config
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.parametrize("key", [DEMO_KEY, ADMIN_KEY], ids=["agent key", "admin key"])
def test_generated_requests_never_get_a_5xx(simulator: tuple[str, Any], key: str) -> None:
    with gateway_server(make_config(simulator[0])) as url:
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{url.removesuffix('/v1')}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "40",
                "--phases",
                "coverage,fuzzing",
                "--request-timeout",
                "10",
                "--seed",
                "1",
                "-H",
                f"Authorization: Bearer {key}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout[-3000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts is not None and int(counts.group(1)) == int(counts.group(2)) > 300
    print(counts.group(0))
