"""Fixtures: a loopback Vault that speaks the exact API the project uses.

* ``vault_server``: a started :class:`FakeVault`, configured as ``remediate
  vault setup`` leaves a Vault (Kubernetes auth + secrets engine enabled, the
  repo's ``vault/`` policies and roles loaded, KV v2 at ``secret/`` holding the
  clusters ``gpu-east`` and ``gpu-west``), seeded with a service-account JWT
  written to ``tmp_path``. ``.settings(**overrides)`` gives matching
  ``VaultSettings``.
* ``blank_vault_server``: the same server as a fresh dev Vault (token auth,
  ``secret/`` KV v2, nothing else) for the set-up tests; ``.root_token``.

Plain HTTP on 127.0.0.1 (stdlib ThreadingHTTPServer in a thread). Errors are
always ``{"errors": [...]}`` with ``Content-Type: application/json``; tokens
go in ``X-Vault-Token`` and paths are checked against the token's HCL
policies (the repo's own files), so a missing grant answers 403 exactly as
Vault does. Switches: ``seal()``/``unseal()`` (503 ``Vault is sealed``),
``down()``/``up()`` (closed port, same address), ``slow(seconds)`` (sleep past
the client timeout), ``fail_next(status, count)`` (429/500/502 bursts),
``token_ttl``/``token_max_ttl``/``token_renewable`` (short TTLs to exercise
renewal), ``deny(prefix)`` (403 for a path). Records issued tokens, leases,
revocations and every request.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from remediation.settings import VaultSettings

REPO_VAULT_DIR = Path(__file__).resolve().parents[2] / "vault"

NAMESPACE_REFUSED = (
    "kubernetes_namespace '{ns}' is not present in role's allowed_kubernetes_namespaces "
    "or does not match role's label selector allowed_kubernetes_namespace_selector"
)

#: What Vault's built-in ``default`` policy grants (the parts used here).
DEFAULT_POLICY = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
"""

_POLICY_RULE = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', re.DOTALL)
_DURATION = re.compile(r"(\d+)([smhd]?)")


