"""Settings: grouped frozen dataclasses with defaults, built once at start-up.

``Settings.from_env(environ)`` is the only place that reads the environment;
logic receives a ``Settings`` (or one of its groups), never ``os.environ``.
Secrets are held as :class:`Secret`, whose repr never shows the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: the prefix of every placeholder secret the manifests ship
PLACEHOLDER_PREFIX = "CHANGE-ME"


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _float(value: str | None, default: float) -> float:
    return float(value) if value not in (None, "") else default


def _int(value: str | None, default: int) -> int:
    return int(value) if value not in (None, "") else default


@dataclass(frozen=True)
class HTTPSettings:
    max_body_bytes: int = 1024 * 1024  # 1 MiB; CloudEvents intermediaries must pass 64 KiB
    alertmanager_bearer: Secret = field(default_factory=lambda: Secret(""))
    alertmanager_basic_user: str = ""
    alertmanager_basic_password: Secret = field(default_factory=lambda: Secret(""))
    splunk_token: Secret = field(default_factory=lambda: Secret(""))
    sink: str = ""  # K_SINK: forward adapter output there instead of handling in-process
    sink_timeout: float = 5.0
    dead_letter_store: str = ""  # SQLite file for dead letters; empty: in-memory
    outcome_sink: str = ""  # where an applied outcome goes at once, before verification ends
    outcome_sink_all: bool = False  # also send every other outcome there (denied, skipped...)
    #: waitress: seconds a connection may sit idle or trickle before it is
    #: closed (slow clients must not hold every connection), and how many
    #: connections are served at once (the rest wait in the listen backlog)
    channel_timeout: float = 30.0
    connection_limit: int = 100
    threads: int = 8


@dataclass(frozen=True)
class SenderAuthSettings:
    """Who may POST CloudEvents to ``/`` and ``/dead-letters`` (see README,
    Security). Secure by default: with nothing configured every event is
    refused with 401 unless ``allow_unauthenticated`` says otherwise."""

    #: REMEDIATION_ALLOW_UNAUTHENTICATED_EVENTS=true: accept events from anyone
    #: (a lab without OIDC or a signing key); logged as a warning at start-up
    allow_unauthenticated: bool = False
    #: HMAC-SHA256 key the adapter signs its events with (``remediationsig``)
    hmac_key: Secret = field(default_factory=lambda: Secret(""))
    #: a signed event older than this (seconds) is refused (a replayed capture)
    max_age: float = 3600.0
    #: Knative's OIDC sender identity: the cluster's ServiceAccount issuer
    oidc_issuer: str = ""
    #: the audience the Broker requests for this function (its Service's)
    oidc_audience: str = ""
    #: where the issuer's keys are; empty: the issuer's OIDC discovery document
    oidc_jwks_url: str = ""
    #: accepted ``sub`` claims; a trailing ``*`` matches any suffix; empty: any
    oidc_subjects: tuple[str, ...] = ()
    oidc_ca_cert: str = ""  # CA bundle for the issuer (in-cluster: the SA's ca.crt)
    oidc_token_path: str = ""  # bearer sent when fetching keys (the kube-apiserver wants one)
    oidc_timeout: float = 3.0  # seconds per key fetch
    jwks_cache_seconds: float = 300.0  # keys are re-read after this, or for an unknown kid

    @property
    def configured(self) -> bool:
        return bool(self.hmac_key) or bool(self.oidc_issuer)


@dataclass(frozen=True)
class KubeSettings:
    kubeconfig: str = ""  # empty: in-cluster, then default kubeconfig
    context: str = ""
    snapshot: str = ""  # a cluster snapshot file: offline, plan-only
    timeout: float = 10.0  # seconds per API call
    self_namespace: str = "remediation"  # the project's own namespace (protected)
    reporting_component: str = "inference-remediation"


@dataclass(frozen=True)
class PolicySettings:
    opa_url: str = ""  # empty: embedded Rego engine
    opa_token: Secret = field(default_factory=lambda: Secret(""))
    opa_timeout: float = 1.5
    opa_retries: int = 2
    policy_dir: str = ""  # empty: the policies shipped with the package
    data_file: str = ""  # extra policy data (JSON/YAML) merged over the defaults
    package: str = "remediation"
    rule: str = "decision"


@dataclass(frozen=True)
class VaultSettings:
    addr: str = ""  # empty: no Vault; use ambient credentials (in-cluster SA or kubeconfig)
    auth_mount: str = "kubernetes"
    auth_role: str = "remediator"
    jwt_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    secrets_mount: str = "kubernetes"
    kv_mount: str = "secret"
    clusters_path: str = "remediation/clusters"
    creds_ttl: str = "10m"
    timeout: float = 5.0
    namespace: str = ""  # Vault Enterprise namespace
    ca_cert: str = ""


@dataclass(frozen=True)
class LedgerSettings:
    path: str = ""  # SQLite file; empty: in-memory (one process)
    claim_ttl: float = 300.0  # seconds before a claim whose holder vanished can be retaken
    target_window: float = 300.0  # one action per (target, action) in this window, any incident
    #: finished Lease ledger records older than this are pruned (seconds; longer
    #: than any policy or planner window); 0: never
    retention: float = 86400.0


@dataclass(frozen=True)
class ApprovalSettings:
    ttl: float = 3600.0  # seconds a pending remediation waits for a human, then expires
    secret: Secret = field(default_factory=lambda: Secret(""))  # HMAC key of approval events
    approvers: tuple[str, ...] = ()  # who may approve (events and CLI); empty: anyone signed


@dataclass(frozen=True)
class VerifySettings:
    deadline: float = 120.0  # seconds after applying to see the fix take; 0: do not verify
    interval: float = 2.0  # seconds between checks


@dataclass(frozen=True)
class MCPSettings:
    """The door for AI agents (``remediate mcp``, and ``/mcp`` on the HTTP app)."""

    http: bool = False  # serve streamable HTTP at /mcp on the HTTP app (needs a token)
    token: Secret = field(default_factory=lambda: Secret(""))  # bearer token for /mcp
    disabled_tools: tuple[str, ...] = ()  # tools refused when called (and not listed)
    read_only: bool = False  # refuse every tool that can act (request_remediation)


@dataclass(frozen=True)
class SLOSettings:
    """Error budgets for the policy's ``slo`` input (``guard.slo``); both the
    URL and the file set, or no ``slo`` input at all."""

    prometheus_url: str = ""  # Prometheus' HTTP API (instant queries)
    token: Secret = field(default_factory=lambda: Secret(""))  # bearer, if Prometheus wants one
    file: str = ""  # target -> SLO mapping (YAML/JSON)
    timeout: float = 1.0  # seconds per query
    cache_seconds: float = 30.0  # answers (and failures) kept this long per SLO

    @property
    def configured(self) -> bool:
        return bool(self.prometheus_url and self.file)


@dataclass(frozen=True)
class Settings:
    dry_run: bool = True
    actor: str = "inference-remediation"
    cluster: str = ""  # default cluster name when an event names none
    #: clusters this instance serves (REMEDIATION_CLUSTERS); empty: REMEDIATION_CLUSTER
    #: alone when set, else any (logged at start-up as a warning)
    clusters: tuple[str, ...] = ()
    routes_file: str = ""  # alert/search name -> function mapping (YAML/JSON)
    functions: tuple[str, ...] = ()  # functions this process serves; empty: all
    http: HTTPSettings = field(default_factory=HTTPSettings)
    sender_auth: SenderAuthSettings = field(default_factory=SenderAuthSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    approval: ApprovalSettings = field(default_factory=ApprovalSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    mcp: MCPSettings = field(default_factory=MCPSettings)
    slo: SLOSettings = field(default_factory=SLOSettings)
    #: OTEL_EXPORTER_OTLP_ENDPOINT: export trace spans over OTLP/HTTP there; empty: off
    otlp_endpoint: str = ""

    @property
    def served_clusters(self) -> tuple[str, ...]:
        """The allow-list of cluster names events may name (empty: any)."""
        return self.clusters or ((self.cluster,) if self.cluster else ())

    def placeholder_secrets(self) -> list[str]:
        """Which secrets still hold a shipped placeholder (``CHANGE-ME...``)."""
        secrets = {"ALERTMANAGER_BEARER_TOKEN": self.http.alertmanager_bearer,
                   "ALERTMANAGER_BASIC_PASSWORD": self.http.alertmanager_basic_password,
                   "SPLUNK_WEBHOOK_TOKEN": self.http.splunk_token,
                   "REMEDIATION_APPROVAL_SECRET": self.approval.secret,
                   "REMEDIATION_EVENT_HMAC_KEY": self.sender_auth.hmac_key,
                   "OPA_TOKEN": self.policy.opa_token,
                   "REMEDIATION_MCP_TOKEN": self.mcp.token,
                   "REMEDIATION_PROMETHEUS_TOKEN": self.slo.token}
        return [name for name, secret in secrets.items()
                if secret.reveal().strip().upper().startswith(PLACEHOLDER_PREFIX)]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        g = env.get
        return cls(
            dry_run=_bool(g("REMEDIATION_DRY_RUN"), True),
            otlp_endpoint=g("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
            or g("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            actor=g("REMEDIATION_ACTOR", "inference-remediation"),
            cluster=g("REMEDIATION_CLUSTER", ""),
            clusters=tuple(c.strip() for c in g("REMEDIATION_CLUSTERS", "").split(",")
                           if c.strip()),
            routes_file=g("REMEDIATION_ROUTES_FILE", ""),
            functions=tuple(f.strip() for f in g("REMEDIATION_FUNCTIONS", "").split(",")
                            if f.strip()),
            http=HTTPSettings(
                max_body_bytes=_int(g("REMEDIATION_MAX_BODY_BYTES"), 1024 * 1024),
                alertmanager_bearer=Secret(g("ALERTMANAGER_BEARER_TOKEN", "")),
                alertmanager_basic_user=g("ALERTMANAGER_BASIC_USER", ""),
                alertmanager_basic_password=Secret(g("ALERTMANAGER_BASIC_PASSWORD", "")),
                splunk_token=Secret(g("SPLUNK_WEBHOOK_TOKEN", "")),
                sink=g("K_SINK", ""),
                sink_timeout=_float(g("REMEDIATION_SINK_TIMEOUT"), 5.0),
                dead_letter_store=g("REMEDIATION_DEAD_LETTERS", ""),
                outcome_sink=g("REMEDIATION_OUTCOME_SINK", ""),
                outcome_sink_all=_bool(g("REMEDIATION_OUTCOME_SINK_ALL"), False),
                channel_timeout=_float(g("REMEDIATION_CHANNEL_TIMEOUT"), 30.0),
                connection_limit=_int(g("REMEDIATION_CONNECTION_LIMIT"), 100),
                threads=_int(g("REMEDIATION_THREADS"), 8),
            ),
            sender_auth=SenderAuthSettings(
                allow_unauthenticated=_bool(g("REMEDIATION_ALLOW_UNAUTHENTICATED_EVENTS"),
                                            False),
                hmac_key=Secret(g("REMEDIATION_EVENT_HMAC_KEY", "")),
                max_age=_float(g("REMEDIATION_EVENT_MAX_AGE"), 3600.0),
                oidc_issuer=g("REMEDIATION_OIDC_ISSUER", ""),
                oidc_audience=g("REMEDIATION_OIDC_AUDIENCE", ""),
                oidc_jwks_url=g("REMEDIATION_OIDC_JWKS_URL", ""),
                oidc_subjects=tuple(s.strip() for s in g("REMEDIATION_OIDC_SUBJECTS", "")
                                    .split(",") if s.strip()),
                oidc_ca_cert=g("REMEDIATION_OIDC_CA_CERT", ""),
                oidc_token_path=g("REMEDIATION_OIDC_TOKEN_PATH", ""),
                oidc_timeout=_float(g("REMEDIATION_OIDC_TIMEOUT"), 3.0),
                jwks_cache_seconds=_float(g("REMEDIATION_OIDC_JWKS_CACHE_SECONDS"), 300.0),
            ),
            kube=KubeSettings(
                kubeconfig=g("KUBECONFIG", ""),
                context=g("REMEDIATION_KUBE_CONTEXT", ""),
                snapshot=g("REMEDIATION_SNAPSHOT", ""),
                timeout=_float(g("REMEDIATION_KUBE_TIMEOUT"), 10.0),
                self_namespace=g("REMEDIATION_NAMESPACE", "remediation"),
            ),
            policy=PolicySettings(
                opa_url=g("OPA_URL", ""),
                opa_token=Secret(g("OPA_TOKEN", "")),
                opa_timeout=_float(g("OPA_TIMEOUT"), 1.5),
                opa_retries=_int(g("OPA_RETRIES"), 2),
                policy_dir=g("REMEDIATION_POLICY_DIR", ""),
                data_file=g("REMEDIATION_POLICY_DATA", ""),
            ),
            vault=VaultSettings(
                addr=g("VAULT_ADDR", ""),
                auth_mount=g("VAULT_AUTH_MOUNT", "kubernetes"),
                auth_role=g("VAULT_AUTH_ROLE", "remediator"),
                jwt_path=g(
                    "VAULT_JWT_PATH", "/var/run/secrets/kubernetes.io/serviceaccount/token"
                ),
                secrets_mount=g("VAULT_K8S_SECRETS_MOUNT", "kubernetes"),
                kv_mount=g("VAULT_KV_MOUNT", "secret"),
                clusters_path=g("VAULT_CLUSTERS_PATH", "remediation/clusters"),
                creds_ttl=g("VAULT_CREDS_TTL", "10m"),
                timeout=_float(g("VAULT_TIMEOUT"), 5.0),
                namespace=g("VAULT_NAMESPACE", ""),
                ca_cert=g("VAULT_CACERT", ""),
            ),
            ledger=LedgerSettings(
                path=g("REMEDIATION_LEDGER", ""),
                claim_ttl=_float(g("REMEDIATION_CLAIM_TTL"), 300.0),
                target_window=_float(g("REMEDIATION_TARGET_WINDOW"), 300.0),
                retention=_float(g("REMEDIATION_LEDGER_RETENTION"), 86400.0),
            ),
            approval=ApprovalSettings(
                ttl=_float(g("REMEDIATION_APPROVAL_TTL"), 3600.0),
                secret=Secret(g("REMEDIATION_APPROVAL_SECRET", "")),
                approvers=tuple(a.strip() for a in g("REMEDIATION_APPROVERS", "").split(",")
                                if a.strip()),
            ),
            verify=VerifySettings(
                deadline=_float(g("REMEDIATION_VERIFY_DEADLINE"), 120.0),
                interval=_float(g("REMEDIATION_VERIFY_INTERVAL"), 2.0),
            ),
            mcp=MCPSettings(
                http=_bool(g("REMEDIATION_MCP_HTTP"), False),
                token=Secret(g("REMEDIATION_MCP_TOKEN", "")),
                disabled_tools=tuple(t.strip() for t in
                                     g("REMEDIATION_MCP_DISABLED_TOOLS", "").split(",")
                                     if t.strip()),
                read_only=_bool(g("REMEDIATION_MCP_READ_ONLY"), False),
            ),
            slo=SLOSettings(
                prometheus_url=g("REMEDIATION_PROMETHEUS_URL", ""),
                token=Secret(g("REMEDIATION_PROMETHEUS_TOKEN", "")),
                file=g("REMEDIATION_SLO_FILE", ""),
                timeout=_float(g("REMEDIATION_PROMETHEUS_TIMEOUT"), 1.0),
                cache_seconds=_float(g("REMEDIATION_PROMETHEUS_CACHE_SECONDS"), 30.0),
            ),
        )
