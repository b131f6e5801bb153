"""The real components of the realstack tier, started on loopback for tests.

Binaries come from ``tests/realstack/build.sh`` (pinned Go modules built into
a cache outside the checkout; Debian's Prometheus and Alertmanager). Every
process binds 127.0.0.1 on a free port, writes its log under the session's
directory and is stopped by whoever started it (``Process.stop``, and
``ControlPlane.close`` for the whole control plane).

* :func:`bin_dir` / :func:`binary`: where the built binaries are. With
  ``CI`` set a missing binary is an error (never a silent skip): the tier
  must run there. Elsewhere the caller may skip with the message.
* :class:`ControlPlane`: etcd, kube-apiserver (RBAC + Node authorization,
  ServiceAccount issuer so TokenRequest and TokenReview work, an audit log of
  every write), kube-controller-manager (all controllers), kube-scheduler and
  kwok (fake kubelets for nodes annotated ``kwok.x-k8s.io/node: fake``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
IN_CI = bool(os.environ.get("CI"))
ADMIN_TOKEN = "realstack-admin-4f7d2a"
#: a cluster-admin identity of its own for the product under measurement, so
#: the audit log tells its requests from the fixtures' (user "remediator")
REMEDIATOR_TOKEN = "realstack-remediator-c81e"
ISSUER = "https://kubernetes.default.svc.cluster.local"


class ComponentMissing(RuntimeError):
    """A component binary is not built (run tests/realstack/build.sh)."""


class ComponentFailed(RuntimeError):
    """A component did not start; the message carries its last log lines."""


def bin_dir() -> Path:
    explicit = os.environ.get("REALSTACK_BIN")
    if explicit:
        return Path(explicit)
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print"], check=True,
                         capture_output=True, text=True, timeout=30)
    return Path(out.stdout.strip())


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise ComponentMissing(
            f"{name} is not built ({path} missing): run tests/realstack/build.sh "
            "(make test does it when binaries are missing)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Process:
    """One started component: its process, log file and a stop that always ends it."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.kill(self.popen.pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)


def start(name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None) -> Process:
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env or dict(os.environ),
                                 start_new_session=True)
    return Process(name, popen, log)


def wait_until(what: str, check: Callable[[], bool], proc: Process | None,
               timeout: float = 60.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise ComponentFailed(f"{proc.name} exited ({proc.popen.returncode}) before "
                                  f"{what}:\n{tail(proc.log)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet, whatever the error
            pass
        time.sleep(interval)
    raise ComponentFailed(f"timed out after {timeout:.0f} s waiting for {what}"
                          + (f"; last lines of {proc.log}:\n{tail(proc.log)}" if proc else ""))


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost and the
    ServiceAccount signing key pair, made with the openssl CLI."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
            "-subj", "/CN=realstack-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "apiserver.key"),
            "-out", str(d / "apiserver.csr"), "-subj", "/CN=kube-apiserver")
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(d / "apiserver.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-out", str(d / "apiserver.crt"), "-extfile", str(d / "san.ext"))
    openssl("genrsa", "-out", str(d / "sa.key"), "2048")
    openssl("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))


def kubeconfig_for(url: str, ca: Path, token: str, user: str = "admin") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "realstack",
                      "cluster": {"server": url, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "realstack", "context": {"cluster": "realstack", "user": user}}],
        "current-context": "realstack",
    }


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    # Writes only, at Metadata level: enough to count who changed what.
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "verbs": ["get", "list", "watch"]},
        {"level": "None", "users": ["system:kube-scheduler", "system:kube-controller-manager",
                                    "system:apiserver", "kwok"]},
        # the controllers, each with its own ServiceAccount in kube-system
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "None", "resources": [{"group": "coordination.k8s.io",
                                         "resources": ["leases"]}],
         "namespaces": ["kube-system", "kube-node-lease"]},
        {"level": "Metadata"},
    ],
}

