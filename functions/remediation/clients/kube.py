"""The Kubernetes seam: the ONLY module that imports ``kubernetes``, lazily.

``KubeAccess`` implements the pipeline's ``ClusterAccess`` port over the
official client (37.x): ``LiveFacts`` reads (plain dicts, exactly as the API
serves them), ``KubeWriter`` applies Plan steps. Objects travel as dicts both
ways so live facts and snapshot facts look alike: every request goes through
:meth:`_Api.request` (the client's own configuration, auth, TLS, connection
pool and retries; the REST path from :data:`KINDS`), never through the typed
API methods. Those validate a dict body into a pydantic model and serialise
it back (a MicroTime with a zero fraction then loses its six digits and the
API server answers 400), and they cost about 0.7 ms of validation per call
plus some 0.6 s of imports on the first one.

Error mapping (the ``kind: Status`` the API answers):
- 429, 5xx, timeouts, refused connections -> ``DependencyUnavailable`` (retry);
- 404 on delete/evict -> done (the pod is already gone); 403 on evict with
  the cause ``NamespaceTerminating`` -> done (the pod goes with its namespace);
- any other 4xx -> ``ActionFailed`` with the API's message (no retry).
Every call carries ``_request_timeout``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote

from .. import metrics
from ..credentials import ScopedCredential
from ..errors import ActionFailed, DependencyUnavailable, InvalidInput
from ..executor import StepResult
from ..model import ObjectRef, Step, thaw
from ..settings import KubeSettings

log = logging.getLogger("remediation.kube")

# kind -> (API group/version prefix, plural, namespaced): the REST path.
KINDS: Mapping[str, tuple[str, str, bool]] = {
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "Namespace": ("/api/v1", "namespaces", False),
    "Event": ("/api/v1", "events", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices", True),
}


_VERBS = {"POST": "create", "PUT": "replace", "DELETE": "delete"}


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def rest_path(kind: str, namespace: str | None = None, name: str = "", sub: str = "") -> str:
    """``/apis/apps/v1/namespaces/llm/deployments/vllm/scale`` and the like;
    ``namespace=None`` on a namespaced kind: across all namespaces."""
    prefix, plural, namespaced = KINDS[kind]
    path = prefix
    if namespaced and namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    return f"{path}/{sub}" if sub else path


PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


def _status_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason or exc.status)
    except (ValueError, TypeError):
        return str(exc.reason or exc.status)


def _status_causes(exc: Any) -> set[str]:
    """The ``details.causes[].reason`` of the API's ``kind: Status`` answer."""
    try:
        body = json.loads(exc.body or "{}")
        causes = (body.get("details") or {}).get("causes") or []
        return {str(c.get("reason")) for c in causes if isinstance(c, dict)}
    except (ValueError, TypeError, AttributeError):
        return set()


def _map_error(exc: BaseException, what: str) -> Exception:
    """Translate a client/transport exception into our error tree."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        msg = f"{what}: {status} {_status_message(exc)}"
        if status == 429 or status >= 500 or status == 0:
            delay = 5.0
            retry_after = (exc.headers or {}).get("Retry-After") if exc.headers else None
            if retry_after and str(retry_after).isdigit():
                delay = float(retry_after)
            return DependencyUnavailable(msg, delay=delay, unanswered=status not in (429, 503))
        return ActionFailed(msg)
    # urllib3 timeouts, refused connections, TLS errors, an answer that is not
    # JSON (a proxy's error page): all retryable. Anything else is our bug and
    # must surface as itself, not as "the API is down, retry".
    import urllib3

    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, ValueError)):
        cause = getattr(exc, "reason", None) if isinstance(
            exc, urllib3.exceptions.MaxRetryError) else exc
        never_sent = isinstance(cause, (urllib3.exceptions.NewConnectionError,
                                        urllib3.exceptions.ConnectTimeoutError,
                                        ConnectionRefusedError))
        return DependencyUnavailable(f"{what}: {type(exc).__name__}", unanswered=not never_sent)
    return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))


def build_api_client(settings: KubeSettings, credential: ScopedCredential | None = None) -> Any:
    """An ``ApiClient`` for the ambient identity or for a scoped credential."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if not settings.snapshot:
        try:
            if settings.kubeconfig or os.path.exists(os.path.expanduser("~/.kube/config")):
                config.load_kube_config(config_file=settings.kubeconfig or None,
                                        context=settings.context or None,
                                        client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)
        except Exception as exc:  # noqa: BLE001 - config errors vary by source
            if credential is None or not credential.api_server:
                raise ActionFailed(f"no Kubernetes configuration: {exc}") from None
    if credential is not None and credential.token:
        if credential.api_server:
            cfg.host = credential.api_server
        cfg.api_key = {"BearerToken": credential.token.reveal()}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        # kubeconfig loading installs a hook that rewrites api_key with the
        # kubeconfig's own token on every request: drop it, or the scoped token
        # would silently be replaced by the ambient identity.
        cfg.refresh_api_key_hook = None
        # the scoped token replaces the ambient identity entirely
        cfg.cert_file = None
        cfg.key_file = None
        cfg.username = None
        cfg.password = None
        if credential.ca_crt:
            fd, path = tempfile.mkstemp(prefix="remediation-ca-", suffix=".crt")
            with os.fdopen(fd, "w") as fh:
                fh.write(credential.ca_crt)
            cfg.ssl_ca_cert = path
    cfg.retries = 1  # one reconnect at most; the pipeline answers "retry" otherwise
    return client.ApiClient(cfg)


