"""Vault: per-plan Kubernetes credentials. The ONLY module that imports ``hvac``
(lazily, inside functions).

How a plan gets its credential (API shapes: the Vault section of
``vault-opa-kubernetes.md``):

1. Log in with the Kubernetes auth method (``POST /v1/auth/<mount>/login``,
   the pod's service-account JWT read from ``VaultSettings.jwt_path``). The
   Vault token is cached; once less than a third of its TTL is left it is
   renewed (``renew-self``), or replaced by a fresh login when it is not
   renewable, renewal fails, or renewal no longer extends it (max TTL).
   Vault revokes a lease together with the token that created it, so before
   asking for credentials the token must also outlive them (``creds_ttl`` +
   30 s, capped at two thirds of its TTL); a replaced token is left to expire,
   never revoked, for the same reason. ``close()`` revokes it (``revoke-self``),
   and with it any lease still open.
2. Resolve the cluster: KV v2 ``<kv_mount>/data/<clusters_path>/<cluster>``
   holds ``api_server``, ``ca_crt`` and optionally ``secrets_mount`` and
   ``role_prefix``; cached per cluster for ``cluster_cache_ttl`` seconds.
3. Ask the Kubernetes secrets engine for a short-lived service-account token
   (``POST /v1/<mount>/creds/<role>``) in the plan's namespace (cluster-scoped
   plans such as a node drain: ``cluster_namespace`` with a
   ClusterRoleBinding) with ``VaultSettings.creds_ttl``.
4. ``revoke()`` ends the lease right after execution (``PUT
   /v1/sys/leases/revoke``); when Vault is unreachable the lease id is kept in
   a small retry list, tried again on the next call and on ``close()``.

Errors: unreachable, slow, sealed, 429 and 5xx become ``DependencyUnavailable``
(nothing was done; the event is redelivered); 400/401/403/404 become
``ActionFailed`` carrying Vault's own message. hvac's and requests' exceptions
carry the URL and sometimes request data, so every message here is built from
scratch and raised ``from None``; tokens (Vault token, service-account JWT,
issued Kubernetes token) never reach a log line, an exception or a repr.

``setup_vault()`` is the operator's idempotent one-time set-up from the
``vault/`` definitions (``remediate vault setup``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import metrics
from ..credentials import ScopedCredential
from ..errors import ActionFailed, DependencyUnavailable, RemediationError
from ..model import Plan
from ..settings import Secret, VaultSettings

log = logging.getLogger("remediation.vault")

#: Renew the Vault token once less than this fraction of its TTL is left.
RENEW_FRACTION = 1 / 3
#: At most this many lease ids wait for a revocation retry (oldest dropped:
#: they expire at their TTL anyway, which is short by design).
MAX_PENDING_REVOCATIONS = 64

# Names that end up in Vault paths: DNS-1123-ish, no "/" or "..".
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,251}[a-z0-9])?$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)?")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
          "d": 86400, None: 1}


def parse_duration(value: Any) -> float | None:
    """Seconds in a Vault duration ("10m", "1h30m", "900", 900); None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text, total, pos = value.strip(), 0.0, 0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m or m.end() == pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


@dataclass(frozen=True)
class ClusterTarget:
    """Where a cluster's credentials come from (no secrets in here)."""

    name: str
    api_server: str
    ca_crt: str
    secrets_mount: str
    role_prefix: str


def _vault_messages(exc: Any) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, (list, tuple)) and errors:
        return "; ".join(str(e) for e in errors)
    if isinstance(errors, str) and errors:
        return errors
    return "no message"


