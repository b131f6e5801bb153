"""Settings: grouped frozen dataclasses with defaults, built once at start-up.

``Settings.from_env(environ)`` is the only place that reads the environment;
logic receives a ``Settings`` (or one of its groups), never ``os.environ``.
Secrets are held as :class:`Secret`, whose repr never shows the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
class Settings:
    dry_run: bool = True
    actor: str = "inference-remediation"
    cluster: str = ""  # default cluster name when an event names none
    routes_file: str = ""  # alert/search name -> function mapping (YAML/JSON)
    functions: tuple[str, ...] = ()  # functions this process serves; empty: all
    http: HTTPSettings = field(default_factory=HTTPSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    approval: ApprovalSettings = field(default_factory=ApprovalSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        g = env.get
        return cls(
            dry_run=_bool(g("REMEDIATION_DRY_RUN"), True),
            actor=g("REMEDIATION_ACTOR", "inference-remediation"),
            cluster=g("REMEDIATION_CLUSTER", ""),
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
        )