#: kwok's pod and node stages are its defaults; nodes are managed only when
#: annotated, so a test can also make a node that no kubelet runs.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass
class ControlPlane:
    """A real Kubernetes control plane on loopback for one test session."""

    root: Path
    #: audit reads too (get/list) of the "remediator" user, for the scale bench
    audit_reads: bool = False
    #: client QPS of the controller-manager and scheduler (fleets of thousands of pods)
    controller_qps: int = 50
    processes: list[Process] = field(default_factory=list)
    url: str = ""
    kubeconfig: Path = Path()

    @property
    def ca(self) -> Path:
        return self.root / "pki" / "ca.crt"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def start(self) -> ControlPlane:
        pki = self.root / "pki"
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        make_pki(pki)
        # Each system component has its own identity; the admin is system:masters.
        tokens = [
            (ADMIN_TOKEN, "admin", "admin", "system:masters"),
            (REMEDIATOR_TOKEN, "remediator", "remediator", "system:masters"),
            ("realstack-kcm-91c2", "system:kube-controller-manager", "kcm", ""),
            ("realstack-sched-7b3e", "system:kube-scheduler", "scheduler", ""),
            ("realstack-kwok-2d8a", "kwok", "kwok", "system:masters"),
        ]
        (pki / "tokens.csv").write_text("".join(
            f'{t},{u},{uid},"{g}"\n' if g else f"{t},{u},{uid}\n" for t, u, uid, g in tokens))
        policy = AUDIT_POLICY
        if self.audit_reads:
            policy = {**AUDIT_POLICY, "rules": [
                {"level": "Metadata", "users": ["remediator"]}, *AUDIT_POLICY["rules"]]}
        (self.root / "audit-policy.yaml").write_text(yaml.safe_dump(policy))

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd = start("etcd", [
            str(binary("etcd")), "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ], logs)
        self.processes.append(etcd)
        wait_until("etcd health", lambda: httpx.get(
            f"http://127.0.0.1:{etcd_port}/health", timeout=2).status_code == 200, etcd)

        self.url = f"https://127.0.0.1:{api_port}"
        api = start("kube-apiserver", [
            str(binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={api_port}",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.root / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-cluster-ip-range=10.96.0.0/16",
            f"--audit-policy-file={self.root / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking", "--audit-log-format=json",
            "--profiling=false", "--v=1",
        ], logs)
        self.processes.append(api)
        wait_until("kube-apiserver readyz", lambda: httpx.get(
            f"{self.url}/readyz", verify=str(self.ca), timeout=2,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200,
            api, timeout=120)

        self.kubeconfig = self.write_kubeconfig("admin", ADMIN_TOKEN)
        kcm_cfg = self.write_kubeconfig("kcm", "realstack-kcm-91c2")
        sched_cfg = self.write_kubeconfig("scheduler", "realstack-sched-7b3e")
        kwok_cfg = self.write_kubeconfig("kwok", "realstack-kwok-2d8a")

        self.processes.append(start("kube-controller-manager", [
            str(binary("kube-controller-manager")),
            f"--kubeconfig={kcm_cfg}", f"--authentication-kubeconfig={kcm_cfg}",
            f"--authorization-kubeconfig={kcm_cfg}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false", "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            # Each controller acts as its own ServiceAccount, as kubeadm runs it.
            "--use-service-account-credentials=true",
            f"--kube-api-qps={self.controller_qps}",
            f"--kube-api-burst={self.controller_qps * 2}",
            # Fast enough for tests: a drained node's pods are replaced in seconds.
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--v=1",
        ], logs))
        self.processes.append(start("kube-scheduler", [
            str(binary("kube-scheduler")),
            f"--kubeconfig={sched_cfg}", f"--authentication-kubeconfig={sched_cfg}",
            f"--authorization-kubeconfig={sched_cfg}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false", "--v=1",
            f"--kube-api-qps={self.controller_qps}",
            f"--kube-api-burst={self.controller_qps * 2}",
        ], logs))
        self.processes.append(start("kwok", [
            str(binary("kwok")), f"--kubeconfig={kwok_cfg}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{free_port()}",
            "--node-ip=127.0.0.1", "--cidr=10.244.0.0/16",
            # Node Leases renewed as a kubelet does (the heartbeat stage only
            # refreshes status every ~10 min): without them the node lifecycle
            # controller marks the nodes Unknown after its grace period and
            # every pod on them NotReady.
            "--node-lease-duration-seconds=40",
            f"--config={bin_dir() / 'kwok-stages.yaml'}",
        ], logs))
        # The controllers are up when the namespace controller has made the
        # default ServiceAccount (the token controller's root CA too).
        wait_until("the default ServiceAccount", lambda: self.get(
            "/api/v1/namespaces/default/serviceaccounts/default").status_code == 200,
            self.processes[-3], timeout=90)
        return self

    def write_kubeconfig(self, user: str, token: str) -> Path:
        path = self.root / f"kubeconfig-{user}"
        path.write_text(yaml.safe_dump(kubeconfig_for(self.url, self.ca, token, user)))
        return path

    # A small admin client for fixtures and assertions (the product under test
    # uses the real kubernetes client through its own seam).
    def request(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN,
                content_type: str = "application/json", params: dict[str, str] | None = None,
                timeout: float = 30.0) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.request(method, self.url + path, headers=headers, content=content,
                             params=params, verify=str(self.ca), timeout=timeout)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def read(self, path: str) -> dict[str, Any]:
        r = self.get(path)
        r.raise_for_status()
        return r.json()

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        r = self.request("POST", path, obj)
        if r.status_code >= 400:
            raise AssertionError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def apply_objects(self, objects: Iterable[dict[str, Any]], field_manager: str = "realstack",
                      dry_run: bool = False) -> list[httpx.Response]:
        """Server-side apply, as ``kubectl apply --server-side`` sends it."""
        out = []
        for obj in objects:
            path = self.object_path(obj)
            params = {"fieldManager": field_manager, "force": "true"}
            if dry_run:
                params["dryRun"] = "All"
            out.append(self.request("PATCH", path, obj, params=params,
                                    content_type="application/apply-patch+yaml"))
        return out

    def object_path(self, obj: dict[str, Any]) -> str:
        """The REST path of an object, found through API discovery."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        resources = self.read(base)["resources"]
        res = next((r for r in resources if r["kind"] == kind and "/" not in r["name"]), None)
        if res is None:
            raise AssertionError(f"{api_version} {kind} not served by the API server")
        ns = obj["metadata"].get("namespace")
        if res["namespaced"]:
            ns = ns or "default"
            return f"{base}/namespaces/{ns}/{res['name']}/{obj['metadata']['name']}"
        return f"{base}/{res['name']}/{obj['metadata']['name']}"

    def audit_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.audit_log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def audited(self, verb: str, resource: str, *, namespace: str | None = None,
                name: str | None = None, subresource: str = "") -> list[dict[str, Any]]:
        """The audit log's entries for ``verb`` on ``resource[/subresource]``
        (optionally in ``namespace``, on ``name``), oldest first."""
        out = []
        for e in self.audit_events():
            ref = e.get("objectRef", {})
            if (e["verb"] == verb and ref.get("resource") == resource
                    and ref.get("subresource", "") == subresource
                    and (namespace is None or ref.get("namespace") == namespace)
                    and (name is None or ref.get("name") == name)):
                out.append(e)
        return out

    def logs_tail(self) -> str:
        return "\n\n".join(f"--- {p.name} ({p.log})\n{tail(p.log, 25)}" for p in self.processes)

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