class _Scrubber:
    """Replaces known secret values in text (defence in depth for messages)."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, value: str) -> None:
        if value and len(value) >= 8 and value not in self._secrets:
            self._secrets.append(value)
            del self._secrets[:-16]

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


def _translate(exc: BaseException, what: str, addr: str, timeout: float,
               scrub: Callable[[str], str] = lambda s: s) -> RemediationError:
    """An hvac/requests exception as this project's error, with our own message."""
    import hvac.exceptions as hx
    import requests

    if isinstance(exc, RemediationError):
        return exc
    if isinstance(exc, requests.exceptions.Timeout):
        return DependencyUnavailable(f"Vault did not answer {what} within {timeout:g}s")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return DependencyUnavailable(f"Vault unreachable at {addr} ({what})")
    if isinstance(exc, requests.exceptions.RequestException):
        return DependencyUnavailable(f"Vault request failed ({what}): {type(exc).__name__}")
    msg = scrub(_vault_messages(exc))
    if isinstance(exc, hx.VaultDown):
        return DependencyUnavailable(f"Vault unavailable ({what}): {msg}", delay=30.0)
    if isinstance(exc, hx.RateLimitExceeded):
        return DependencyUnavailable(f"Vault throttled {what} (429): {msg}", delay=10.0)
    if isinstance(exc, (hx.InternalServerError, hx.BadGateway, hx.VaultNotInitialized,
                        hx.UnexpectedError)):
        return DependencyUnavailable(f"Vault error ({what}): {msg}")
    if isinstance(exc, hx.Forbidden):
        return ActionFailed(f"Vault refused {what}: {msg}")
    if isinstance(exc, hx.Unauthorized):
        return ActionFailed(f"Vault refused {what} (unauthorized): {msg}")
    if isinstance(exc, hx.InvalidRequest):
        return ActionFailed(f"Vault rejected {what}: {msg}")
    if isinstance(exc, hx.InvalidPath):
        return ActionFailed(f"Vault has no such path ({what}): {msg}")
    if isinstance(exc, hx.VaultError):
        return DependencyUnavailable(f"Vault error ({what}): {msg}")
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        # a 200 that is not the JSON we expect (a proxy page, a half answer)
        return DependencyUnavailable(f"unexpected answer from Vault ({what})")
    return DependencyUnavailable(f"Vault call failed ({what}): {type(exc).__name__}")


def _make_client(settings: VaultSettings, token: str = "") -> Any:
    import hvac

    # token="" (not None): hvac would otherwise pick up VAULT_TOKEN/~/.vault-token.
    return hvac.Client(url=settings.addr, token=token, timeout=settings.timeout,
                       verify=settings.ca_cert or True,
                       namespace=settings.namespace or None)


