"""Composition root: build the pipeline's ports from Settings, once.

The only place that chooses implementations (embedded policy or OPA server,
Vault or ambient credentials, live API or snapshot). Client modules are
imported lazily here so a snapshot replay never loads the Kubernetes client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .actions.catalogue import CATALOGUE
from .credentials import AmbientCredentials
from .errors import InvalidInput
from .facts import SnapshotAccess, SnapshotFacts
from .guard.ledger import SQLiteLedger
from .metrics import State
from .model import Outcome
from .pipeline import STATS_WINDOW_SECONDS, Pipeline
from .ports import (
    ClusterAccess,
    CredentialBroker,
    FleetLock,
    Ledger,
    OutcomeSink,
    PolicyEngine,
    SLOSource,
)
from .routing import load_routes
from .settings import PolicySettings, Settings

log = logging.getLogger("remediation.runtime")


def build_credentials(settings: Settings) -> CredentialBroker:
    if settings.vault.addr:
        from .clients.vault import VaultCredentialBroker

        log.info("credentials: Vault at %s (kubernetes auth role %s), per-plan leases",
                 settings.vault.addr, settings.vault.auth_role)
        return VaultCredentialBroker(settings.vault, default_cluster=settings.cluster)
    log.info("credentials: no VAULT_ADDR set; using the ambient identity "
             "(in-cluster service account or kubeconfig)")
    return AmbientCredentials(settings.cluster)


def build_cluster(settings: Settings) -> ClusterAccess:
    if settings.kube.snapshot:
        log.info("cluster: snapshot %s (plan only)", settings.kube.snapshot)
        return SnapshotAccess(SnapshotFacts.load(settings.kube.snapshot))
    from .clients.kube import KubeAccess

    log.info("cluster: live API (%s)", settings.kube.kubeconfig or "in-cluster or ~/.kube/config")
    return KubeAccess(settings.kube, clusters=(settings.cluster,))


def load_policy_engine(settings: PolicySettings) -> PolicyEngine:
    """OPA server when OPA_URL is set, else the embedded Rego engine."""
    if settings.opa_url:
        from .clients.opa import OpaServerPolicyEngine

        log.info("policy: OPA server at %s", settings.opa_url)
        return OpaServerPolicyEngine(settings)
    from .clients.rego import EmbeddedPolicyEngine

    return EmbeddedPolicyEngine(settings)


def build_fleet_lock(settings: Settings, ledger: Ledger) -> FleetLock:
    """Where fleet limits are locked: beside the ledger, shared as widely as it
    is (Leases: every worker; a SQLite file: the processes of one machine)."""
    from .guard.fleet_lock import LeaseFleetLock, LocalFleetLock, SQLiteFleetLock
    from .guard.lease_ledger import LeaseLedger

    if isinstance(ledger, LeaseLedger):
        return LeaseFleetLock(ledger.store)
    path = settings.ledger.path.strip()
    if isinstance(ledger, SQLiteLedger) and path and path != ":memory:":
        return SQLiteFleetLock(path)
    return LocalFleetLock()


def build_ledger(settings: Settings) -> Ledger:
    """``REMEDIATION_LEDGER``: empty = in-memory SQLite (one process), a path =
    a SQLite file shared by the processes of one machine, ``kubernetes`` = one
    Lease per key in the project's namespace (every replica, every node)."""
    if settings.ledger.path.strip().lower() in ("kubernetes", "k8s", "lease", "leases"):
        from .clients.kube import KubeLeases
        from .guard.lease_ledger import LeaseLedger

        log.info("ledger: Kubernetes Leases in namespace %s", settings.kube.self_namespace)
        retention = settings.ledger.retention
        if 0 < retention < STATS_WINDOW_SECONDS:
            log.warning("REMEDIATION_LEDGER_RETENTION %ss is shorter than the policy's "
                        "window (%ss): limits would forget actions", retention,
                        STATS_WINDOW_SECONDS)
        return LeaseLedger(KubeLeases.from_settings(settings.kube),
                           approval_key=settings.approval.secret.reveal(),
                           retention=retention)
    return SQLiteLedger(settings.ledger.path)


def build_publisher(settings: Settings) -> OutcomeSink | None:
    """Send an outcome at once to ``REMEDIATION_OUTCOME_SINK``: an applied one
    while verification still runs, an approval request made on a path with no
    reply event (webhooks, replay); None when no sink is configured."""
    if not settings.http.outcome_sink:
        return None
    from .clients.sink import send
    from .events.outcome import outcome_event

    sink, timeout = settings.http.outcome_sink, settings.http.sink_timeout

    def publish(outcome: Outcome) -> None:
        delivery = send(sink, outcome_event(outcome), timeout=timeout, attempts=2)
        if not delivery.ok:
            log.warning("outcome sink refused %s: %s %s", delivery.event_id, delivery.status,
                        delivery.detail)

    return publish


