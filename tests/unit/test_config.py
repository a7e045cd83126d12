"""Config: the ARCHITECTURE example loads as written, and every problem is reported with its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.loading import QUICKSTART, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

# ARCHITECTURE §4, verbatim: the contract.
ARCHITECTURE_EXAMPLE = """
server: {host: 127.0.0.1, port: 8080, admin_key: ${TIERGATE_ADMIN_KEY}}
state: {backend: memory}            # or {backend: redis, url: redis://127.0.0.1:6379/0}
upstreams:
  - {name: small, base_url: "https://api.openai.com/v1", api_key: ${OPENAI_API_KEY}, model: gpt-4o-mini,
     price: {input_per_mtok: 0.15, output_per_mtok: 0.60}, timeout_s: 30}
  - {name: large, base_url: "https://api.openai.com/v1", api_key: ${OPENAI_API_KEY}, model: gpt-4o,
     price: {input_per_mtok: 2.50, output_per_mtok: 10.00}}
agents:
  - id: support-bot
    api_key: ${SUPPORT_BOT_KEY}          # or key_sha256: <hex>, never logged
    budget: {tokens_per_minute: 20000, tokens_per_day: 500000, usd_per_month: 50,
             requests_per_minute: 600, on_exhausted: reject}   # or: downgrade
    routes: [ticket-triage, auto]        # what this agent may call
routes:
  - name: ticket-triage                  # agents call it as model="ticket-triage"
    rules:
      - {when: {last_user_matches: "(?i)reset (my )?password"}, answer: account_access}
    classifier: {model: models/ticket-triage.joblib, min_confidence: 0.7}
    llm: [small, large]
    output_schema: {type: object, properties: {category: {type: string}}, required: [category]}
  - name: auto                           # complexity-routed general traffic
    llm: [small, large]
    complexity: {large_above: 0.6}
cache: {backend: memory, ttl_s: 600, max_entries: 10000}   # or {backend: redis, ...} or {backend: none}
"""
ENV = {"TIERGATE_ADMIN_KEY": "admin-secret", "OPENAI_API_KEY": "sk-upstream", "SUPPORT_BOT_KEY": "sk-bot"}


def test_the_architecture_example_loads_as_written() -> None:
    config = parse_config(ARCHITECTURE_EXAMPLE, ENV)
    assert [u.name for u in config.upstreams] == ["small", "large"]
    assert config.upstreams[0].api_key is not None
    assert config.upstreams[0].api_key.get_secret_value() == "sk-upstream"
    assert config.agents[0].budget.usd_per_month == 50
    assert config.route("ticket-triage").classifier.min_confidence == 0.7  # type: ignore[union-attr]
    assert config.route("auto").complexity.large_above == 0.6  # type: ignore[union-attr]


def test_the_example_with_a_cache_switched_off_loads() -> None:
    text = ARCHITECTURE_EXAMPLE.replace(
        "{backend: memory, ttl_s: 600, max_entries: 10000}", "{backend: none}"
    )
    assert parse_config(text, ENV).cache.backend == "none"


def test_unset_environment_variables_are_reported_with_their_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(ARCHITECTURE_EXAMPLE, {"TIERGATE_ADMIN_KEY": "a"})
    problems = "\n".join(info.value.problems)
    assert "upstreams[0].api_key: environment variable OPENAI_API_KEY is not set" in problems
    assert "agents[0].api_key: environment variable SUPPORT_BOT_KEY is not set" in problems


def test_env_defaults_apply_when_the_variable_is_unset() -> None:
    agents = "agents: [{id: a, api_key: sk-a}]\n"
    config = parse_config(agents + "server: {port: '${PORT:-9090}'}", {})
    assert config.server.port == 9090
    assert parse_config(agents + "server: {port: '${PORT:-9090}'}", {"PORT": "7070"}).server.port == 7070


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    text = """
upstreams:
  - {name: small, base_url: "ftp://x", model: m, unknown_field: 1}
agents:
  - {id: a, api_key: k, routes: [nowhere]}
routes:
  - {name: r, llm: [missing]}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    problems = info.value.problems
    assert any(p.startswith("upstreams[0].base_url:") for p in problems)
    assert any(p.startswith("upstreams[0].unknown_field:") for p in problems)


def test_references_to_unknown_upstreams_and_routes_are_problems() -> None:
    text = """
upstreams: [{name: small, base_url: "http://127.0.0.1:1/v1", model: m}]
agents: [{id: a, api_key: k, routes: [nowhere]}, {id: b, api_key: k}]
routes:
  - {name: r, llm: [small, missing]}
  - {name: bad-template, rules: [{when: {last_user_matches: "(?P<x>a)"}, answer: "{y}"}]}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    problems = "\n".join(info.value.problems)
    assert "routes[0].llm[1]: unknown upstream 'missing'" in problems
    assert "agents[0].routes[0]: unknown route or upstream 'nowhere'" in problems
    assert "agents[1]: same key as agents[0]" in problems
    assert "routes[1].rules:" in problems


def test_embedding_upstreams_must_exist_and_speak_an_api_that_has_embeddings() -> None:
    text = """
