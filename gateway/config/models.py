"""The configuration's typed shape: frozen pydantic models, read once at start-up and passed down."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.approvals import ApprovalPolicy, ApprovalsConfig
from gateway.config.base import NAME_PATTERN, Model
from gateway.config.batch import BatchConfig
from tiers.lanes import Lane


class ServerConfig(Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_key: SecretStr | None = None
    workers: int = Field(1, ge=1, le=64)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(1000, ge=1)
    max_total_chars: int = Field(2_000_000, ge=1)
    shutdown_grace_s: float = Field(30.0, ge=0)
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request headers over this get 431, before they are buffered"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="request headers not complete this long after the connection or the last answer: 408",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request body not complete this long after its headers closes the connection",
    )
    max_connections: int = Field(
        1000, ge=1, description="open connections per worker; beyond them a request gets 503"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    viewer_keys: list[SecretStr] = Field(
        [], description="read-only keys for the operator console: they see everything, decide nothing"
    )
    console_secure_cookie: bool = Field(
        False, description="mark the console's session cookie Secure (behind HTTPS)"
    )
    console_session_h: float = Field(12.0, gt=0, le=24 * 30, description="how long a console login lasts")


class LeaseConfig(Model):
    """Budget leases on Redis: a worker holds a small slice of a busy agent's budget and grants its
    requests from it without a Redis round trip (never more than the limits in all)."""

    enabled: bool = True
    ttl_s: float = Field(0.5, gt=0, le=60, description="how long a lease grants before it is settled")
    share: float = Field(0.0625, gt=0, le=0.5, description="of each limit's room, at most, in one lease")
    min_requests: int = Field(
        4, ge=1, description="an agent's requests to a worker within ttl_s before it leases for it"
    )


class StateConfig(Model):
    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None
    cluster: bool = Field(False, description="url names a node of a Redis Cluster (or use redis+cluster://)")
    on_state_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    timeout_s: float = Field(0.25, gt=0)
    leases: LeaseConfig = LeaseConfig()

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StateConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("state.backend redis needs a url, e.g. redis://127.0.0.1:6379/0")
        return self


class Price(Model):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


class CircuitConfig(Model):
    failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    error_rate: float = Field(0.5, gt=0, le=1, description="error rate over window_s that opens it")
    min_requests: int = Field(20, ge=1, description="requests in the window before the rate counts")
    window_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(10.0, gt=0, description="how long it stays open before a probe")


class UpstreamConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    base_url: str
    model: str
    api_key: SecretStr | None = None
    price: Price = Price()
    timeout_s: float = Field(30.0, gt=0, description="total time for one attempt")
    connect_timeout_s: float = Field(5.0, gt=0)
    first_token_timeout_s: float | None = Field(None, gt=0, description="defaults to timeout_s")
    max_retries: int = Field(2, ge=0, le=10)
    retry_base_s: float = Field(0.1, ge=0)
    retry_max_s: float = Field(2.0, ge=0)
    max_output_tokens: int | None = Field(None, ge=1)
    stream_usage: bool = Field(True, description="ask the upstream for a final usage chunk")
    headers: dict[str, str] = {}
    max_connections: int = Field(256, ge=1)
    max_concurrency: int | None = Field(None, ge=1, description="calls in flight at once (bulkhead)")
    reserve_for_critical: float = Field(
        0.1, ge=0, lt=1, description="share of max_concurrency the background lane may not use"
    )
    queue_timeout_s: float = Field(1.0, ge=0, description="how long a call waits for a place")
    retry_budget: float = Field(0.2, ge=0, le=1, description="retries as a share of recent requests")
    max_repeated_chunks: int = Field(100, ge=2, description="cut off a stream repeating one chunk this often")
    max_answer_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="a whole (non-streamed) answer larger than this fails over"
    )
    circuit: CircuitConfig = CircuitConfig()
    api: Literal["chat", "responses", "anthropic"] = Field(
        "chat",
        description="the API it speaks: chat (OpenAI-compatible /chat/completions, the default),"
        " responses (OpenAI's /responses) or anthropic (Anthropic's /messages, the key sent as"
        " x-api-key); requests are translated into it and its answers back",
    )
    batch_api: bool = Field(
        False,
        description="the upstream has OpenAI's Batch API (/files, /batches): Batch API lines that need"
        " this upstream are sent to it as provider batches, at `batch_price`",
    )
    batch_price: Price | None = Field(
        None, description="the provider's batch price; default: half of `price`"
    )
    batch_collect_s: float = Field(
        2.0, gt=0, le=3600, description="lines arriving this close together share one provider batch"
    )
    batch_poll_s: float = Field(30.0, gt=0, le=3600, description="how often a provider batch is polled")

    def deferred_price(self) -> Price:
        """What a request sent in a provider batch costs."""
        if self.batch_price is not None:
            return self.batch_price
        return Price(
            input_per_mtok=self.price.input_per_mtok / 2, output_per_mtok=self.price.output_per_mtok / 2
        )

    @model_validator(mode="after")
    def _batches_speak_chat(self) -> UpstreamConfig:
        if self.batch_api and self.api != "chat":
            raise ValueError("batch_api needs api: chat (provider batches hold chat completion lines)")
        return self

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("base_url must be an http:// or https:// URL")
        return value.rstrip("/")


class BudgetConfig(Model):
    tokens_per_minute: int | None = Field(None, ge=1)
    tokens_per_hour: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    tokens_per_month: int | None = Field(None, ge=1)
    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)
    requests_per_minute: int | None = Field(None, ge=1)
    on_exhausted: Literal["reject", "downgrade"] = "reject"
    warn_at: float | None = Field(None, gt=0, lt=1)
    default_completion_tokens: int = Field(
        1024, ge=1, description="completion cap reserved when a request names none"
    )
    reserve: Literal["default", "recent"] = Field(
        "default",
        description="the completion reserved (and sent upstream as the cap) when a request names"
        " none: default_completion_tokens, or `recent`: a high percentile of the route's recent"
        " answers (at most default_completion_tokens)",
    )
    recent_percentile: float = Field(0.99, gt=0.5, lt=1, description="with reserve: recent")
    recent_margin: float = Field(1.25, ge=1, le=10, description="with reserve: recent, times the percentile")
    wait_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="how long a request that does not fit only because of requests in flight waits"
        " for them to settle (0: refuse at once)",
    )
    reserve_for_critical: float = Field(
        0.1, ge=0, lt=1, description="share of each token and money limit the background lane may not use"
    )
    max_waiting: int = Field(
        256, ge=0, description="requests of one agent waiting so at once; more are refused"
    )


class LoopConfig(Model):
    max_repeats: int | None = Field(None, ge=1, description="identical requests allowed within window_s")
    window_s: float = Field(60.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="requests allowed per conversation id")
    conversation_header: str = "x-tiergate-conversation-id"
    max_repeated_chunks: int | None = Field(
        None, ge=2, description="cut off a stream repeating one chunk this often (default: the upstream's)"
    )


class AgentConfig(Model):
    id: str = Field(pattern=NAME_PATTERN)
    api_key: SecretStr | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    budget: BudgetConfig = BudgetConfig()
    routes: list[str] = Field(["*"], description="routes and upstreams this agent may call; '*' is all")
    team: str | None = None
    tools: list[str] | None = Field(None, description="the tools this agent may offer; unset: any")
    max_concurrency: int | None = Field(
        256, ge=1, description="this agent's requests in flight at once (null: no limit)"
    )
    queue_timeout_s: float = Field(1.0, ge=0, description="how long an excess request waits for a place")
    loops: LoopConfig = LoopConfig()
    allow_logprobs: bool = True
    allow_logit_bias: bool = True
    approval: dict[str, ApprovalPolicy | None] = Field(
        {}, description="this agent's approval policy per route name ('*': every route), over the route's"
    )
    priority: Lane = Field("normal", description="the lane of this agent's requests that name none")
    max_priority: Lane = Field(
        "critical", description="the highest lane this agent may ask for (x-tiergate-priority)"
    )
    autonomy: Literal["supervised", "standard", "trusted"] = Field(
        "standard",
        description="supervised: every matching answer asks, trust is never earned; trusted: starts trusted",
    )

    @model_validator(mode="after")
    def _one_key(self) -> AgentConfig:
        if (self.api_key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of api_key or key_sha256")
        if self.api_key is not None and not self.api_key.get_secret_value():
            raise ValueError("api_key is empty")
        return self


class TeamConfig(Model):
    id: str = Field(pattern=NAME_PATTERN)
    budget: BudgetConfig = BudgetConfig()


class RuleWhen(Model):
    last_user_matches: str | None = None
    contains_any: list[str] | None = None
    agent: str | list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    min_messages: int | None = Field(None, ge=0)
    max_messages: int | None = Field(None, ge=0)
    has_tools: bool | None = None

    @field_validator("last_user_matches")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


class RuleConfig(Model):
    when: RuleWhen
    answer: str | None = None
    escalate_to: str | None = None
    deny: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> RuleConfig:
        actions = [a for a in (self.answer, self.escalate_to, self.deny) if a is not None]
        if len(actions) != 1:
            raise ValueError("a rule needs exactly one action: answer, escalate_to or deny")
        return self


class ClassifierConfig(Model):
    model: str
    train_from: str | None = Field(
        None,
        description="rows (CSV or JSONL) to train `model` from at start-up when the file does not"
        " exist yet: for small example sets such as the quickstart's; train real models with"
        " `tiergate train`",
    )
    shadow: str | None = Field(
        None,
        description="a candidate model that scores every request too: its decision is recorded"
        " (never served) and /admin/quality compares it with the model in force",
    )
    min_confidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description="answer only at or above this confidence: the model's estimated probability that"
        " its label is right (for models without a confidence model, the best label's probability"
        " minus the runner-up's); default: the threshold calibrated at training",
    )


class ComplexityConfig(Model):
    large_above: float = Field(0.6, ge=0, le=1)
    router_model: str | None = None


class RouteCacheConfig(Model):
    enabled: bool = True
    only_deterministic: bool = True


class AuditConfig(Model):
    """Live precision, measured: a share of the cheap tiers' answers is also asked of a reference
    tier in the background, and what it says (and what feedback says) is compared with them."""

    sample: float = Field(
        0.02, ge=0, le=1, description="share of rules, classifier and smaller-LLM answers audited"
    )
    reference: str = Field(description="the upstream whose answer is taken as right")
    min_precision: float = Field(
        0.975, gt=0, lt=1, description="breached when live precision is surely below"
    )
    on_breach: Literal["tighten", "pause", "alert"] = Field(
        "alert",
        description="tighten: raise the classifier's threshold to what the audits support; pause: send"
        " everything past the cheap tiers; alert: only say so. Undone when the window recovers",
    )
    budget: int = Field(
        200_000, ge=0, description="tokens a day the audits may spend (per worker), charged to no agent"
    )
    window: int = Field(500, ge=10, le=100_000, description="the latest audited answers measured over")
    min_samples: float = Field(30, ge=1, description="weight of evidence needed before a breach is called")
    feedback_weight: float = Field(3.0, ge=1, description="a feedback verdict counts this many audits")
    check_interval_s: float = Field(5.0, gt=0, le=3600, description="how often the window is measured")


class DriftConfig(Model):
    """How a classifier route's live traffic is compared with its model's training baseline."""

    window: int = Field(500, ge=10, le=100_000, description="the latest decisions compared")
    min_decisions: int = Field(100, ge=1, description="scored decisions needed before drift is judged")
    check_interval_s: float = Field(30.0, gt=0, le=3600)


class RouteConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    rules: list[RuleConfig] = []
    classifier: ClassifierConfig | None = None
    llm: list[str] = []
    embeddings: list[str] = Field(
        [],
        description="upstreams that serve POST /v1/embeddings for this model name, tried in order",
    )
    output_schema: dict[str, Any] | None = None
    repair: bool = Field(True, description="show an answer that failed validation back to its LLM once")
    complexity: ComplexityConfig | None = None
    cache: RouteCacheConfig = RouteCacheConfig()
    audit: AuditConfig | None = None
    drift: DriftConfig = DriftConfig()
    approval: ApprovalPolicy | None = None

    @model_validator(mode="after")
    def _has_a_tier(self) -> RouteConfig:
        if not (self.rules or self.classifier or self.llm or self.embeddings):
            raise ValueError("a route needs at least one tier (rules, classifier or llm) or embeddings")
        return self


class CacheConfig(Model):
    backend: Literal["memory", "redis", "none"] = "memory"
    ttl_s: float = Field(600, gt=0)
    max_entries: int = Field(10_000, ge=1)
    url: str | None = None
    scope: Literal["agent", "route", "global"] = "agent"
    wait_s: float = Field(10.0, gt=0, description="how long identical requests wait for one computation")


class RecordsConfig(Model):
    sink: Literal["stdout", "file", "none"] = "none"
    path: str | None = None
    redact: bool = False
    keep_last: int = Field(10_000, ge=0, description="records kept in memory for /admin/decisions")

    @model_validator(mode="after")
    def _file_needs_path(self) -> RecordsConfig:
        if self.sink == "file" and not self.path:
            raise ValueError("records.sink file needs a path")
        return self


class StoreConfig(Model):
    """The durable decision store shared by every worker (and every gateway pointed at it)."""

    url: str = Field(description="sqlite:///PATH (embedded) or postgresql://USER@HOST:PORT/DB (a fleet)")
    retention_days: float = Field(30.0, gt=0, description="decisions older than this are deleted")
    responses_keep_days: float = Field(
        30.0,
        gt=0,
        description="how long a Responses API response is kept (for previous_response_id and"
        " GET /v1/responses/{id})",
    )
    spool_dir: str | None = Field(
        None,
        description="where each worker spools its records before they are shipped (a worker ships"
        " what a dead one left here, so gateways with different stores need different folders);"
        " default: a `spool` folder beside a SQLite file, else .tiergate/spool",
    )
    spool_max_mb: float = Field(
        256.0, gt=0, description="a worker's unshipped records beyond this are dropped (and counted)"
    )
    ship_interval_s: float = Field(0.2, gt=0, le=60, description="how often spooled records are shipped")
    ship_batch: int = Field(2000, ge=1, le=100_000, description="records per insert")
    lookup_wait_s: float = Field(
        1.0,
        ge=0,
        le=30,
        description="how long feedback waits for a decision that another worker has not shipped yet",
    )
    auto_upgrade: bool | None = Field(
        None,
        description="bring the schema up to date at start-up; default: yes for SQLite, no for"
        " PostgreSQL (run `tiergate db upgrade`)",
    )

    @field_validator("url")
    @classmethod
    def _known_engine(cls, url: str) -> str:
        if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            return url
        if re.match(r"^postgres(ql)?(\+\w+)?://", url):
            return url
        raise ValueError("store.url must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB")

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite:")


class SimulatorConfig(Model):
    """Start the built-in simulated upstream beside the gateway (the quickstart does)."""

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    latency_ms: float = Field(0.0, ge=0)
    per_token_ms: float = Field(0.0, ge=0)


class BudgetAlertsConfig(Model):
    webhook_url: str | None = Field(None, description="POSTed one JSON event per soft-limit crossing")
    timeout_s: float = Field(2.0, gt=0)


class TokenizerConfig(Model):
    encoding: str = Field("cl100k_base", description="model or encoding name to count with")


class GatewayConfig(Model):
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    upstreams: list[UpstreamConfig] = []
    agents: list[AgentConfig] = []
    teams: list[TeamConfig] = []
    routes: list[RouteConfig] = []
    cache: CacheConfig = CacheConfig()
    records: RecordsConfig = RecordsConfig()
    store: StoreConfig | None = None
    simulator: SimulatorConfig | None = None
    tokenizer: TokenizerConfig = TokenizerConfig()
    budget_alerts: BudgetAlertsConfig = BudgetAlertsConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    batch: BatchConfig = BatchConfig()

    def upstream(self, name: str) -> UpstreamConfig | None:
        return next((u for u in self.upstreams if u.name == name), None)

    def team(self, name: str) -> TeamConfig | None:
        return next((t for t in self.teams if t.id == name), None)

    def route(self, name: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)