class VaultCredentialBroker:
    """A :class:`~remediation.credentials.CredentialBroker` backed by Vault.

    Thread-safe: token refresh, the cluster cache and the retry list are
    guarded by one lock; Vault calls themselves run concurrently.
    """

    def __init__(self, settings: VaultSettings, *, default_cluster: str = "",
                 roles: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cluster_namespace: str = "remediation",
                 cluster_cache_ttl: float = 60.0) -> None:
        if not settings.addr:
            raise ActionFailed("Vault address not configured (VAULT_ADDR)")
        self.settings = settings
        self.default_cluster = default_cluster
        self.roles = dict(roles or {})
        self.clock = clock
        self.cluster_namespace = cluster_namespace
        self.cluster_cache_ttl = cluster_cache_ttl
        self._lock = threading.RLock()
        self._client: Any = None
        self._token = Secret("")
        self._token_ttl = 0.0  # seconds granted at the last login/renewal
        self._login_ttl = 0.0  # seconds granted at the last login
        self._token_since = 0.0  # clock() when _token_ttl started
        self._token_renewable = False
        self._clusters: dict[str, tuple[float, ClusterTarget]] = {}
        self._pending: list[str] = []
        self._scrub = _Scrubber()
        self._creds_seconds = parse_duration(settings.creds_ttl) or 0.0

    # ----------------------------------------------------------------- helpers
    def __repr__(self) -> str:
        state = "logged-in" if self._token else "logged-out"
        return (f"VaultCredentialBroker(addr={self.settings.addr!r}, "
                f"role={self.settings.auth_role!r}, {state}, "
                f"pending_revocations={len(self._pending)})")

    @property
    def pending_revocations(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._pending)

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except RemediationError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never leaked
            raise _translate(exc, what, self.settings.addr, self.settings.timeout,
                             self._scrub) from None

    def _vault(self) -> Any:
        if self._client is None:
            self._client = _make_client(self.settings)
        return self._client

    # ------------------------------------------------------------------- token
    def login(self) -> None:
        """Log in with the Kubernetes auth method now (also done lazily)."""
        with self._lock:
            self._login()

    def _login(self) -> None:
        s = self.settings
        try:
            jwt = Path(s.jwt_path).read_text("utf-8").strip()
        except OSError as exc:
            raise ActionFailed(f"cannot read the service-account token at {s.jwt_path}: "
                               f"{exc.strerror or type(exc).__name__}") from None
        if not jwt:
            raise ActionFailed(f"the service-account token at {s.jwt_path} is empty")
        self._scrub.add(jwt)
        client = self._vault()
        client.token = ""
        with self._calling(f"login (auth/{s.auth_mount}, role {s.auth_role})"):
            with metrics.dependency_call("vault"):
                resp = client.auth.kubernetes.login(s.auth_role, jwt, use_token=False,
                                                    mount_point=s.auth_mount)
            auth = resp["auth"]
            token = str(auth["client_token"])
            ttl = float(auth.get("lease_duration") or 0)
            renewable = bool(auth.get("renewable"))
        self._scrub.add(token)
        client.token = token
        self._token = Secret(token)
        self._token_ttl = self._login_ttl = ttl
        self._token_since = self.clock()
        self._token_renewable = renewable
        log.info("Vault login ok (auth/%s role %s, ttl %ss, renewable %s)",
                 s.auth_mount, s.auth_role, int(ttl), renewable)

    def _ensure_token(self, min_left: float = 0.0) -> Any:
        """A client holding a valid token: log in, renew or re-login as needed.

        ``min_left``: seconds the token must still live (a lease dies with the
        token that created it), capped at two thirds of the login TTL.
        """
        with self._lock:
            if not self._token:
                self._login()
                return self._client
            if self._token_ttl <= 0:  # a non-expiring token (root-like): keep it
                return self._client
            left = self._token_ttl - (self.clock() - self._token_since)
            want = max(self._login_ttl * RENEW_FRACTION,
                       min(min_left, self._login_ttl * (1 - RENEW_FRACTION)))
            if left >= want:
                return self._client
            if left > 0 and self._token_renewable and self._renew(want):
                return self._client
            # The old token is not revoked: leases it created are still in use
            # and would be revoked with it; it simply expires.
            self._drop_token()
            self._login()
            return self._client

    def _renew(self, want: float) -> bool:
        """renew-self; False when a fresh login is the better answer."""
        client = self._client
        try:
            with self._calling("token renewal"):
                with metrics.dependency_call("vault"):
                    resp = client.auth.token.renew_self()
                auth = resp["auth"]
                ttl = float(auth.get("lease_duration") or 0)
        except DependencyUnavailable:
            raise
        except ActionFailed as exc:
            log.info("Vault token renewal refused (%s); logging in again", exc)
            return False
        if ttl < want:
            log.info("Vault token near its max TTL (%ss granted); logging in again", int(ttl))
            return False
        self._token_ttl = ttl
        self._token_since = self.clock()
        self._token_renewable = bool(auth.get("renewable", True))
        log.debug("Vault token renewed (ttl %ss)", int(ttl))
        return True

    def _drop_token(self) -> None:
        self._token = Secret("")
        self._token_ttl = self._login_ttl = 0.0
        if self._client is not None:
            self._client.token = ""

    # ---------------------------------------------------------------- clusters
    def cluster_target(self, cluster: str) -> ClusterTarget:
        """The cluster's API address, CA, secrets mount and role prefix."""
        name = cluster or self.default_cluster
        s = self.settings
        if not name:
            return ClusterTarget("", "", "", s.secrets_mount, "")
        if not _NAME.match(name):
            raise ActionFailed(f"unknown cluster '{name[:80]}' (not a valid cluster name)")
        with self._lock:
            cached = self._clusters.get(name)
            if cached and self.clock() - cached[0] < self.cluster_cache_ttl:
                return cached[1]
        import hvac.exceptions as hx

        path = f"{s.clusters_path.strip('/')}/{name}"
        what = f"cluster lookup {s.kv_mount}/data/{path}"

        def read(client: Any) -> Any:
            try:
                return client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=s.kv_mount, raise_on_deleted_version=True)
            except hx.InvalidPath:
                raise ActionFailed(f"unknown cluster '{name}'") from None

        try:
            resp = self._with_token(read, what)
            with self._calling(what):
                data = resp["data"]["data"] or {}
        except ActionFailed as exc:
            if str(exc).startswith("unknown cluster"):
                raise
            raise ActionFailed(f"cluster '{name}': {exc}") from None
        if not isinstance(data, Mapping):
            raise ActionFailed(f"cluster '{name}': its Vault entry is not a mapping")
        target = ClusterTarget(
            name=name,
            api_server=str(data.get("api_server") or ""),
            ca_crt=str(data.get("ca_crt") or ""),
            secrets_mount=str(data.get("secrets_mount") or s.secrets_mount).strip("/"),
            role_prefix=str(data.get("role_prefix") or ""),
        )
        with self._lock:
            self._clusters[name] = (self.clock(), target)
        return target

    def role_for(self, function: str, target: ClusterTarget) -> str:
        return f"{target.role_prefix}{self.roles.get(function, function)}"

    # ------------------------------------------------------------------ leases
    def lease(self, plan: Plan, cluster: str) -> ScopedCredential:
        target = self.cluster_target(cluster)
        role = self.role_for(plan.function, target)
        if not _NAME.match(role):
            raise ActionFailed(f"invalid Vault role name for function '{plan.function}'")
        namespace = plan.target.namespace
        body: dict[str, Any] = {"ttl": self.settings.creds_ttl}
        if namespace:
            body["kubernetes_namespace"] = namespace
        else:
            namespace = self.cluster_namespace
            body["kubernetes_namespace"] = namespace
            body["cluster_role_binding"] = True
        what = f"credentials {target.secrets_mount}/creds/{role} for namespace '{namespace}'"
        resp = self._creds(target.secrets_mount, role, body, what)
        self._retry_pending()  # Vault answers again: finish earlier revocations
        with self._calling(what):
            data = resp["data"]
            token = str(data["service_account_token"])
            lease_id = str(resp.get("lease_id") or "")
            duration = int(resp.get("lease_duration") or 0)
            sa = str(data.get("service_account_name") or "")
            sa_ns = str(data.get("service_account_namespace") or namespace)
        self._scrub.add(token)
        cred = ScopedCredential(
            source="vault", cluster=target.name, namespace=sa_ns, token=Secret(token),
            api_server=target.api_server, ca_crt=target.ca_crt, lease_id=lease_id,
            lease_duration=duration, service_account=sa)
        log.info("Vault credential for %s %s: %s", plan.function, plan.target, cred.describe())
        return cred

    def _creds(self, mount: str, role: str, body: dict[str, Any], what: str) -> Any:
        """POST <mount>/creds/<role>."""
        return self._with_token(
            lambda client: client.write_data(f"{mount}/creds/{role}", data=body), what,
            min_left=self._creds_seconds + 30)

    def _with_token(self, call: Callable[[Any], Any], what: str, min_left: float = 0.0) -> Any:
        """``call(client)`` with a valid token; one fresh login and retry on 403
        (a token revoked or expired behind our back also answers 403)."""
        import hvac.exceptions as hx

        for attempt in (1, 2):
            client = self._ensure_token(min_left=min_left)
            with self._calling(what):
                try:
                    with metrics.dependency_call("vault"):
                        return call(client)
                except hx.Forbidden:
                    if attempt == 2:
                        raise
            with self._lock:
                log.info("Vault answered 403 for %s; logging in again once", what)
                self._drop_token()
        raise AssertionError("unreachable")  # pragma: no cover

    def revoke(self, credential: ScopedCredential) -> None:
        """Revoke the credential's lease. Never raises."""
        if credential.source != "vault" or not credential.lease_id:
            return
        if self._revoke_one(credential.lease_id):
            self._retry_pending()
            return
        with self._lock:
            if credential.lease_id not in self._pending:
                self._pending.append(credential.lease_id)
            del self._pending[:-MAX_PENDING_REVOCATIONS]

    def _revoke_one(self, lease_id: str) -> bool:
        """True when the lease is gone (revoked, expired or unknown); False to retry."""
        import hvac.exceptions as hx

        def call(client: Any) -> bool:
            try:
                client.sys.revoke_lease(lease_id)
            except (hx.InvalidRequest, hx.InvalidPath):
                return False  # expired or unknown: nothing left to revoke
            return True

        try:
            if not self._with_token(call, "lease revocation"):
                log.debug("Vault lease %s already gone", lease_id)
                return True
        except DependencyUnavailable as exc:
            log.warning("could not revoke Vault lease %s now, will retry: %s", lease_id, exc)
            return False
        except ActionFailed as exc:
            # e.g. the policy lacks sys/leases/revoke: retrying cannot help; the
            # lease still ends at its (short) TTL.
            log.error("Vault refused to revoke lease %s (it expires at its TTL): %s",
                      lease_id, exc)
            return True
        log.info("Vault lease %s revoked", lease_id)
        return True

    def _retry_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        still: list[str] = []
        for i, lease_id in enumerate(pending):
            if not self._revoke_one(lease_id):
                still = pending[i:]  # Vault is still down: keep the rest for later
                break
        if still:
            with self._lock:
                self._pending = (still + [p for p in self._pending if p not in still])[
                    -MAX_PENDING_REVOCATIONS:]

    def close(self) -> None:
        """Retry pending revocations, revoke the Vault token, drop the client."""
        with self._lock:
            if self._pending and self._token:
                self._retry_pending()
            if self._pending:
                log.warning("%d Vault lease(s) could not be revoked; they expire at their TTL",
                            len(self._pending))
            client, had_token = self._client, bool(self._token)
            if client is not None and had_token:
                try:
                    with self._calling("token revocation"), metrics.dependency_call("vault"):
                        client.auth.token.revoke_self()
                except RemediationError as exc:
                    log.warning("could not revoke the Vault token (it expires at its TTL): %s",
                                exc)
            self._drop_token()
            self._clusters.clear()
            if client is not None:
                try:
                    client.adapter.close()
                except Exception as exc:  # noqa: BLE001 - closing a session is best effort
                    log.debug("closing the Vault session: %s", type(exc).__name__)
            self._client = None