upstreams: [{name: claude, base_url: "http://127.0.0.1:1/v1", model: m, api: anthropic}]
agents: [{id: a, api_key: k}]
routes: [{name: vectors, embeddings: [claude, missing]}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    problems = "\n".join(info.value.problems)
    assert "routes[0].embeddings[0]: 'claude' speaks Anthropic's API, which has no embeddings" in problems
    assert "routes[0].embeddings[1]: unknown upstream 'missing'" in problems


def test_budget_lease_settings_are_checked_with_their_path() -> None:
    text = """
state: {backend: redis, url: "redis://127.0.0.1:6379/0", leases: {share: 0.9, ttl_s: 0}}
agents: [{id: a, api_key: k}]
routes: [{name: auto, rules: [{when: {contains_any: [x]}, answer: y}]}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    problems = "\n".join(info.value.problems)
    assert "state.leases.share: Input should be less than or equal to 0.5" in problems
    assert "state.leases.ttl_s: Input should be greater than 0" in problems
    default = parse_config(text.replace("share: 0.9, ttl_s: 0", "enabled: false"), {})
    assert not default.state.leases.enabled and default.state.leases.share == 0.0625


def test_provider_batches_need_an_upstream_that_speaks_chat() -> None:
    text = """
upstreams: [{name: r, base_url: "http://127.0.0.1:1/v1", model: m, api: responses, batch_api: true}]
agents: [{id: a, api_key: k}]
routes: [{name: auto, llm: [r]}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert "upstreams[0]: Value error, batch_api needs api: chat" in info.value.problems[0]


def test_an_agent_needs_exactly_one_kind_of_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("agents: [{id: a}]", {})
    assert "agents[0]" in info.value.problems[0]


def test_the_packaged_quickstart_is_the_examples_quickstart() -> None:
    assert QUICKSTART.read_text() == (ROOT / "examples" / "quickstart.yaml").read_text()
    config = load_config(None, {})
    assert config.agents[0].id == "demo" and config.simulator is not None


def test_check_config_exits_1_and_lists_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [{name: r}]\nserver: {port: -1}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "server.port" in result.stderr and "routes[0]" in result.stderr
    good = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(ROOT / "examples" / "quickstart.yaml")],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr


def test_config_schema_is_json_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config-schema"], capture_output=True, text=True, check=True
    )
    assert '"upstreams"' in result.stdout and '"additionalProperties": false' in result.stdout


def test_secrets_do_not_appear_in_the_config_repr() -> None:
    config = parse_config(ARCHITECTURE_EXAMPLE, ENV)
    assert "sk-bot" not in repr(config) and "sk-upstream" not in repr(config)


def test_checking_a_config_loads_none_of_the_runtime() -> None:
    code = (
        "import sys; from gateway.config.loading import load_config; load_config(None, {}); "
        "heavy = ('aiohttp', 'litestar', 'redis', 'uvicorn', 'numpy', 'tiktoken', 'gateway.runtime'); "
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_yaml_error_says_where_without_quoting_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("agents:\n  - id: a\n    api_key: sk-do-not-print-me: x\n", {})
    [problem] = info.value.problems
    assert "line 3" in problem and "sk-do-not-print-me" not in problem


def test_a_config_without_agents_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("", {})
    assert any(p.startswith("agents:") for p in info.value.problems)


def test_an_audit_names_a_known_reference_and_tightens_only_a_classifier() -> None:
    config = """
upstreams: [{name: small, base_url: "http://127.0.0.1:1/v1", model: m}]
agents: [{id: a, api_key: sk-a}]
routes:
  - {name: r, llm: [small], audit: {reference: huge, on_breach: tighten}}
store: {url: "ftp://somewhere"}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(config, {})
    problems = " | ".join(info.value.problems)
    assert "store.url" in problems
    with pytest.raises(ConfigError) as info:
        parse_config(config.replace('store: {url: "ftp://somewhere"}', ""), {})
    assert info.value.problems == [
        "routes[0].audit.reference: unknown upstream 'huge'",
        "routes[0].audit.on_breach: tighten needs a classifier on the route",
    ]


def test_approval_policies_need_the_store_and_name_known_routes() -> None:
    text = """
agents: [{id: a, api_key: k, approval: {nowhere: {when: [{confidence_below: 0.5}]}}}]
routes:
  - {name: r, rules: [{when: {contains_any: [x]}, answer: y}], approval: {when: [{metadata: {impact: high}}]}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    problems = "\n".join(info.value.problems)
    assert "agents[0].approval.nowhere: unknown route 'nowhere'" in problems
    assert "routes[0].approval: approvals are kept in the decision store; configure store.url" in problems
    for condition, expected in (
        ("{}", "a condition needs tool_call"),
        ("{args: {amount: {gt: 5}}}", "give tool_call too"),
        ("{tool_call: refund, args: {amount: {gt: high}}}", "needs a number"),
        ("{tool_call: refund, args: {amount: {in: 5}}}", "needs a list"),
        ("{tool_call: refund, args: {amount: {about: 5}}}", "about"),
    ):
        bad = f"""
agents: [{{id: a, api_key: k}}]
store: {{url: "sqlite:///x.db"}}
routes:
  - name: r
    rules: [{{when: {{contains_any: [x]}}, answer: y}}]
    approval: {{when: [{condition}]}}
"""
        with pytest.raises(ConfigError) as info:
            parse_config(bad, {})
        assert expected in "\n".join(info.value.problems), condition
