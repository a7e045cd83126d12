"""Reading a YAML config: `${ENV}` expansion, validation, and every problem reported with its path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.auth import key_digest
from gateway.config.models import GatewayConfig
from gateway.config.rules import rule_specs
from tiers.rules import RuleError, RulesTier

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLACEHOLDER = re.compile(r"__tiergate_env_\d+__")
QUICKSTART = Path(__file__).with_name("quickstart.yaml")


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one `path: message` line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


def _path_str(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def protect_env_refs(text: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """Swap each `${VAR}` / `${VAR:-default}` for a plain placeholder before YAML parsing, so a
    reference works anywhere a scalar may stand (even unquoted inside a `{...}` flow mapping) and
    a value can never be read as YAML syntax."""
    refs: dict[str, tuple[str, str | None]] = {}

    def placeholder(match: re.Match[str]) -> str:
        token = f"__tiergate_env_{len(refs)}__"
        refs[token] = (match.group(1), match.group(2))
        return token

    return _ENV_REF.sub(placeholder, text), refs


def expand_env(
    node: Any,
    refs: Mapping[str, tuple[str, str | None]],
    env: Mapping[str, str],
    problems: list[str],
    path: tuple[Any, ...] = (),
) -> Any:
    """Put each reference's value in place; unset variables without a default are problems."""
    if isinstance(node, dict):
        return {k: expand_env(v, refs, env, problems, (*path, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, refs, env, problems, (*path, i)) for i, v in enumerate(node)]
    if isinstance(node, str) and "__tiergate_env_" in node:

        def substitute(match: re.Match[str]) -> str:
            name, default = refs[match.group(0)]
            if env.get(name):
                return env[name]
            if default is not None:
                return default
            problems.append(f"{_path_str(path)}: environment variable {name} is not set")
            return ""

        return _PLACEHOLDER.sub(substitute, node)
    return node


def _route_problems(config: GatewayConfig, upstream_names: set[str]) -> list[str]:
    """What each route refers to: its upstreams, its audit's reference, its rules' targets."""
    problems: list[str] = []
    anthropic = {u.name for u in config.upstreams if u.api == "anthropic"}
    for i, route in enumerate(config.routes):
        for j, name in enumerate(route.llm):
            if name not in upstream_names:
                problems.append(f"routes[{i}].llm[{j}]: unknown upstream {name!r}")
        for j, name in enumerate(route.embeddings):
            if name not in upstream_names:
                problems.append(f"routes[{i}].embeddings[{j}]: unknown upstream {name!r}")
            elif name in anthropic:
                problems.append(
                    f"routes[{i}].embeddings[{j}]: {name!r} speaks Anthropic's API, which has no embeddings"
                )
        if route.audit is not None and route.audit.reference not in upstream_names:
            problems.append(f"routes[{i}].audit.reference: unknown upstream {route.audit.reference!r}")
        if route.audit is not None and route.audit.on_breach == "tighten" and route.classifier is None:
            problems.append(f"routes[{i}].audit.on_breach: tighten needs a classifier on the route")
        tiers = {"rules", "classifier", *route.llm} | {f"llm:{n}" for n in route.llm}
        for j, rule in enumerate(route.rules):
            if rule.escalate_to is not None and rule.escalate_to not in tiers:
                problems.append(
                    f"routes[{i}].rules[{j}].escalate_to: {rule.escalate_to!r} is not a tier of this route"
                )
        try:
            RulesTier(rule_specs(route))
        except RuleError as exc:
            problems.append(f"routes[{i}].rules: {exc}")
    return problems


def _approval_problems(config: GatewayConfig, route_names: set[str]) -> list[str]:
    """Approvals live in the decision store, and an agent's policies name routes."""
    problems: list[str] = []
    asks = [f"routes[{i}].approval" for i, r in enumerate(config.routes) if r.approval is not None]
    for i, agent in enumerate(config.agents):
        for name, policy in agent.approval.items():
            if name != "*" and name not in route_names:
                problems.append(f"agents[{i}].approval.{name}: unknown route {name!r}")
            if policy is not None:
                asks.append(f"agents[{i}].approval.{name}")
    if asks and config.store is None:
        problems.append(f"{asks[0]}: approvals are kept in the decision store; configure store.url")
    return problems


def _cross_check(config: GatewayConfig) -> list[str]:
    """Problems no single model can see: names that must be unique or must refer to something."""
    problems: list[str] = []
    named = (
        ("upstream", [u.name for u in config.upstreams]),
        ("route", [r.name for r in config.routes]),
        ("agent", [a.id for a in config.agents]),
        ("team", [t.id for t in config.teams]),
    )
    for kind, names in named:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(f"{kind}s[{i}]: duplicate {kind} name {name!r}")
            seen.add(name)
    upstream_names = {u.name for u in config.upstreams}
    route_names = {r.name for r in config.routes}
    clash = upstream_names & route_names
    for name in sorted(clash):
        problems.append(f"routes: route {name!r} has the name of an upstream; model names must be unique")
    problems += _route_problems(config, upstream_names)
    problems += _approval_problems(config, route_names)
    keys: dict[str, int] = {}
    team_names = {t.id for t in config.teams}
    for i, agent in enumerate(config.agents):
        if agent.team is not None and agent.team not in team_names:
            problems.append(f"agents[{i}].team: unknown team {agent.team!r}")
        for j, name in enumerate(agent.routes):
            if name != "*" and name not in route_names and name not in upstream_names:
                problems.append(f"agents[{i}].routes[{j}]: unknown route or upstream {name!r}")
        digest = (
            key_digest(agent.api_key.get_secret_value()).hex()
            if agent.api_key is not None
            else (agent.key_sha256 or "").lower()
        )
        if digest in keys:
            problems.append(f"agents[{i}]: same key as agents[{keys[digest]}]; every agent needs its own key")
        keys[digest] = i
    admin = config.server.admin_key
    if admin is not None and key_digest(admin.get_secret_value()).hex() in keys:
        problems.append("server.admin_key: the admin key must differ from every agent key")
    if not config.agents:
        problems.append("agents: no agent is configured, so every request would be refused")
    if config.cache.backend == "redis" and not (config.cache.url or config.state.url):
        problems.append("cache.url: the redis cache needs a url (or state.url)")
    return problems


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what the YAML error is, without quoting the file: the line may hold a key."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return "(YAML) the file is not valid YAML"
    parts = []
    for what, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if what:
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            parts.append(f"{what}{where}")
    return "(YAML) " + ("; ".join(parts) or "the file is not valid YAML")


def parse_config(text: str, env: Mapping[str, str], source: str = "<config>") -> GatewayConfig:
    protected, refs = protect_env_refs(text)
    try:
        raw = yaml.safe_load(protected)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [yaml_problem(exc)]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections"])
    problems: list[str] = []
    expanded = expand_env(raw, refs, env, problems)
    try:
        config = GatewayConfig.model_validate(expanded)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            problems.append(f"{_path_str(tuple(error['loc']))}: {error['msg']}")
        raise ConfigError(source, problems) from None
    problems.extend(_cross_check(config))
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: str | Path | None, env: Mapping[str, str]) -> GatewayConfig:
    """Load a config file; None loads the built-in quickstart."""
    file = Path(path) if path is not None else QUICKSTART
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [f"(file) cannot read: {exc.strerror}"]) from None
    return parse_config(text, env, str(file))