# --------------------------------------------------------------------- setup
def _same(desired: Any, current: Any, key: str = "") -> bool:
    """Does Vault's stored value match the definition (Vault normalises durations
    to seconds and may reorder lists)?"""
    if desired == current:
        return True
    if "ttl" in key or key in {"period"}:
        d, c = parse_duration(desired), parse_duration(current)
        return d is not None and d == c
    if isinstance(desired, (list, tuple)) and isinstance(current, (list, tuple)):
        return sorted(map(str, desired)) == sorted(map(str, current))
    if isinstance(desired, str) and isinstance(current, (list, tuple)):
        return sorted(x.strip() for x in desired.split(",") if x.strip()) == sorted(
            map(str, current))
    empty: tuple[object, ...] = ("", None, [], {})
    return desired in empty and current in empty


def _role_body(definition: Mapping[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in definition.items() if k != "name" and not k.startswith("_")}
    rules = body.get("generated_role_rules")
    if isinstance(rules, (Mapping, list)):
        if isinstance(rules, list):
            rules = {"rules": rules}
        body["generated_role_rules"] = json.dumps(rules, sort_keys=True, separators=(",", ":"))
    return body


def load_definitions(definitions_dir: str | Path) -> dict[str, Any]:
    """The vault/ folder: policies (name -> HCL), auth role, secrets-engine roles."""
    root = Path(definitions_dir)
    policies = {p.stem: p.read_text("utf-8") for p in sorted((root / "policies").glob("*.hcl"))}
    auth_path = root / "auth-role.json"
    auth_role = json.loads(auth_path.read_text("utf-8")) if auth_path.exists() else None
    roles = {}
    for p in sorted((root / "roles").glob("*.json")):
        definition = json.loads(p.read_text("utf-8"))
        roles[str(definition.get("name") or p.stem)] = _role_body(definition)
    if not policies and not roles and auth_role is None:
        raise ActionFailed(f"no Vault definitions found in {root}")
    return {"policies": policies, "auth_role": auth_role, "roles": roles}


def setup_vault(settings: VaultSettings, definitions_dir: str | Path = "vault", *,
                token: Secret | str | None = None) -> dict[str, Any]:
    """Idempotent set-up from the ``vault/`` definitions; returns a report.

    Enables the Kubernetes auth method at ``settings.auth_mount``, the
    Kubernetes secrets engine at ``settings.secrets_mount`` and KV v2 at
    ``settings.kv_mount`` when missing, then writes each policy, the auth role
    and each secrets-engine role only when Vault's copy differs. A second run
    changes nothing: every item reports ``"unchanged"``.

    ``token``: an operator token allowed to do all that; ``None`` lets hvac
    take ``VAULT_TOKEN`` or ``~/.vault-token`` as the Vault CLI does. The
    report is ``{"addr", "changed": <count>, "items": [{"item", "result"}]}``
    with result ``created`` | ``updated`` | ``enabled`` | ``unchanged``.
    """
    if not settings.addr:
        raise ActionFailed("Vault address not configured (VAULT_ADDR)")
    defs = load_definitions(definitions_dir)
    import hvac
    import hvac.exceptions as hx

    raw = token.reveal() if isinstance(token, Secret) else token
    client = hvac.Client(url=settings.addr, token=raw, timeout=settings.timeout,
                         verify=settings.ca_cert or True, namespace=settings.namespace or None)
    scrub = _Scrubber()
    if client.token:
        scrub.add(client.token)
    items: list[dict[str, str]] = []

    def record(item: str, result: str) -> None:
        items.append({"item": item, "result": result})
        log.info("vault setup: %s %s", item, result)

    @contextmanager
    def calling(what: str) -> Iterator[None]:
        try:
            yield
        except RemediationError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never leaked
            raise _translate(exc, what, settings.addr, settings.timeout, scrub) from None

    def listing(resp: Mapping[str, Any]) -> Mapping[str, Any]:
        data = resp.get("data")
        return data if isinstance(data, Mapping) else resp

    try:
        with calling("listing auth methods"):
            auths = listing(client.sys.list_auth_methods())
        mount = settings.auth_mount.strip("/")
        existing = auths.get(f"{mount}/")
        if existing is None:
            with calling(f"enabling auth method at auth/{mount}"):
                client.sys.enable_auth_method("kubernetes", path=mount)
            record(f"auth/{mount}", "enabled")
        elif existing.get("type") != "kubernetes":
            raise ActionFailed(f"auth/{mount} is a '{existing.get('type')}' auth method, "
                               "not 'kubernetes'")
        else:
            record(f"auth/{mount}", "unchanged")

        with calling("listing secrets engines"):
            mounts = listing(client.sys.list_mounted_secrets_engines())
        for path, kind, options in ((settings.secrets_mount.strip("/"), "kubernetes", None),
                                    (settings.kv_mount.strip("/"), "kv", {"version": "2"})):
            existing = mounts.get(f"{path}/")
            if existing is None:
                with calling(f"enabling secrets engine at {path}"):
                    client.sys.enable_secrets_engine(kind, path=path, options=options)
                record(f"sys/mounts/{path}", "enabled")
            elif existing.get("type") != kind:
                raise ActionFailed(f"{path}/ is a '{existing.get('type')}' secrets engine, "
                                   f"not '{kind}'")
            else:
                record(f"sys/mounts/{path}", "unchanged")

        for name, hcl in defs["policies"].items():
            with calling(f"reading policy {name}"):
                try:
                    current = listing(client.sys.read_acl_policy(name)).get("policy")
                except hx.InvalidPath:
                    current = None
            if current is not None and current.strip() == hcl.strip():
                record(f"sys/policies/acl/{name}", "unchanged")
                continue
            with calling(f"writing policy {name}"):
                client.sys.create_or_update_acl_policy(name, hcl)
            record(f"sys/policies/acl/{name}", "created" if current is None else "updated")

        def write_role(path: str, body: Mapping[str, Any]) -> None:
            with calling(f"reading {path}"):
                resp = client.read(path)
            current = (resp or {}).get("data") if resp else None
            if isinstance(current, Mapping) and all(
                    _same(v, current.get(k), k) for k, v in body.items()):
                record(path, "unchanged")
                return
            with calling(f"writing {path}"):
                client.write_data(path, data=dict(body))
            record(path, "created" if current is None else "updated")

        if defs["auth_role"] is not None:
            role = dict(defs["auth_role"])
            name = str(role.pop("name", "") or settings.auth_role)
            write_role(f"auth/{mount}/role/{name}",
                       {k: v for k, v in role.items() if not k.startswith("_")})
        for name, body in defs["roles"].items():
            write_role(f"{settings.secrets_mount.strip('/')}/roles/{name}", body)
    finally:
        try:
            client.adapter.close()
        except Exception as exc:  # noqa: BLE001 - closing a session is best effort
            log.debug("closing the Vault session: %s", type(exc).__name__)
    changed = sum(1 for i in items if i["result"] != "unchanged")
    return {"addr": settings.addr, "changed": changed, "items": items}