class _Api:
    """Shared plumbing: raw JSON requests over one ApiClient."""

    def __init__(self, api_client: Any, timeout: float) -> None:
        self.api_client = api_client
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *,
                query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        """``method path`` with ``body`` sent exactly as given (JSON); the
        answer as plain JSON. Non-2xx answers raise ``ApiException``, as the
        typed methods do, with the API's ``kind: Status`` body."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api_client.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"])
        with metrics.dependency_call("kubernetes"):
            resp = self.api_client.call_api(*request, _request_timeout=self.timeout)
            resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return json.loads(resp.data) if resp.data else {}

    def call(self, what: str, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """:meth:`request` with errors mapped into our tree."""
        try:
            return self.request(method, path, body, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped below
            raise _map_error(exc, what) from None

    def read(self, what: str, path: str) -> dict[str, Any] | None:
        """GET ``path``; None when it does not exist (404)."""
        from kubernetes.client.exceptions import ApiException

        try:
            got: dict[str, Any] | None = self.request("GET", path)
            return got
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _map_error(exc, what) from None
        except Exception as exc:  # noqa: BLE001 - mapped
            raise _map_error(exc, what) from None

    def close(self) -> None:
        try:
            self.api_client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


class LiveFacts(_Api):
    """ClusterFacts over the live API (read-only)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind not in KINDS:  # an owner we do not model (Job, RayCluster...): unknown,
            return None        # as the snapshot reader answers
        return self.read(f"get {kind}/{namespace}/{name}", rest_path(kind, namespace, name))

    def list(self, kind: str, namespace: str | None = None, *,
             labels: Mapping[str, str] | None = None,
             node: str | None = None) -> list[dict[str, Any]]:
        if kind not in KINDS:
            return []
        query: dict[str, str] = {}
        if labels:
            query["labelSelector"] = _selector(labels)
        if node is not None:
            query["fieldSelector"] = f"spec.nodeName={node}"
        body = self.call(f"list {kind}", "GET", rest_path(kind, namespace), query=query)
        items = body.get("items") or []
        for item in items:  # list items come without kind/apiVersion
            item.setdefault("kind", kind)
        return items


