"""Who is calling: agents found by the sha256 of their key, admin checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.models import AgentConfig
from gateway.errors import Unauthorized


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <agent key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: expected 'Bearer <agent key>'")
    return token


@dataclass(frozen=True, slots=True)
class AgentDirectory:
    """Agents by key digest. Keys are held only as sha256 digests and looked up by digest, so
    timing can reveal at most something about a digest, never about a key."""

    by_digest: dict[bytes, AgentConfig]

    @classmethod
    def of(cls, agents: Iterable[AgentConfig]) -> AgentDirectory:
        table: dict[bytes, AgentConfig] = {}
        for agent in agents:
            if agent.api_key is not None:
                digest = key_digest(agent.api_key.get_secret_value())
            else:
                digest = bytes.fromhex(agent.key_sha256 or "")
            table[digest] = agent
        return cls(table)

    def authenticate(self, authorization: str | None) -> AgentConfig:
        digest = key_digest(bearer_token(authorization))
        agent = self.by_digest.get(digest)
        if agent is None:
            raise Unauthorized("invalid API key")
        return agent


@dataclass(frozen=True, slots=True)
class AdminKey:
    digest: bytes | None

    def check(self, authorization: str | None) -> None:
        if self.digest is None:
            raise Unauthorized("the admin API is disabled: set server.admin_key", code="admin_disabled")
        presented = key_digest(bearer_token(authorization))
        if not hmac.compare_digest(presented, self.digest):
            raise Unauthorized("invalid admin key")