def build_slo(settings: Settings) -> SLOSource | None:
    """The policy's ``slo`` input from Prometheus (``REMEDIATION_PROMETHEUS_URL``
    and ``REMEDIATION_SLO_FILE``); None when not configured. A bad SLO file
    is refused here, at start-up."""
    cfg = settings.slo
    if not cfg.configured:
        if cfg.prometheus_url or cfg.file:
            log.warning("SLO input off: set both REMEDIATION_PROMETHEUS_URL and "
                        "REMEDIATION_SLO_FILE")
        return None
    import yaml

    from .clients.prometheus import PrometheusSLOSource
    from .guard.slo import load_slo_config

    try:
        with open(cfg.file, encoding="utf-8") as fh:
            config = load_slo_config(yaml.safe_load(fh))
    except OSError as exc:
        raise InvalidInput(f"REMEDIATION_SLO_FILE {cfg.file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f"REMEDIATION_SLO_FILE {cfg.file}: not YAML/JSON") from exc
    log.info("SLO input: %d SLO(s) from %s, read from Prometheus at %s (timeout %ss, cache %ss)",
             len(config.entries), cfg.file, _address(cfg.prometheus_url), cfg.timeout,
             cfg.cache_seconds)
    return PrometheusSLOSource(cfg, config)


def build_sender_auth(settings: Settings) -> Any:
    """Who may post CloudEvents (``guard.sender_auth``): OIDC when an issuer
    is configured, the adapter's HMAC signature when a key is; neither and no
    explicit opt-out refuses every event."""
    import time

    from .guard.sender_auth import SenderAuthenticator

    cfg = settings.sender_auth
    verifier = None
    if cfg.oidc_issuer:
        from .clients.oidc import OIDCTokenVerifier

        verifier = OIDCTokenVerifier(cfg)
        log.info("sender authentication: Knative OIDC tokens of issuer %s, audience %s%s",
                 cfg.oidc_issuer, cfg.oidc_audience,
                 f", subjects {', '.join(cfg.oidc_subjects)}" if cfg.oidc_subjects else "")
    if cfg.hmac_key:
        log.info("sender authentication: events signed with the event HMAC key")
    if cfg.allow_unauthenticated:
        log.warning("sender authentication is OFF (REMEDIATION_ALLOW_UNAUTHENTICATED_EVENTS="
                    "true): anyone who can reach POST / can make this function act")
    elif not cfg.configured:
        log.error("no sender authentication is configured (REMEDIATION_OIDC_ISSUER or "
                  "REMEDIATION_EVENT_HMAC_KEY): every CloudEvent will be refused with 401")
    return SenderAuthenticator(cfg, verifier, clock=time.time)


def build_pipeline(settings: Settings, **overrides: Any) -> Pipeline:
    """A ready pipeline; ``overrides`` replace any port (tests, CLI)."""
    ports: dict[str, Any] = dict(overrides)
    from . import tracing

    tracing.configure(settings.otlp_endpoint)  # once per process; off when unset
    if "routes" not in ports:
        # an unknown function or a bad matcher is refused here, at start-up
        ports["routes"] = load_routes(settings.routes_file,
                                      known=set(ports.get("catalogue", CATALOGUE)))
    if "cluster" not in ports:
        ports["cluster"] = build_cluster(settings)
    if "ledger" not in ports:
        ports["ledger"] = build_ledger(settings)
    if "policy" not in ports:
        ports["policy"] = load_policy_engine(settings.policy)
    if "credentials" not in ports:
        ports["credentials"] = build_credentials(settings)
    if "publish" not in ports:
        ports["publish"] = build_publisher(settings)
    if "slo" not in ports:
        ports["slo"] = build_slo(settings)
    if "fleet_lock" not in ports:
        ports["fleet_lock"] = build_fleet_lock(settings, ports["ledger"])
    return Pipeline(settings=settings, catalogue=ports.pop("catalogue", CATALOGUE), **ports)


def _address(url: str) -> str:
    """scheme://host:port/path of a URL: never user info or a query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "(set)"


def describe(pipeline: Pipeline) -> dict[str, Any]:
    """What a serving process runs with, for its start-up log line (no secret)."""
    settings = pipeline.settings
    ledger = type(pipeline.ledger).__name__
    path = settings.ledger.path.strip()
    if ledger == "SQLiteLedger":
        ledger = f"sqlite:{path}" if path and path != ":memory:" else \
            "in-memory (forgotten on restart)"
    elif ledger == "LeaseLedger":
        ledger = f"kubernetes-leases:{settings.kube.self_namespace}"
    clusters = settings.served_clusters
    return {
        "ledger": ledger,
        "policy": f"opa-server:{_address(settings.policy.opa_url)}" if settings.policy.opa_url
        else f"embedded-rego:{type(pipeline.policy).__name__}",
        "credentials": f"vault:{_address(settings.vault.addr)}" if settings.vault.addr
        else "ambient (in-cluster service account or kubeconfig)",
        "cluster_facts": f"snapshot:{settings.kube.snapshot}" if settings.kube.snapshot
        else f"live:{settings.kube.kubeconfig or 'in-cluster or ~/.kube/config'}",
        "clusters": list(clusters) if clusters
        else "any (no allow-list: set REMEDIATION_CLUSTERS or REMEDIATION_CLUSTER)",
        "default_cluster": settings.cluster,
        "dry_run": settings.dry_run,
        "functions": list(settings.functions) or "all",
        "slo": f"prometheus:{_address(settings.slo.prometheus_url)}" if pipeline.slo is not None
        else "none",
        "outcome_sink": ("all outcomes" if settings.http.outcome_sink_all else "applied only")
        if settings.http.outcome_sink else "none",
    }


def close_pipeline(pipeline: Pipeline) -> None:
    for port in (pipeline.credentials, pipeline.policy, pipeline.ledger, pipeline.cluster,
                 pipeline.slo, pipeline.fleet_lock):
        close = getattr(port, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - shutting down, best effort
                log.warning("error closing %s", type(port).__name__)


def state_reader(pipeline: Pipeline,
                 dead_letters: Callable[[], Any] | None = None) -> Callable[[], State]:
    """What ``/metrics`` reads at scrape time (see :class:`metrics.State`):
    pending approvals (the ledger), GPU nodes cordoned by us, by others and
    the circuit breaker's limit (the cluster, when this process serves
    drain-gpu-node; the limit from the policy data shipped here, which an
    OPA server's own bundle may override), dead letters (the dead-letter
    function only). A part that cannot be read is left out, never guessed."""
    from math import floor

    from .actions.drain_gpu_node import CORDONED_BY
    from .actions.kit.gpu import is_gpu_node

    settings = pipeline.settings
    served = settings.functions
    # the webhook adapter and the dead-letter function act on nothing (and
    # have no Kubernetes identity): no ledger or cluster reads for them
    acts = not settings.http.sink and (not served or any(f in pipeline.catalogue
                                                          for f in served))
    drains = acts and (not served or "drain-gpu-node" in served)
    percent: float | None = None
    if drains:
        try:
            from pathlib import Path

            from .clients.rego import default_policy_dir, load_policy_sources

            pol = settings.policy
            _modules, data = load_policy_sources(
                Path(pol.policy_dir) if pol.policy_dir else default_policy_dir(), pol.data_file)
            value = ((data.get("remediation_config") or {}).get("limits") or {}).get(
                "max_cordoned_gpu_nodes_percent")
            percent = float(value) if isinstance(value, (int, float)) else None
        except Exception as exc:  # noqa: BLE001 - the gauge is left out, nothing else
            log.warning("circuit-breaker limit unknown for /metrics: %s", exc)

    def read() -> State:
        now = pipeline.clock()
        pending: int | None = None
        oldest: float | None = None
        try:
            if acts:
                records = pipeline.ledger.pending(now=now)
                pending = len(records)
                oldest = max((now - (r.updated_at or now) for r in records),
                             default=0.0)
        except Exception as exc:  # noqa: BLE001
            log.warning("pending approvals unknown for /metrics: %s", type(exc).__name__)
        nodes: dict[str, int | None] = {}
        if drains:
            try:
                gpu = [n for n in pipeline.cluster.facts(settings.cluster).list("Node")
                       if is_gpu_node(n)]
                cordoned = [n for n in gpu if (n.get("spec") or {}).get("unschedulable")]
                ours = sum(1 for n in cordoned if ((n.get("metadata") or {}).get(
                    "annotations") or {}).get(CORDONED_BY))
                nodes = {"gpu_nodes": len(gpu), "gpu_nodes_cordoned_by_us": ours,
                         "gpu_nodes_cordoned_by_others": len(cordoned) - ours,
                         "gpu_nodes_cordon_limit": None if percent is None
                         else floor(len(gpu) * percent / 100)}
            except Exception as exc:  # noqa: BLE001
                log.warning("GPU nodes unknown for /metrics: %s", type(exc).__name__)
        letters: int | None = None
        if dead_letters is not None:
            try:
                letters = len(dead_letters().list())
            except Exception as exc:  # noqa: BLE001
                log.warning("dead letters unknown for /metrics: %s", type(exc).__name__)
        return State(pending_approvals=pending, oldest_pending_approval_seconds=oldest,
                     dead_letters=letters, **nodes)

    return read