class KubeWriter(_Api):
    """Applies Plan steps; one instance per execution (per credential)."""

    def __init__(self, api_client: Any, timeout: float, component: str,
                 cleanup: str = "", owns_client: bool = True) -> None:
        super().__init__(api_client, timeout)
        self.component = component
        self._cleanup = cleanup
        self._owns_client = owns_client  # False: a shared ambient client, kept open

    def apply(self, step: Step, *, dry_run: bool) -> StepResult:
        from kubernetes.client.exceptions import ApiException

        dr = {"dryRun": "All"} if dry_run else {}
        body = thaw(step.body)
        what = f"{step.verb} {step.ref}"
        done = "dry run accepted" if dry_run else ""
        try:
            if step.verb == "patch":
                namespace = step.namespace if KINDS[step.kind][2] else None
                self.request("PATCH", rest_path(step.kind, namespace, step.name), body,
                             query=dr, content_type=PATCH_TYPES[step.patch_type])
                return StepResult(step, True, done or "patched", 200)
            if step.verb == "scale":
                self.request("PATCH", rest_path(step.kind, step.namespace, step.name, "scale"),
                             body, query=dr, content_type=PATCH_TYPES["merge"])
                return StepResult(step, True, done or "scaled", 200)
            if step.verb == "delete":
                self.request("DELETE", rest_path(step.kind, step.namespace, step.name),
                             body or None, query=dr)
                return StepResult(step, True, done or "deleted", 200)
            if step.verb == "evict":
                eviction: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                            "metadata": {"name": step.name, "namespace": step.namespace},
                            "deleteOptions": dict(body) if body else {}}
                if dry_run:
                    eviction["deleteOptions"]["dryRun"] = ["All"]
                self.request("POST", rest_path("Pod", step.namespace, step.name, "eviction"),
                             eviction)
                return StepResult(step, True, done or "evicted", 201)
            raise ActionFailed(f"{what}: unknown verb")
        except ApiException as exc:
            if exc.status == 404 and step.verb in ("delete", "evict"):
                return StepResult(step, True, "already gone", 404)
            if exc.status == 409 and step.verb in ("delete", "evict"):
                # UID precondition failed: the pod we meant is gone, replaced by another
                return StepResult(step, True, "already replaced", 409)
            if exc.status == 429 and step.verb == "evict":
                return StepResult(step, False, f"blocked: {_status_message(exc)}", 429)
            if (exc.status == 403 and step.verb == "evict"
                    and "NamespaceTerminating" in _status_causes(exc)):
                # The pod's namespace is being deleted: the API refuses new
                # objects there (an Eviction too), and the namespace controller
                # deletes the pod anyway. kubectl drain waits for such pods;
                # verification does the same here (the pod must leave the node).
                return StepResult(step, True, "namespace terminating: the pod is being "
                                              "deleted with it", 403)
            if (exc.status == 500 and step.verb == "evict"
                    and "more than one PodDisruptionBudget" in _status_message(exc)):
                return StepResult(step, False, f"refused: {_status_message(exc)}", 500)
            if exc.status == 409 and step.verb == "patch":
                # resourceVersion guard: someone changed it since we planned; re-plan
                raise DependencyUnavailable(f"{what}: 409 {_status_message(exc)}", delay=1.0) \
                    from None
            raise _map_error(exc, what) from None
        except (ActionFailed, DependencyUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001
            raise _map_error(exc, what) from None

    def record_event(self, target: ObjectRef, *, reason: str, message: str,
                     type: str = "Normal") -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ns = target.namespace or "default"
        api_version = {"Deployment": "apps/v1", "StatefulSet": "apps/v1"}.get(target.kind, "v1")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{target.name[:40]}.remediation-", "namespace": ns},
            "involvedObject": {"kind": target.kind, "namespace": target.namespace,
                               "name": target.name, "apiVersion": api_version},
            "reason": reason, "message": message, "type": type,
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.request("POST", rest_path("Event", ns), body)
        except Exception as exc:  # noqa: BLE001 - an audit Event is best effort
            log.warning("could not record Event on %s: %s", target, _map_error(exc, "event"))

    def close(self) -> None:
        if self._owns_client:
            super().close()
        if self._cleanup:
            try:
                os.unlink(self._cleanup)
            except OSError:
                pass


class KubeAccess:
    """ClusterAccess over the live API: ambient identity reads facts; each
    execution gets a writer built from its own (Vault-issued) credential.

    The client's modules are imported when the access is built (start-up, so
    before the app reports ready), not by the first event: a live function
    needs them for every event, and some 0.3 s of imports is better paid
    before a storm than inside its answer. Nothing is read or connected yet."""

    live = True

    def __init__(self, settings: KubeSettings, clusters: tuple[str, ...] = ("",)) -> None:
        import kubernetes.client  # imported at start-up: see the class docstring
        import kubernetes.config  # noqa: F401

        self.settings = settings
        #: the cluster names this access serves: one API client each, at most
        #: (issue 15: an event's ``cluster`` value never makes a new client)
        self.clusters = frozenset(clusters)
        self._lock = threading.Lock()
        self._facts: dict[str, LiveFacts] = {}
        self._writers: dict[str, Any] = {}

    def _check(self, cluster: str) -> None:
        if cluster not in self.clusters:
            raise InvalidInput(f"cluster {cluster[:80]!r} is not configured here "
                               "(REMEDIATION_CLUSTER)", attribute="cluster")

    def facts(self, cluster: str) -> LiveFacts:
        self._check(cluster)
        with self._lock:
            if cluster not in self._facts:
                self._facts[cluster] = LiveFacts(build_api_client(self.settings),
                                                 self.settings.timeout)
            return self._facts[cluster]

    def writer(self, cluster: str, credential: ScopedCredential) -> KubeWriter:
        self._check(cluster)
        if credential.cluster and credential.cluster != cluster and cluster:
            raise ActionFailed(f"credential for cluster {credential.cluster!r} offered for "
                               f"writes to {cluster!r}: refused")
        if not credential.token:
            # The ambient identity (no Vault): one pooled client per cluster,
            # not a kubeconfig load and a new connection pool per execution.
            with self._lock:
                if cluster not in self._writers:
                    self._writers[cluster] = build_api_client(self.settings)
                shared = self._writers[cluster]
            return KubeWriter(shared, self.settings.timeout, self.settings.reporting_component,
                              owns_client=False)
        api_client = build_api_client(self.settings, credential)
        cleanup = api_client.configuration.ssl_ca_cert if credential.ca_crt else ""
        return KubeWriter(api_client, self.settings.timeout,
                          self.settings.reporting_component, cleanup=cleanup or "")

    def close(self) -> None:
        with self._lock:
            for f in self._facts.values():
                f.close()
            self._facts.clear()
            for c in self._writers.values():
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._writers.clear()


class KubeLeases:
    """The ledger's LeaseStore (``guard.lease_ledger``) over
    coordination.k8s.io/v1 Leases in one namespace; every call has the
    configured timeout. 409 AlreadyExists -> LeaseExists, 409 Conflict and
    404 on replace/delete -> LeaseConflict, 404 on create (no such namespace)
    and 429/5xx/transport -> DependencyUnavailable. Bodies go as plain JSON
    (:meth:`_Api.request`): their MicroTimes must reach the API as written."""

    def __init__(self, api_client: Any, namespace: str, timeout: float) -> None:
        self._api = _Api(api_client, timeout)
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: KubeSettings) -> KubeLeases:
        return cls(build_api_client(settings), settings.self_namespace, settings.timeout)

    def _path(self, name: str = "") -> str:
        return rest_path("Lease", self.namespace, name)

    def _raise(self, exc: BaseException, what: str, *, creating: bool = False) -> NoReturn:
        from kubernetes.client.exceptions import ApiException

        from ..guard.lease_ledger import LeaseConflict, LeaseExists

        if isinstance(exc, ApiException) and exc.status == 409:
            reason = ""
            try:
                reason = str(json.loads(exc.body or "{}").get("reason") or "")
            except (ValueError, TypeError):
                pass
            raise (LeaseExists if reason == "AlreadyExists" else LeaseConflict)(
                f"{what}: {_status_message(exc)}") from None
        if isinstance(exc, ApiException) and exc.status == 404:
            if creating:  # a create finds no namespace, not a Lease that went away
                raise DependencyUnavailable(
                    f"{what}: the ledger namespace {self.namespace!r} does not exist "
                    "(REMEDIATION_NAMESPACE); nothing can be claimed until it does",
                    delay=30.0) from None
            raise LeaseConflict(f"{what}: gone") from None
        raise _map_error(exc, what) from None

    def _write(self, method: str, name: str, body: Mapping[str, Any], *,
               creating: bool = False) -> dict[str, Any]:
        what = f"{_VERBS[method]} lease {name}"
        try:
            written: dict[str, Any] = self._api.request(
                method, self._path("" if creating else name), dict(body))
            return written
        except Exception as exc:  # noqa: BLE001 - mapped
            self._raise(exc, what, creating=creating)

    def create(self, name: str, *, labels: Mapping[str, str],
               annotations: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._write("POST", name, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": dict(labels), "annotations": dict(annotations)},
            "spec": dict(spec)}, creating=True)

    def get(self, name: str) -> dict[str, Any] | None:
        return self._api.read(f"read lease {name}", self._path(name))

    def replace(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        return self._write("PUT", lease["metadata"]["name"], lease)

    def delete(self, name: str, *, resource_version: str) -> None:
        self._write("DELETE", name, {"apiVersion": "v1", "kind": "DeleteOptions",
                                     "preconditions": {"resourceVersion": resource_version}})

    def list(self, labels: Mapping[str, str], *,
             status_in: Any = None) -> list[dict[str, Any]]:
        from ..guard.lease_ledger import STATUS_LABEL

        selector = _selector(labels)
        if status_in:  # set-based: the server filters, the claim reads only what counts
            selector += f",{STATUS_LABEL} in ({','.join(sorted(status_in))})"
        doc = self._api.call("list leases", "GET", self._path(),
                             query={"labelSelector": selector.lstrip(",")})
        return list(doc.get("items") or [])

    def close(self) -> None:
        self._api.close()