def seconds(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    total = 0
    for n, unit in _DURATION.findall(str(value)):
        total += int(n) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def parse_policy(hcl: str) -> list[tuple[re.Pattern[str], set[str]]]:
    rules = []
    for path, caps in _POLICY_RULE.findall(hcl):
        rx = ""
        for i, part in enumerate(path.split("/")):
            rx += ("/" if i else "") + ("[^/]+" if part == "+" else re.escape(part))
        if rx.endswith(r"\*"):
            rx = rx[:-2] + ".*"
        rules.append((re.compile(rx + r"\Z"), {c.strip().strip('"') for c in caps.split(",")}))
    return rules


class VaultHTTPError(Exception):
    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = list(errors)


class FakeVault:
    def __init__(self, jwt: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.jwt = jwt
        self.clock = clock
        self.root_token = "hvs.root-" + secrets.token_hex(12)
        self.lock = threading.RLock()
        # configuration (what setup writes)
        self.auth_methods: dict[str, dict[str, Any]] = {"token/": {"type": "token"}}
        self.mounts: dict[str, dict[str, Any]] = {
            "secret/": {"type": "kv", "options": {"version": "2"}},
            "cubbyhole/": {"type": "cubbyhole", "options": None},
            "sys/": {"type": "system", "options": None},
        }
        self.policies: dict[str, str] = {}
        self.auth_roles: dict[str, dict[str, Any]] = {}  # "<mount>/<name>"
        self.k8s_roles: dict[str, dict[str, Any]] = {}  # "<mount>/<name>"
        self.kv: dict[str, dict[str, Any]] = {}  # "<mount>/<path>"
        # runtime
        self.tokens: dict[str, dict[str, Any]] = {
            self.root_token: {"policies": ["root"], "ttl": 0, "since": 0.0, "renewable": False,
                              "max_ttl": 0, "created": 0.0, "revoked": False}}
        self.active_leases: dict[str, dict[str, Any]] = {}
        self.revoked_leases: list[str] = []
        self.issued_sa_tokens: list[str] = []
        self.creds_requests: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.config_writes = 0
        self.logins = 0
        self.renewals = 0
        # switches
        self.sealed = False
        self.slow_seconds = 0.0
        self.failures: list[int] = []
        self.denied: list[str] = []
        self.token_ttl: int | None = None  # override the auth role's token_ttl
        self.token_max_ttl: int | None = None
        self.token_renewable = True
        self.unknown_lease_status = 400
        self.jwt_path = Path()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeVault:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                vault._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout test) is not an error

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def down(self) -> None:
        """Close the port (connection refused at the same address)."""
        self.stop()

    def up(self) -> None:
        if self._server is None:
            self.start()

    def seal(self) -> None:
        self.sealed = True

    def unseal(self) -> None:
        self.sealed = False

    def slow(self, seconds_: float) -> None:
        self.slow_seconds = seconds_

    def fail_next(self, status: int, count: int = 1) -> None:
        with self.lock:
            self.failures.extend([status] * count)

    def deny(self, prefix: str) -> None:
        self.denied.append(prefix)

    # ------------------------------------------------------------ inspection
    def issued_tokens(self) -> list[str]:
        """Every secret this server handed out or accepted: Vault client
        tokens (root included), issued service-account tokens and the JWT."""
        with self.lock:
            return [*self.tokens, *self.issued_sa_tokens, self.jwt]

    def client_tokens(self) -> list[str]:
        with self.lock:
            return [t for t in self.tokens if t != self.root_token]

    def live_client_tokens(self) -> list[str]:
        with self.lock:
            return [t for t in self.client_tokens() if not self.tokens[t]["revoked"]]

    def config_state(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy({"auth": self.auth_methods, "mounts": self.mounts,
                                  "policies": self.policies, "auth_roles": self.auth_roles,
                                  "k8s_roles": self.k8s_roles, "kv": self.kv})

    # ------------------------------------------------------------ seeding
    def put_kv(self, path: str, data: dict[str, Any], mount: str = "secret") -> None:
        with self.lock:
            self.kv[f"{mount}/{path}"] = dict(data)

    def set_policy(self, name: str, hcl: str) -> None:
        with self.lock:
            self.policies[name.lower()] = hcl

    def set_k8s_role(self, name: str, body: dict[str, Any], mount: str = "kubernetes") -> None:
        with self.lock:
            self.k8s_roles[f"{mount}/{name}"] = self._normalise_k8s_role(name, body)

    def configure_from(self, definitions: Path = REPO_VAULT_DIR) -> None:
        """The state ``remediate vault setup`` leaves, without HTTP."""
        with self.lock:
            self.auth_methods["kubernetes/"] = {"type": "kubernetes"}
            self.mounts["kubernetes/"] = {"type": "kubernetes", "options": None}
            for p in sorted((definitions / "policies").glob("*.hcl")):
                self.policies[p.stem] = p.read_text("utf-8")
            role = json.loads((definitions / "auth-role.json").read_text("utf-8"))
            name = role.pop("name")
            self.auth_roles[f"kubernetes/{name}"] = self._normalise_auth_role(role)
            for p in sorted((definitions / "roles").glob("*.json")):
                body = json.loads(p.read_text("utf-8"))
                rules = body.get("generated_role_rules")
                if not isinstance(rules, str):
                    body["generated_role_rules"] = json.dumps(rules, sort_keys=True,
                                                              separators=(",", ":"))
                self.set_k8s_role(body.pop("name", p.stem), body)

    # ------------------------------------------------------------ normalising
    @staticmethod
    def _normalise_auth_role(body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alias_name_source": "serviceaccount_uid", "audience": "",
            "bound_service_account_names": [], "bound_service_account_namespaces": [],
            "token_bound_cidrs": [], "token_explicit_max_ttl": 0, "token_max_ttl": 0,
            "token_no_default_policy": False, "token_num_uses": 0, "token_period": 0,
            "token_policies": [], "token_ttl": 0, "token_type": "default",
        }
        for k, v in body.items():
            if k.startswith("_"):
                continue
            if k.endswith("ttl"):
                v = seconds(v)
            elif k in ("bound_service_account_names", "bound_service_account_namespaces",
                       "token_policies") and isinstance(v, str):
                v = [x.strip() for x in v.split(",") if x.strip()]
            out[k] = v
        out["policies"] = out["token_policies"]
        return out

    @staticmethod
    def _normalise_k8s_role(name: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name, "allowed_kubernetes_namespaces": [],
            "allowed_kubernetes_namespace_selector": "", "extra_annotations": None,
            "extra_labels": None, "generated_role_rules": "", "kubernetes_role_name": "",
            "kubernetes_role_type": "Role", "name_template": "", "service_account_name": "",
            "token_default_audiences": None, "token_default_ttl": 0, "token_max_ttl": 0,
        }
        for k, v in body.items():
            if k.startswith("_"):
                continue
            if k.endswith("ttl"):
                v = seconds(v)
            elif k == "allowed_kubernetes_namespaces" and isinstance(v, str):
                v = [x.strip() for x in v.split(",") if x.strip()]
            out[k] = v
        return out

    # ------------------------------------------------------------ HTTP
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        path = split.path
        query = parse_qs(split.query)
        method = h.command
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((method, path))
        if self.slow_seconds:
            time.sleep(self.slow_seconds)
        try:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise VaultHTTPError(400, "failed to parse JSON input") from None
            if not path.startswith("/v1/"):
                raise VaultHTTPError(404, "not found")
            status, payload = self._route(method, path[4:].strip("/"), body, query,
                                          h.headers.get("X-Vault-Token", ""))
        except VaultHTTPError as exc:
            status, payload = exc.status, {"errors": exc.errors}
        if status == 204:
            h.send_response(204)
            h.end_headers()
            return
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        try:
            h.wfile.write(data)
        except OSError:
            pass

    def _check(self, token: str, path: str, method: str) -> dict[str, Any]:
        info = self.tokens.get(token)
        if not token or info is None or info["revoked"]:
            raise VaultHTTPError(403, "permission denied")
        if info["ttl"] and self.clock() > info["since"] + info["ttl"]:
            raise VaultHTTPError(403, "permission denied")
        if any(path.startswith(p) for p in self.denied):
            raise VaultHTTPError(403, "permission denied")
        if "root" in info["policies"]:
            return info
        need = {"GET": {"read"}, "LIST": {"list"}, "DELETE": {"delete"}}.get(
            method, {"create", "update"})
        texts = [DEFAULT_POLICY] + [self.policies.get(p, "") for p in info["policies"]]
        for text in texts:
            for rx, caps in parse_policy(text):
                if rx.match(path) and caps & need and "deny" not in caps:
                    return info
        raise VaultHTTPError(403, "permission denied")

    def _route(self, method: str, path: str, body: dict[str, Any], query: dict[str, list[str]],
               token: str) -> tuple[int, Any]:
        with self.lock:
            if self.sealed:
                raise VaultHTTPError(503, "Vault is sealed")
            if self.failures:
                status = self.failures.pop(0)
                message = {429: f"request path \"{path}\": rate limit quota exceeded",
                           500: "internal error", 502: "bad gateway"}.get(status, "error")
                raise VaultHTTPError(status, message)
            if method == "GET" and query.get("list") == ["true"]:
                method = "LIST"
            m = re.fullmatch(r"auth/([^/]+)/login", path)
            if m and method in ("POST", "PUT"):
                return self._login(m.group(1), body)
            info = self._check(token, path, method)
            return self._dispatch(method, path, body, token, info)

    def _login(self, mount: str, body: dict[str, Any]) -> tuple[int, Any]:
        if f"{mount}/" not in self.auth_methods:
            raise VaultHTTPError(404, f"no handler for route \"auth/{mount}/login\". "
                                      "route entry not found.")
        role = self.auth_roles.get(f"{mount}/{body.get('role', '')}")
        if role is None:
            raise VaultHTTPError(400, f"invalid role name \"{body.get('role', '')}\"")
        if body.get("jwt") != self.jwt:
            raise VaultHTTPError(403, "permission denied")
        ttl = self.token_ttl if self.token_ttl is not None else role["token_ttl"] or 2764800
        max_ttl = (self.token_max_ttl if self.token_max_ttl is not None
                   else role["token_max_ttl"] or 2764800)
        token = "hvs.CAES" + secrets.token_urlsafe(24)
        now = self.clock()
        policies = ["default", *role["token_policies"]]
        self.tokens[token] = {"policies": policies, "ttl": ttl, "since": now, "created": now,
                              "max_ttl": max_ttl, "renewable": self.token_renewable,
                              "revoked": False}
        self.logins += 1
        return 200, self._envelope(auth={
            "client_token": token, "accessor": secrets.token_hex(8), "policies": policies,
            "token_policies": policies, "lease_duration": ttl,
            "renewable": self.token_renewable,
            "metadata": {"role": body["role"], "service_account_name": "restart-engine",
                         "service_account_namespace": "remediation"}})

    @staticmethod
    def _envelope(**kw: Any) -> dict[str, Any]:
        env: dict[str, Any] = {"request_id": secrets.token_hex(8), "lease_id": "",
                               "renewable": False, "lease_duration": 0, "data": None,
                               "wrap_info": None, "warnings": None, "auth": None}
        env.update(kw)
        return env

    def _dispatch(self, method: str, path: str, body: dict[str, Any], token: str,
                  info: dict[str, Any]) -> tuple[int, Any]:
        write = method in ("POST", "PUT")
        # -------------------------------------------------------- token
        if path == "auth/token/lookup-self" and method == "GET":
            left = max(0, int(info["since"] + info["ttl"] - self.clock())) if info["ttl"] else 0
            return 200, self._envelope(data={
                "id": token, "policies": info["policies"], "renewable": info["renewable"],
                "ttl": left, "creation_ttl": info["ttl"], "display_name": "kubernetes"})
        if path == "auth/token/renew-self" and write:
            if not info["renewable"]:
                raise VaultHTTPError(400, "lease is not renewable")
            now = self.clock()
            left_max = int(info["created"] + info["max_ttl"] - now) if info["max_ttl"] else None
            ttl = info["ttl"] if not body.get("increment") else seconds(body["increment"])
            if left_max is not None:
                ttl = max(0, min(ttl, left_max))
            info["ttl"], info["since"] = ttl, now
            self.renewals += 1
            return 200, self._envelope(auth={
                "client_token": token, "policies": info["policies"], "lease_duration": ttl,
                "renewable": info["renewable"]})
        if path == "auth/token/revoke-self" and write:
            info["revoked"] = True
            return 204, None
        # -------------------------------------------------------- leases
        if path == "sys/leases/revoke" and write:
            lease_id = str(body.get("lease_id", ""))
            if lease_id not in self.active_leases:
                if self.unknown_lease_status == 204:
                    return 204, None
                raise VaultHTTPError(self.unknown_lease_status, "invalid lease ID")
            self.active_leases.pop(lease_id)
            self.revoked_leases.append(lease_id)
            return 204, None
        if path == "sys/leases/renew" and write:
            if str(body.get("lease_id", "")) not in self.active_leases:
                raise VaultHTTPError(400, "lease not found")
            raise VaultHTTPError(400, "lease is not renewable")
        # -------------------------------------------------------- config
        if path == "sys/auth" and method == "GET":
            return 200, {**self.auth_methods, "data": self.auth_methods}
        m = re.fullmatch(r"sys/auth/(.+)", path)
        if m and write:
            key = m.group(1).strip("/") + "/"
            if key in self.auth_methods:
                raise VaultHTTPError(400, f"path is already in use at {key}")
            self.auth_methods[key] = {"type": body["type"]}
            self.config_writes += 1
            return 204, None
        if path == "sys/mounts" and method == "GET":
            return 200, {**self.mounts, "data": self.mounts}
        m = re.fullmatch(r"sys/mounts/(.+)", path)
        if m and write:
            key = m.group(1).strip("/") + "/"
            if key in self.mounts:
                raise VaultHTTPError(400, f"path is already in use at {key}")
            self.mounts[key] = {"type": body["type"], "options": body.get("options")}
            self.config_writes += 1
            return 204, None
        m = re.fullmatch(r"sys/policies/acl/([^/]+)", path)
        if m:
            name = m.group(1).lower()
            if method == "GET":
                if name not in self.policies:
                    raise VaultHTTPError(404)
                data = {"name": name, "policy": self.policies[name]}
                return 200, {**data, **self._envelope(data=data)}
            if write:
                self.policies[name] = body["policy"]
                self.config_writes += 1
                return 204, None
        m = re.fullmatch(r"auth/([^/]+)/role/([^/]+)", path)
        if m and f"{m.group(1)}/" in self.auth_methods:
            key = f"{m.group(1)}/{m.group(2)}"
            if method == "GET":
                if key not in self.auth_roles:
                    raise VaultHTTPError(404)
                return 200, self._envelope(data=self.auth_roles[key])
            if write:
                self.auth_roles[key] = self._normalise_auth_role(body)
                self.config_writes += 1
                return 204, None
        m = re.fullmatch(r"([^/]+)/roles/([^/]+)", path)
        if m and self.mounts.get(f"{m.group(1)}/", {}).get("type") == "kubernetes":
            key = f"{m.group(1)}/{m.group(2)}"
            if method == "GET":
                if key not in self.k8s_roles:
                    raise VaultHTTPError(404)
                return 200, self._envelope(data=self.k8s_roles[key])
            if write:
                given = [k for k in ("service_account_name", "kubernetes_role_name",
                                     "generated_role_rules") if body.get(k)]
                if len(given) != 1:
                    raise VaultHTTPError(400, "one (and only one) of service_account_name, "
                                              "kubernetes_role_name or generated_role_rules "
                                              "must be set")
                self.k8s_roles[key] = self._normalise_k8s_role(m.group(2), body)
                self.config_writes += 1
                return 204, None
        # -------------------------------------------------------- creds
        m = re.fullmatch(r"([^/]+)/creds/([^/]+)", path)
        if m and write and self.mounts.get(f"{m.group(1)}/", {}).get("type") == "kubernetes":
            return self._creds(m.group(1), m.group(2), body)
        # -------------------------------------------------------- KV v2
        m = re.fullmatch(r"([^/]+)/data/(.+)", path)
        if m and method == "GET" and self.mounts.get(f"{m.group(1)}/", {}).get("type") == "kv":
            key = f"{m.group(1)}/{m.group(2)}"
            if key not in self.kv:
                raise VaultHTTPError(404)
            return 200, self._envelope(data={
                "data": self.kv[key],
                "metadata": {"created_time": "2026-10-01T02:24:06.945319214Z",
                             "custom_metadata": None, "deletion_time": "", "destroyed": False,
                             "version": 1}})
        raise VaultHTTPError(404, f"no handler for route \"{path}\". route entry not found.")

    def _creds(self, mount: str, role_name: str, body: dict[str, Any]) -> tuple[int, Any]:
        role = self.k8s_roles.get(f"{mount}/{role_name}")
        if role is None:
            raise VaultHTTPError(400, f"role '{role_name}' does not exist")
        ns = body.get("kubernetes_namespace")
        if not ns:
            raise VaultHTTPError(400, "'kubernetes_namespace' is required")
        allowed = role["allowed_kubernetes_namespaces"]
        if "*" not in allowed and ns not in allowed:
            raise VaultHTTPError(400, NAMESPACE_REFUSED.format(ns=ns))
        ttl = seconds(body.get("ttl") or role["token_default_ttl"] or 3600)
        if role["token_max_ttl"]:
            ttl = min(ttl, role["token_max_ttl"])
        if body.get("cluster_role_binding") and role["kubernetes_role_type"] != "ClusterRole" \
                and role["generated_role_rules"] == "":
            raise VaultHTTPError(400, "a ClusterRoleBinding needs a ClusterRole")
        sa = f"v-token-{role_name[:8]}-{int(time.time())}-{secrets.token_hex(3)}"
        sa_token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32)
        lease_id = f"{mount}/creds/{role_name}/{secrets.token_urlsafe(18)}"
        self.issued_sa_tokens.append(sa_token)
        self.active_leases[lease_id] = {"role": role_name, "mount": mount, "namespace": ns,
                                        "ttl": ttl, "service_account": sa,
                                        "cluster_role_binding": bool(
                                            body.get("cluster_role_binding"))}
        self.creds_requests.append({"mount": mount, "role": role_name, **body})
        return 200, self._envelope(lease_id=lease_id, lease_duration=ttl, renewable=False,
                                   data={"service_account_name": sa,
                                         "service_account_namespace": ns,
                                         "service_account_token": sa_token})

    # ------------------------------------------------------------ helpers for tests
    def settings(self, **overrides: Any) -> VaultSettings:
        values: dict[str, Any] = {"addr": self.url, "jwt_path": str(self.jwt_path),
                                  "timeout": 2.0}
        values.update(overrides)
        return VaultSettings(**values)


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfakeCAforTests\n-----END CERTIFICATE-----\n"


def _make(tmp_path: Path, configured: bool) -> FakeVault:
    jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ." + secrets.token_urlsafe(48)
    jwt_path = tmp_path / "sa-token"
    jwt_path.write_text(jwt + "\n", "utf-8")
    server = FakeVault(jwt)
    server.jwt_path = jwt_path
    if configured:
        server.configure_from(REPO_VAULT_DIR)
        server.put_kv("remediation/clusters/gpu-east", {
            "api_server": "https://api.gpu-east.example:6443", "ca_crt": CA_PEM})
        server.put_kv("remediation/clusters/gpu-west", {
            "api_server": "https://api.gpu-west.example:6443", "ca_crt": CA_PEM,
            "secrets_mount": "kubernetes-west", "role_prefix": "west-"})
    return server.start()


@pytest.fixture
def vault_server(tmp_path: Path) -> Iterator[FakeVault]:
    server = _make(tmp_path, configured=True)
    try:
        yield server
    finally:
        server.slow_seconds = 0
        server.stop()


@pytest.fixture
def blank_vault_server(tmp_path: Path) -> Iterator[FakeVault]:
    server = _make(tmp_path, configured=False)
    try:
        yield server
    finally:
        server.slow_seconds = 0
        server.stop()
