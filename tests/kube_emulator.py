"""A stateful Kubernetes API server for tests (a test double; no controllers run).

Why not kmock: PyPI ``kmock`` (0.8) is asyncio-based and lacks PUT, eviction,
field selectors, resourceVersion conflicts, generateName, strategic-merge list
semantics and 201 on create (see shared/reference/vault-opa-kubernetes.md).
Adding all of that through its reaction DSL would mean re-implementing most of
the verbs anyway, on top of an event loop in a second thread. This module is a
self-contained server on stdlib ``http.server.ThreadingHTTPServer`` in a
daemon thread: no extra dependency, synchronous, every status code, header and
byte under our control, and one lock guarding the whole store.

The product talks to it through the real ``kubernetes`` client over HTTP::

    emu = KubeEmulator().start()          # or the ``kube_emulator`` fixture
    emu.add({"apiVersion": "v1", "kind": "Pod", "metadata": {...}, ...})
    cfg = kubernetes.client.Configuration(host=emu.url)
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))

What it emulates (Kubernetes semantics unless listed under "Deviations"):

* discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``,
  ``/apis/<g>/<v>``), GET, LIST (namespaced and all-namespaces, labelSelector,
  fieldSelector, limit/continue, items without kind/apiVersion for built-in
  types like the real API), WATCH (chunked JSON lines, ADDED/MODIFIED/DELETED,
  ``resourceVersion`` and ``timeoutSeconds``), POST (201, uid, resourceVersion,
  creationTimestamp, generation, generateName, 409 AlreadyExists), PUT (409
  Conflict on a stale resourceVersion), PATCH (strategic merge, JSON merge,
  JSON patch; strategic merge on a custom resource is 415 like the real API),
  DELETE (returns the object; finalizers keep it with a deletionTimestamp;
  DeleteOptions preconditions), DELETE collection, ``dryRun=All`` on every write;
* subresources ``status`` (writes touch only ``.status``; main-resource writes
  keep the old ``.status``), ``scale`` (autoscaling/v1 Scale) and
  ``pods/<name>/eviction`` with PodDisruptionBudget arithmetic;
* ``metadata.generation`` bumps on spec changes (Deployments also on annotation
  changes, custom resources on any non-metadata, non-status change);
  ``resourceVersion`` is a global monotonic integer bumped by every write that
  changes the object (a no-op write keeps it, as in Kubernetes);
* immutable fields: Pod spec (except images, activeDeadlineSeconds,
  tolerations, terminationGracePeriodSeconds, schedulingGates) and workload
  ``spec.selector`` answer 422 Invalid;
* time fields that the real decoder parses strictly: a Lease's
  ``acquireTime``/``renewTime`` and an Event's ``eventTime`` (MicroTime:
  exactly six fraction digits) and ``firstTimestamp``/``lastTimestamp``
  (RFC 3339) answer 400 BadRequest when they do not parse;
* errors are always a ``kind: Status`` JSON body with ``Content-Type:
  application/json``;
* bearer-token auth with per-token namespace/verb/resource scope
  (:meth:`KubeEmulator.require_tokens`), a request log, fault injection
  (:meth:`fail`, :meth:`delay`) and write hooks (:meth:`on_write`) standing in
  for controllers.

Deviations from a real API server (deliberate, for deterministic tests):

* no controllers, scheduler, kubelet or garbage collector: nothing is created,
  scheduled or cascaded (except that deleting a Namespace deletes the objects
  in it at once); register :meth:`on_write` hooks to play a controller. One
  is installed by default, :func:`rollout_controller`: a workload whose spec
  changes over HTTP shows its rollout complete at once (``controllers=False``
  or :meth:`KubeEmulator.stall_rollouts` for a rollout that never finishes);
* deletion is immediate (like ``gracePeriodSeconds=0``) unless the object has
  finalizers, so a drained pod is gone when the eviction answers;
* PodDisruptionBudget status is computed at eviction time from the stored
  pods (there is no disruption controller; :meth:`sync_pdbs` runs one pass on
  demand); a pod whose controller cannot be
  resolved counts as one expected pod instead of failing the budget
  (Kubernetes would set ``disruptionsAllowed: 0`` for it);
* core/v1 and events.k8s.io/v1 Events are two separate stores;
* no admission, no schema validation beyond the checks listed above, no
  managedFields, no server-side apply (``application/apply-patch+yaml`` is 415),
  no ``resourceVersionMatch``; Namespaces are not required to exist unless
  ``KubeEmulator(require_namespaces=True)``;
* a client whose requests default to a short timeout (``kube_api_client``: 5 s)
  ends an idle watch with a read timeout: pass ``_request_timeout`` longer
  than ``timeout_seconds`` for long watches;
* objects added through the Python API (:meth:`add`, :meth:`load`,
  :meth:`patch`) are stored as given, ``status`` included, and fire watch
  events but not :meth:`on_write` hooks. Objects created over HTTP lose their
  ``status`` when the type has a status subresource, as in Kubernetes (Pods
  get ``phase: Pending``, Namespaces ``phase: Active``; Nodes keep theirs).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DEFAULT_RESOURCES",
    "ApiError",
    "KubeEmulator",
    "RecordedRequest",
    "ResourceType",
    "TokenScope",
    "json_merge_patch",
    "json_patch",
    "parse_label_selector",
    "strategic_merge_patch",
]

class _QuietServer(ThreadingHTTPServer):
    """A client that goes away (a pool closing an idle keep-alive connection,
    a killed worker) is normal for an API server: no traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """One REST resource.

    ``generation``: "none", "spec", "spec+annotations" (Deployments) or
    "custom" (custom resources: anything but metadata and status).
    ``status_on_create``: "clear" (Kubernetes drops user-set status), "keep",
    or a dict used as the initial status.
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    generation: str = "none"
    status_on_create: str | Mapping[str, Any] = "keep"
    custom: bool = False
    field_labels: tuple[str, ...] = ()
    list_kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``pods``: how Kubernetes names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind_name(self) -> str:
        return self.list_kind or f"{self.kind}List"


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_EVENT_V1_FIELDS = (
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
)

DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        ("status", "eviction"),
        "spec",
        {"phase": "Pending"},
        field_labels=_POD_FIELDS,
    ),
    ResourceType(
        "", "v1", "nodes", "Node", False, ("no",), ("status",), field_labels=("spec.unschedulable",)
    ),
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        ("status",),
        status_on_create={"phase": "Active"},
        field_labels=("status.phase",),
    ),
    ResourceType("", "v1", "events", "Event", True, ("ev",), field_labels=_EVENT_FIELDS),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, (), field_labels=("type",)),
    ResourceType(
        "", "v1", "services", "Service", True, ("svc",), ("status",), status_on_create="clear"
    ),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        ("deploy",),
        ("status", "scale"),
        "spec+annotations",
        "clear",
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        ("rs",),
        ("status", "scale"),
        "spec",
        "clear",
        field_labels=("status.replicas",),
    ),
    ResourceType(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        True,
        ("sts",),
        ("status", "scale"),
        "spec",
        "clear",
    ),
    ResourceType(
        "apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), "spec", "clear"
    ),
    ResourceType(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        True,
        ("pdb",),
        ("status",),
        "spec",
        "clear",
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    ResourceType(
        "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)
    ),
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "Job",
        True,
        (),
        ("status",),
        "spec",
        "clear",
        field_labels=("status.successful",),
    ),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",), "spec", "clear"),
    ResourceType(
        "events.k8s.io", "v1", "events", "Event", True, ("ev",), field_labels=_EVENT_V1_FIELDS
    ),
    ResourceType(
        "serving.kserve.io",
        "v1beta1",
        "inferenceservices",
        "InferenceService",
        True,
        ("isvc",),
        ("status",),
        "custom",
        "clear",
        custom=True,
    ),
)

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A failure answered as a ``kind: Status`` body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = "",
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = _REASONS.get(code, "") if reason == "" else reason
        self.details = dict(details) if details else None
        self.headers = dict(headers or {})

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType | None, name: str = "", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if rt is not None:
        d["group"] = rt.group
        d["kind"] = rt.plural
    d.update(extra)
    return d


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', details=_details(rt, name))


def _conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details=_details(rt, name),
    )


_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def _invalid(rt: ResourceType, name: str, field_path: str, what: str) -> ApiError:
    return ApiError(
        422,
        f'{rt.kind} "{name}" is invalid: {field_path}: {what}',
        details=_details(
            rt, name, causes=[{"reason": "FieldValueInvalid", "message": what, "field": field_path}]
        ),
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# metav1.MicroTime is parsed with RFC3339Micro ("2006-01-02T15:04:05.000000Z07:00":
# exactly six fraction digits); metav1.Time with RFC3339 (Go accepts an optional
# fraction). A value that does not parse fails decoding: 400 BadRequest, before
# any validation, as the API server answers it.
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_TIME_FIELDS: Mapping[str, tuple[tuple[str, str, re.Pattern[str], str], ...]] = {
    "Lease": (("spec", "acquireTime", _MICRO_TIME, "2006-01-02T15:04:05.000000Z07:00"),
              ("spec", "renewTime", _MICRO_TIME, "2006-01-02T15:04:05.000000Z07:00")),
    "Event": (("", "eventTime", _MICRO_TIME, "2006-01-02T15:04:05.000000Z07:00"),
              ("", "firstTimestamp", _TIME, "2006-01-02T15:04:05Z07:00"),
              ("", "lastTimestamp", _TIME, "2006-01-02T15:04:05Z07:00")),
}


def _check_time_formats(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    for section, fld, pattern, layout in _TIME_FIELDS.get(rt.kind, ()):
        holder = obj.get(section) if section else obj
        value = holder.get(fld) if isinstance(holder, Mapping) else None
        if value is None:
            continue
        if not isinstance(value, str) or not pattern.match(value):
            raise _bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f'parsing time {json.dumps(value)} as "{layout}": cannot parse'
            )


_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)

# --------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$")
_KEY_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h,n>3`` into requirements."""
    if not text:
        return []
    reqs: list[Requirement] = []
    for term in _split_top_level(text):
        m = _SET_RE.match(term)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
        elif term.startswith("!"):
            reqs.append((term[1:].strip(), "!", ()))
        else:
            for op in ("!=", "==", "=", ">", "<"):
                if op in term:
                    k, v = term.split(op, 1)
                    reqs.append((k.strip(), "=" if op == "==" else op, (v.strip(),)))
                    break
            else:
                reqs.append((term, "exists", ()))
        key = reqs[-1][0]
        if not _KEY_RE.match(key):
            raise _bad_request(
                f"unable to parse requirement: invalid label key {key!r} in {text!r}"
            )
    return reqs


def _labels_match(reqs: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and value == values[0]:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in (">", "<"):
            try:
                a, b = int(value or ""), int(values[0])
            except ValueError:
                return False
            if (op == ">" and not a > b) or (op == "<" and not a < b):
                return False
    return True


def _selector_requirements(selector: Mapping[str, Any] | None) -> list[Requirement] | None:
    """A metav1.LabelSelector as requirements; None (nil selector) matches nothing."""
    if selector is None:
        return None
    reqs: list[Requirement] = [
        (k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append((expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return reqs


def _selector_string(selector: Mapping[str, Any] | None) -> str:
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, key, vals = expr["operator"], expr["key"], ",".join(expr.get("values") or ())
        parts.append(
            {
                "In": f"{key} in ({vals})",
                "NotIn": f"{key} notin ({vals})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(parts)


def _parse_field_selector(text: str | None, rt: ResourceType) -> list[tuple[str, str, str]]:
    if not text:
        return []
    allowed = {"metadata.name", "metadata.namespace", *rt.field_labels}
    out = []
    for term in _split_top_level(text):
        for op in ("!=", "==", "="):
            if op in term:
                k, v = term.split(op, 1)
                k = k.strip()
                if k not in allowed:
                    raise _bad_request(f"field label not supported: {k}")
                out.append((k, "!=" if op == "!=" else "=", v.strip()))
                break
        else:
            raise _bad_request(
                f"invalid field selector: {term!r}: expected key=value or key!=value"
            )
    return out


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    if path == "source":
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if cur is None:
        return "false" if path in ("spec.unschedulable", "spec.hostNetwork") else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _fields_match(reqs: Iterable[tuple[str, str, str]], obj: Mapping[str, Any]) -> bool:
    for key, op, value in reqs:
        actual = _field_value(obj, key)
        if (op == "=") != (actual == value):
            return False
    return True


# --------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------

_PRIMITIVE_MERGE = "<primitive>"
# (path suffix) -> merge key, from the patchStrategy/patchMergeKey tags of k8s.io/api.
_SMP_MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("volumes",): "name",
    ("volumeMounts",): "mountPath",
    ("volumeDevices",): "devicePath",
    ("env",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("ephemeralContainers", "ports"): "containerPort",
    ("spec", "ports"): "port",  # Service
    ("ownerReferences",): "uid",
    ("conditions",): "type",
    ("addresses",): "type",  # Node status
    ("secrets",): "name",  # ServiceAccount
    ("resourceClaims",): "name",
    ("schedulingGates",): "name",
    ("topologySpreadConstraints",): "topologyKey",
    ("finalizers",): _PRIMITIVE_MERGE,
}


def _merge_key(path: tuple[str, ...]) -> str | None:
    for n in (2, 1):
        if len(path) >= n and path[-n:] in _SMP_MERGE_KEYS:
            return _SMP_MERGE_KEYS[path[-n:]]
    return None


_DELETE = object()


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge_patch(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch (built-in types only) and return the result.

    Maps merge recursively, ``null`` deletes a key, lists are replaced unless
    their field has a merge key in ``_SMP_MERGE_KEYS``; supports ``$patch``
    (replace/delete/merge), ``$retainKeys``, ``$deleteFromPrimitiveList/<f>``
    and ignores ``$setElementOrder/<f>``.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    deferred = []
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            deferred.append((key.split("/", 1)[1], value))
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, path + (key,))
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, path + (key,))
        else:
            result[key] = value
    for fname, values in deferred:
        if isinstance(result.get(fname), list):
            result[fname] = [x for x in result[fname] if x not in values]
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or ())
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(original: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    mk = _merge_key(path)
    if mk is None:
        return _strip_directives(patch)
    current = copy.deepcopy(original) if isinstance(original, list) else []
    if mk == _PRIMITIVE_MERGE:
        return current + [x for x in patch if x not in current]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    for item in patch:
        if not isinstance(item, dict) or mk not in item:
            if isinstance(item, dict) and item.get("$patch") == "delete":
                continue
            raise ApiError(422, f"map: {item!r} does not contain declared merge key: {mk}")
        idx = next(
            (
                i
                for i, cur in enumerate(current)
                if isinstance(cur, dict) and cur.get(mk) == item[mk]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            current = [c for c in current if not (isinstance(c, dict) and c.get(mk) == item[mk])]
        elif idx is None:
            current.append(_strip_directives(item))
        else:
            current[idx] = strategic_merge_patch(current[idx], item, path)
    return current


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, dict) and tok in cur:
            cur = cur[tok]
        elif isinstance(cur, list) and tok.isdigit() and int(tok) < len(cur):
            cur = cur[int(tok)]
        else:
            raise ApiError(422, f"doc is missing path: {path!r}: missing value")
    return cur, tokens[-1]


def _jp_get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise ApiError(422, f"doc is missing path: {path!r}: missing value")


def _jp_remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise ApiError(422, f"unable to remove nonexistent key: {last}: missing value")


def _jp_add(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(
                422, f"replace operation does not apply: doc is missing key: {path}: missing value"
            )
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and (
            int(last) < len(parent) or (not replace and int(last) == len(parent))
        ):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise ApiError(
                422, f"add operation does not apply: doc is missing path: {path!r}: missing value"
            )
    else:
        raise ApiError(422, f"doc is missing path: {path!r}: missing value")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _bad_request(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _jp_add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _jp_remove(doc, path)
        elif kind == "replace":
            doc = _jp_add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            value = _jp_remove(doc, op["from"])
            doc = _jp_add(doc, path, value)
        elif kind == "copy":
            doc = _jp_add(doc, path, copy.deepcopy(_jp_get(doc, op["from"])))
        elif kind == "test":
            if not _json_equal(_jp_get(doc, path), op.get("value")):
                raise ApiError(422, f"testing value {path} failed: test failed")
        else:
            raise _bad_request(f"Unexpected kind: {kind}")
    return doc


# --------------------------------------------------------------------------
# Requests, auth, faults
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    token: str | None
    content_type: str | None
    body: Any
    status: int
    verb: str = ""
    resource: str = ""  # plural, or plural/subresource
    namespace: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class TokenScope:
    """What a bearer token may do. ``None`` means unrestricted on that axis.

    ``namespaces=None`` also allows cluster-scoped and all-namespace requests.
    ``resources`` holds plurals or ``plural/subresource`` (``pods/eviction``).
    """

    namespaces: frozenset[str] | None = None
    verbs: frozenset[str] | None = None
    resources: frozenset[str] | None = None
    user: str | None = None

    @classmethod
    def of(cls, value: TokenScope | Iterable[str] | str | None) -> TokenScope:
        if isinstance(value, TokenScope):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            value = [value]
        return cls(namespaces=frozenset(value))


@dataclass
class _Fault:
    status: int | None
    times: int | None
    method: str | None
    path_contains: str | None
    retry_after: float | None = None
    message: str | None = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass
class _Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    verb: str


@dataclass
class _Watch:
    rt: ResourceType
    namespace: str | None
    labels: list[Requirement]
    fields: list[tuple[str, str, str]]
    since: int
    initial: list[dict[str, Any]]
    deadline: float


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.setdefault("metadata", {}) if isinstance(obj, dict) else {}


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _scaled(value: Any, total: int, *, what: str) -> int:
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError as exc:
            raise ApiError(500, f"invalid {what}: {value}") from exc
        return -(
            -pct * total // 100
        )  # rounds up, like intstr.GetScaledValueFromIntOrPercent(.., true)
    return int(value)


def _qos_class(pod: Mapping[str, Any]) -> str:
    containers = list((pod.get("spec") or {}).get("containers") or []) + list(
        (pod.get("spec") or {}).get("initContainers") or []
    )
    any_set, guaranteed = False, bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


_POD_MUTABLE_SPEC = (
    "activeDeadlineSeconds",
    "tolerations",
    "terminationGracePeriodSeconds",
    "schedulingGates",
)
_STS_MUTABLE_SPEC = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _pod_spec_frozen(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    s = copy.deepcopy(dict(spec or {}))
    for k in _POD_MUTABLE_SPEC:
        s.pop(k, None)
    for key in ("containers", "initContainers"):
        for c in s.get(key) or []:
            c.pop("image", None)
    return s


# --------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------

WriteHook = Callable[[str, dict[str, Any], "dict[str, Any] | None", "KubeEmulator"], None]


def rollout_controller(event: str, obj: dict[str, Any], old: dict[str, Any] | None,
                       emulator: KubeEmulator) -> None:
    """A write hook playing the workload controllers at their fastest: when
    a workload's spec changes over HTTP (a rollout restart, a scale), its
    status at once shows the rollout complete, every replica updated, ready
    and available, as ``kubectl rollout status`` waits for (no pods are
    rolled); a pod of a ReplicaSet or StatefulSet deleted or evicted over
    HTTP is replaced at once (see :func:`_replace_pod`)."""
    if event == "DELETED" and obj.get("kind") == "Pod":
        _replace_pod(obj, emulator)
        return
    if event == "DELETED" or obj.get("kind") not in ("Deployment", "StatefulSet"):
        return
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if old is not None and (old.get("metadata") or {}).get("generation") == meta.get(
            "generation") and (old.get("spec") or {}) == spec:
        return
    replicas = spec.get("replicas", 1)
    status: dict[str, Any] = {"observedGeneration": meta.get("generation", 1),
                              "replicas": replicas, "updatedReplicas": replicas,
                              "readyReplicas": replicas, "availableReplicas": replicas}
    if obj["kind"] == "StatefulSet":
        revision = f"{meta.get('name')}-{meta.get('generation', 1)}"
        status.update(currentReplicas=replicas, currentRevision=revision,
                      updateRevision=revision)
    resource = "deployments" if obj["kind"] == "Deployment" else "statefulsets"
    emulator.patch(resource, meta.get("namespace"), meta["name"], {"status": status})


def _gpus(pod: Mapping[str, Any]) -> bool:
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        if any("nvidia.com/gpu" in (res.get(k) or {}) for k in ("limits", "requests")):
            return True
    return False


def _replace_pod(pod: dict[str, Any], emulator: KubeEmulator) -> None:
    """The ReplicaSet/StatefulSet controller and the scheduler, at their
    simplest: a deleted (evicted) pod owned by one is replaced at once by a
    Running, Ready pod on the first other schedulable, Ready node (one with
    GPUs when the pod asks for them; its nodeSelector honoured). No capacity
    accounting. No such node: the replacement stays Pending."""
    meta = pod.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if owner is None or owner.get("kind") not in ("ReplicaSet", "StatefulSet"):
        return
    if emulator.get("pods", meta.get("namespace"), meta["name"]) is not None:
        return  # not actually gone (finalizers)
    old_node = (pod.get("spec") or {}).get("nodeName", "")
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    chosen = ""
    for node in sorted(emulator.list("nodes"), key=lambda n: n["metadata"]["name"]):
        nmeta, nspec = node["metadata"], node.get("spec") or {}
        if nmeta["name"] == old_node or nspec.get("unschedulable"):
            continue
        if not all((nmeta.get("labels") or {}).get(k) == v for k, v in selector.items()):
            continue
        if _gpus(pod) and not ((node.get("status") or {}).get("allocatable") or {}).get(
                "nvidia.com/gpu"):
            continue
        if not any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (node.get("status") or {}).get("conditions") or []):
            continue
        chosen = nmeta["name"]
        break
    new = copy.deepcopy(pod)
    nm = new["metadata"]
    for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
        nm.pop(k, None)
    if owner["kind"] == "ReplicaSet":
        nm["name"] = f"{owner['name']}-{uuid.uuid4().hex[:5]}"
    if chosen:
        new.setdefault("spec", {})["nodeName"] = chosen
        new["status"] = {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}
    else:
        new.setdefault("spec", {}).pop("nodeName", None)
        new["status"] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    emulator.add(new)


class KubeEmulator:
    """An in-memory Kubernetes API server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        resources: Iterable[ResourceType] = DEFAULT_RESOURCES,
        require_namespaces: bool = False,
        server_version: str = "1.34",
        controllers: bool = True,
    ) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._types: list[ResourceType] = []
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._rv = 1000
        self._events: deque[
            tuple[int, tuple[str, str], str, dict[str, Any], dict[str, Any] | None]
        ] = deque(maxlen=10_000)
        self._faults: list[_Fault] = []
        self._delays: list[_Fault] = []
        self._tokens: dict[str, TokenScope] | None = None
        self._hooks: list[WriteHook] = []
        self.requests: list[RecordedRequest] = []
        self.require_namespaces = require_namespaces
        self.server_version = server_version
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for rt in resources:
            self.register(rt)
        #: with ``controllers`` (the default) :func:`rollout_controller` is
        #: installed, so workloads finish their rollouts; ``stall_rollouts()``
        #: removes it (a rollout that never completes).
        self.controllers = controllers
        if controllers:
            self._hooks.append(rollout_controller)

    def stall_rollouts(self) -> None:
        """From now on, rollouts never complete (no controller updates status)."""
        with self._lock:
            self._hooks[:] = [h for h in self._hooks if h is not rollout_controller]

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> KubeEmulator:
        if self._server is not None:
            return self
        server = _QuietServer((self._host, self._port), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kube-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("KubeEmulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget objects, requests, faults, tokens and hooks (types stay registered)."""
        with self._lock:
            self._objects = {rt.key: {} for rt in self._types}
            self._events.clear()
            self._faults.clear()
            self._delays.clear()
            self._tokens = None
            self._hooks[:] = [rollout_controller] if self.controllers else []
            self.requests.clear()
            self._changed.notify_all()

    # ---- types -------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        """Register (or replace) a resource type."""
        with self._lock:
            self._types = [
                t
                for t in self._types
                if (t.group, t.version, t.plural) != (rt.group, rt.version, rt.plural)
            ]
            self._types.append(rt)
            self._objects.setdefault(rt.key, {})

    @property
    def resource_types(self) -> tuple[ResourceType, ...]:
        return tuple(self._types)

    def resource_type(self, name: str, api_version: str | None = None) -> ResourceType:
        """Find a type by plural, ``plural.group``, kind, singular or short name."""
        candidates = self._types
        if api_version is not None:
            group, _, version = api_version.rpartition("/")
            candidates = [t for t in self._types if (t.group, t.version) == (group, version)]
        low = name.lower()
        for test in (
            lambda t: t.plural == low,
            lambda t: t.qualified == low,
            lambda t: t.kind == name,
            lambda t: t.singular == low,
            lambda t: low in t.short_names,
            lambda t: t.kind.lower() == low,
        ):
            found = [t for t in candidates if test(t)]
            if found:
                return min(found, key=lambda t: t.group != "")
        raise KeyError(
            f"unknown resource {name!r}"
            + (f" in {api_version}" if api_version else "")
            + "; register it with KubeEmulator.register(ResourceType(...))"
        )

    def _type_at(self, group: str, version: str, plural: str) -> ResourceType | None:
        for t in self._types:
            if (t.group, t.version, t.plural) == (group, version, plural):
                return t
        return None

    # ---- Python-side API (bypasses auth, faults and hooks) ----------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def add(self, obj: Any) -> Any:
        """Store objects as given (upsert), ``kubectl get -o yaml`` style.

        Accepts a dict, a ``kind: List`` dict, a list of dicts or a kubernetes
        client model. Fills namespace (``default``), uid, creationTimestamp,
        generation and a fresh resourceVersion. Returns the stored copies.
        """
        if hasattr(obj, "to_dict") and not isinstance(obj, dict):
            from kubernetes.client import ApiClient  # lazy: only for model objects

            obj = ApiClient().sanitize_for_serialization(obj)
        if (
            isinstance(obj, dict)
            and obj.get("kind") == "List"
            or (
                isinstance(obj, dict)
                and str(obj.get("kind", "")).endswith("List")
                and "items" in obj
            )
        ):
            return [self.add(item) for item in obj.get("items") or []]
        if isinstance(obj, (list, tuple)):
            return [self.add(item) for item in obj]
        if not isinstance(obj, dict) or "kind" not in obj:
            raise ValueError(f"not a Kubernetes object: {obj!r}")
        obj = copy.deepcopy(obj)
        rt = self.resource_type(obj["kind"], obj.get("apiVersion"))
        meta = _meta(obj)
        if not meta.get("name"):
            raise ValueError(f"{rt.kind} without metadata.name")
        with self._lock:
            ns = (meta.get("namespace") or "default") if rt.namespaced else None
            old = self._objects[rt.key].get((ns or "", meta["name"]))
            if old is not None and not meta.get("uid"):
                meta["uid"] = old["metadata"]["uid"]
            self._fill_new(rt, obj, ns, keep_given=True)
            return self._commit(rt, obj, old)

    def load(self, path: str | Path) -> list[dict[str, Any]]:
        """Add every object of a YAML file (one object, several documents or a List)."""
        import yaml  # lazy

        out: list[dict[str, Any]] = []
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc:
                added = self.add(doc)
                out.extend(added if isinstance(added, list) else [added])
        return out

    def get(
        self, resource: str, namespace: str | None = None, name: str | None = None
    ) -> dict[str, Any] | None:
        """A deep copy of one object, or None. For cluster-scoped types
        ``get("nodes", "n1")`` works too."""
        rt = self.resource_type(resource)
        if not rt.namespaced and name is None:
            namespace, name = None, namespace
        with self._lock:
            obj = self._objects[rt.key].get(
                ((namespace or "default") if rt.namespaced else "", name or "")
            )
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rt = self.resource_type(resource)
        labels = parse_label_selector(label_selector)
        fields = _parse_field_selector(field_selector, rt)
        with self._lock:
            return copy.deepcopy(self._select(rt, namespace, labels, fields))

    def remove(
        self, resource: str, namespace: str | None = None, name: str | None = None
    ) -> dict[str, Any] | None:
        rt = self.resource_type(resource)
        if not rt.namespaced and name is None:
            namespace, name = None, namespace
        with self._lock:
            key = ((namespace or "default") if rt.namespaced else "", name or "")
            obj = self._objects[rt.key].get(key)
            if obj is None:
                return None
            self._drop(rt, obj)
            return copy.deepcopy(obj)

    def patch(
        self, resource: str, namespace: str | None, name: str, patch: Any, patch_type: str = "merge"
    ) -> dict[str, Any]:
        """Patch as a controller would (status included): ``merge``, ``strategic`` or ``json``."""
        rt = self.resource_type(resource)
        if not rt.namespaced and namespace is not None and name is None:
            namespace, name = None, namespace
        with self._lock:
            key = ((namespace or "default") if rt.namespaced else "", name)
            old = self._objects[rt.key].get(key)
            if old is None:
                raise KeyError(f"{rt.qualified} {namespace}/{name} not found")
            new = {
                "merge": json_merge_patch,
                "strategic": strategic_merge_patch,
                "json": json_patch,
            }[patch_type](old, patch)
            gen = self._next_generation(rt, old, new)
            if gen is not None:
                new["metadata"]["generation"] = gen
            return self._commit(rt, new, old)

    def compute_pdb_status(self, namespace: str, name: str) -> dict[str, Any]:
        """The status a disruption controller would write for this PDB now."""
        with self._lock:
            pdb = self._objects[self.resource_type("poddisruptionbudgets").key].get(
                (namespace, name)
            )
            if pdb is None:
                raise KeyError(f"poddisruptionbudget {namespace}/{name} not found")
            return self._pdb_status(pdb)

    def sync_pdbs(self) -> list[dict[str, Any]]:
        """One disruption-controller pass: write the computed status of every PDB."""
        with self._lock:
            rt = self.resource_type("poddisruptionbudgets")
            for pdb in list(self._objects[rt.key].values()):
                self._commit_pdb_status(rt, pdb, self._pdb_status(pdb))
            return copy.deepcopy(list(self._objects[rt.key].values()))

    # ---- auth, faults, hooks ----------------------------------------------

    def authorize_with(self, lookup: Callable[[str], TokenScope | None]) -> None:
        """Dynamic authentication, as a real API server asks its token
        reviewer: ``lookup(token)`` gives the token's scope, or None (401).
        Use it for tokens issued while the test runs (e.g. by Vault)."""

        class _Lookup:
            def get(self, token: str) -> TokenScope | None:
                return lookup(token)

        with self._lock:
            self._tokens = _Lookup()  # type: ignore[assignment]

    def require_tokens(
        self, tokens: Mapping[str, TokenScope | Iterable[str] | str | None] | None
    ) -> None:
        """Require ``Authorization: Bearer <token>``: each token maps to None
        (everything), namespaces it may touch, or a :class:`TokenScope`.
        ``None`` instead of a map turns auth off again."""
        with self._lock:
            self._tokens = (
                None if tokens is None else {t: TokenScope.of(v) for t, v in tokens.items()}
            )

    def fail(
        self,
        status: int = 500,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests (None: all) with ``status``
        before touching state; ``retry_after`` adds a Retry-After header."""
        with self._lock:
            self._faults.append(_Fault(status, times, method, path_contains, retry_after, message))

    def delay(
        self,
        seconds: float,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Sleep before handling the next ``times`` matching requests. The request
        is still carried out after the sleep, even if the client gave up."""
        with self._lock:
            self._delays.append(_Fault(None, times, method, path_contains, delay=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()

    def on_write(self, hook: WriteHook) -> None:
        """Call ``hook(event, obj, old, emulator)`` after each HTTP write
        (event ADDED/MODIFIED/DELETED; not for dry runs), before the response."""
        with self._lock:
            self._hooks.append(hook)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- store internals (call with the lock held) -------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _fill_new(
        self, rt: ResourceType, obj: dict[str, Any], ns: str | None, *, keep_given: bool
    ) -> None:
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = _meta(obj)
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not (keep_given and meta.get("uid")):
            meta["uid"] = str(uuid.uuid4())
        if not (keep_given and meta.get("creationTimestamp")):
            meta["creationTimestamp"] = _now()
        if rt.generation != "none" and not (keep_given and meta.get("generation")):
            meta["generation"] = 1
        if not keep_given:
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
                meta.pop(k, None)

    def _commit(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._next_rv())
        key = (meta.get("namespace") or "", meta["name"])
        self._objects[rt.key][key] = obj
        self._events.append(
            (self._rv, rt.key, "ADDED" if old is None else "MODIFIED", copy.deepcopy(obj), old)
        )
        self._changed.notify_all()
        return copy.deepcopy(obj)

    def _drop(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self._objects[rt.key].pop((meta.get("namespace") or "", meta["name"]), None)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._events.append((self._rv, rt.key, "DELETED", copy.deepcopy(gone), obj))
        self._changed.notify_all()
        if rt.kind == "Namespace" and rt.group == "":
            for t in self._types:
                if t.namespaced:
                    for o in [
                        o for (ns, _), o in self._objects[t.key].items() if ns == meta["name"]
                    ]:
                        self._drop(t, o)
        return gone

    def _select(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, str, str]],
    ) -> list[dict[str, Any]]:
        out = []
        for (ns, _), obj in sorted(self._objects[rt.key].items()):
            if namespace is not None and rt.namespaced and ns != namespace:
                continue
            if _labels_match(labels, obj["metadata"].get("labels")) and _fields_match(fields, obj):
                out.append(obj)
        return out

    def _next_generation(
        self, rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> int | None:
        gen = (old.get("metadata") or {}).get("generation")
        if rt.generation == "none":
            return gen
        gen = gen or 1
        if rt.generation == "custom":
            strip = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
            changed = strip(old) != strip(new)
        else:
            changed = old.get("spec") != new.get("spec")
            if rt.generation == "spec+annotations":
                changed = changed or (old["metadata"].get("annotations") or {}) != (
                    new["metadata"].get("annotations") or {}
                )
        return gen + 1 if changed else gen

    # ---- verbs --------------------------------------------------------------

    def _create(self, rt: ResourceType, ns: str | None, body: Any, dry_run: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request(f"the body of the request is not a {rt.kind} object")
        obj = copy.deepcopy(body)
        meta = _meta(obj)
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        _check_time_formats(rt, obj)
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request"
                )
            if self.require_namespaces and ("", ns) not in self._objects.get(
                ("", "namespaces"), {}
            ):
                raise _not_found(self.resource_type("namespaces"), ns or "")
        name = meta.get("name")
        if not name and meta.get("generateName"):
            for _ in range(100):
                name = meta["generateName"] + "".join(random.choices(_GENERATE_CHARS, k=5))
                if (ns or "", name) not in self._objects[rt.key]:
                    break
            meta["name"] = name
        if not name:
            raise _invalid(
                rt, "", "metadata.name", "Required value: name or generateName is required"
            )
        if not _NAME_RE.match(name) or len(name) > 253:
            raise _invalid(
                rt,
                name,
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        if (ns or "", name) in self._objects[rt.key]:
            raise ApiError(
                409, f'{rt.qualified} "{name}" already exists', "AlreadyExists", _details(rt, name)
            )
        self._fill_new(rt, obj, ns, keep_given=False)
        if rt.status_on_create == "clear":
            obj.pop("status", None)
        elif isinstance(rt.status_on_create, Mapping):
            obj["status"] = copy.deepcopy(dict(rt.status_on_create))
            if rt.kind == "Pod":
                obj["status"]["qosClass"] = _qos_class(obj)
        if rt.kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        if dry_run:
            obj["metadata"]["resourceVersion"] = ""
            return obj
        return self._commit(rt, obj, None)

    def _check_immutable(
        self, rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        name = old["metadata"]["name"]
        if (
            rt.kind == "Pod"
            and rt.group == ""
            and (_pod_spec_frozen(old.get("spec")) != _pod_spec_frozen(new.get("spec")))
        ):
            raise _invalid(
                rt,
                name,
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it "
                "to be set to 1 if it was previously negative)",
            )
        if rt.group == "apps" and (old.get("spec") or {}).get("selector") != (
            new.get("spec") or {}
        ).get("selector"):
            raise _invalid(rt, name, "spec.selector", "Invalid value: field is immutable")
        if rt.kind == "StatefulSet":
            strip = lambda s: {k: v for k, v in (s or {}).items() if k not in _STS_MUTABLE_SPEC}  # noqa: E731
            if strip(old.get("spec")) != strip(new.get("spec")):
                raise _invalid(
                    rt,
                    name,
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other "
                    "than 'replicas', 'ordinals', 'template', 'updateStrategy', "
                    "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                )

    def _update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        body: Any,
        sub: str | None,
        dry_run: bool,
        *,
        url_name: str,
    ) -> dict[str, Any]:
        """Shared by PUT and PATCH: ``body`` is the full desired object."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise _bad_request(f"the body of the request is not a {rt.kind} object")
        _check_time_formats(rt, body)
        meta = body.setdefault("metadata", {})
        name = old["metadata"]["name"]
        if meta.get("name") and meta["name"] != url_name:
            raise _bad_request(
                f"the name of the object ({meta['name']}) does not match the name on "
                f"the URL ({url_name})"
            )
        if (
            rt.namespaced
            and meta.get("namespace")
            and meta["namespace"] != old["metadata"]["namespace"]
        ):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent "
                "on the request"
            )
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise _conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in "
                f"object meta: {old['metadata']['uid']}",
            )
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise _conflict(rt, name, _MODIFIED)
        if sub == "status":
            new = copy.deepcopy(old)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            nmeta = new["metadata"]
            for k in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "generateName",
            ):
                if k in old["metadata"]:
                    nmeta[k] = old["metadata"][k]
                else:
                    nmeta.pop(k, None)
            if "status" in rt.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            self._check_immutable(rt, old, new)
            if old["metadata"].get("deletionTimestamp") and set(
                nmeta.get("finalizers") or ()
            ) - set(old["metadata"].get("finalizers") or ()):
                raise _invalid(
                    rt,
                    name,
                    "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                )
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        gen = self._next_generation(rt, old, new)
        if gen is not None:
            new["metadata"]["generation"] = gen
        if new == old:
            return copy.deepcopy(old)
        if dry_run:
            new["metadata"]["resourceVersion"] = str(self._rv + 1)
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._drop(rt, new)
        return self._commit(rt, new, old)

    def _apply_patch(
        self, rt: ResourceType, current: dict[str, Any], content_type: str, raw: bytes
    ) -> Any:
        ctype = content_type.split(";")[0].strip().lower()
        allowed = [t for t in _PATCH_TYPES if not (rt.custom and "strategic" in t)]
        if ctype not in allowed or ctype == "application/apply-patch+yaml":
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(allowed),
            )
        try:
            patch = json.loads(raw or b"null")
        except ValueError as exc:
            raise _bad_request(f"error decoding patch: {exc}") from exc
        if ctype == "application/json-patch+json":
            return json_patch(current, patch)
        if not isinstance(patch, dict):
            raise _bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        if ctype == "application/merge-patch+json":
            return json_merge_patch(current, patch)
        return strategic_merge_patch(current, patch)

    def _scale(self, rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": _selector_string((obj.get("spec") or {}).get("selector")),
            },
        }

    def _write_scale(
        self, rt: ResourceType, old: dict[str, Any], scale: Any, dry_run: bool, url_name: str
    ) -> dict[str, Any]:
        if not isinstance(scale, dict):
            raise _bad_request("the body of the request is not a Scale object")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(
                422,
                f'Scale.autoscaling "{url_name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas!r}: must be greater than or equal to 0",
                details=_details(rt, url_name),
            )
        body = copy.deepcopy(old)
        smeta = scale.get("metadata") or {}
        body["metadata"]["resourceVersion"] = (
            smeta.get("resourceVersion") or old["metadata"]["resourceVersion"]
        )
        if smeta.get("uid"):
            body["metadata"]["uid"] = smeta["uid"]
        body.setdefault("spec", {})["replicas"] = replicas
        return self._scale(rt, self._update(rt, old, body, None, dry_run, url_name=url_name))

    def _delete(
        self, rt: ResourceType, old: dict[str, Any], options: Mapping[str, Any], dry_run: bool
    ) -> tuple[int, dict[str, Any]]:
        name = old["metadata"]["name"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise _conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                f"object meta: {old['metadata']['uid']}",
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise _conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{old['metadata']['resourceVersion']}",
            )
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return 202, copy.deepcopy(old)
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if dry_run:
                return 202, new
            return 202, self._commit(rt, new, old)
        if dry_run:
            return 200, copy.deepcopy(old)
        return 200, self._drop(rt, old)

    # ---- eviction -------------------------------------------------------------

    def _expected_pods(self, pods: list[dict[str, Any]]) -> int:
        seen: set[str] = set()
        total = 0
        by_uid: dict[str, tuple[ResourceType, dict[str, Any]]] = {}
        for t in self._types:
            if t.group == "apps" and "scale" in t.subresources:
                for o in self._objects[t.key].values():
                    by_uid[o["metadata"]["uid"]] = (t, o)
        for pod in pods:
            ref = next(
                (r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")),
                None,
            )
            owner = by_uid.get(ref.get("uid", "")) if ref else None
            if owner is None and ref is not None:  # match by kind/name when uids were not wired up
                owner = next(
                    (
                        (t, o)
                        for t, o in by_uid.values()
                        if t.kind == ref.get("kind")
                        and o["metadata"]["name"] == ref.get("name")
                        and o["metadata"].get("namespace") == pod["metadata"].get("namespace")
                    ),
                    None,
                )
            if owner is None:
                total += 1
                continue
            t, o = owner
            if (
                t.kind == "ReplicaSet"
            ):  # a Deployment's ReplicaSet: the Deployment decides the scale
                dref = next(
                    (
                        r
                        for r in o["metadata"].get("ownerReferences") or []
                        if r.get("controller") and r.get("kind") == "Deployment"
                    ),
                    None,
                )
                if dref is not None:
                    dep = by_uid.get(dref.get("uid", "")) or next(
                        (
                            (tt, oo)
                            for tt, oo in by_uid.values()
                            if tt.kind == "Deployment"
                            and oo["metadata"]["name"] == dref.get("name")
                            and oo["metadata"].get("namespace") == o["metadata"].get("namespace")
                        ),
                        None,
                    )
                    if dep is not None:
                        t, o = dep
            uid = o["metadata"]["uid"]
            if uid not in seen:
                seen.add(uid)
                total += int((o.get("spec") or {}).get("replicas", 1))
        return total

    def _pdb_pods(self, pdb: Mapping[str, Any]) -> list[dict[str, Any]]:
        reqs = _selector_requirements((pdb.get("spec") or {}).get("selector"))
        if reqs is None:
            return []
        ns = pdb["metadata"]["namespace"]
        return [
            p
            for (pns, _), p in self._objects[("", "pods")].items()
            if pns == ns and _labels_match(reqs, p["metadata"].get("labels"))
        ]

    def _pdb_status(self, pdb: Mapping[str, Any]) -> dict[str, Any]:
        spec = pdb.get("spec") or {}
        pods = self._pdb_pods(pdb)
        healthy = sum(1 for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp"))
        if spec.get("maxUnavailable") is not None:
            expected = self._expected_pods(pods)
            desired = max(
                0, expected - _scaled(spec["maxUnavailable"], expected, what="maxUnavailable")
            )
        elif isinstance(spec.get("minAvailable"), str):
            expected = self._expected_pods(pods)
            desired = _scaled(spec["minAvailable"], expected, what="minAvailable")
        elif spec.get("minAvailable") is not None:
            expected, desired = len(pods), int(spec["minAvailable"])
        else:
            expected, desired = len(pods), 0
        allowed = max(0, healthy - desired)
        status = dict(pdb.get("status") or {})
        status.update(
            {
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "disruptionsAllowed": allowed,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
            }
        )
        status["conditions"] = [
            {
                "type": "DisruptionAllowed",
                "status": "True" if allowed > 0 else "False",
                "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                "message": "",
                "observedGeneration": status["observedGeneration"],
                "lastTransitionTime": _now(),
            }
        ]
        return status

    def _evict(
        self, pods_rt: ResourceType, ns: str, name: str, body: Any, query_dry: bool
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request("the body of the request is not an Eviction object")
        if (body.get("metadata") or {}).get("name") not in (None, "", name):
            raise _bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        dry_run = query_dry or "All" in (options.get("dryRun") or [])
        pod = self._objects[pods_rt.key].get((ns, name))
        if pod is None:
            raise _not_found(pods_rt, name)
        namespace = self._objects[self.resource_type("namespaces").key].get(("", ns))
        if namespace is not None and (namespace.get("status") or {}).get("phase") == "Terminating":
            # NamespaceLifecycle admission: no new object (an Eviction is one) in a
            # namespace being deleted; the namespace controller deletes the pod.
            raise ApiError(
                403,
                f'pods "{name}" is forbidden: unable to create new content in namespace '
                f"{ns} because it is being terminated",
                reason="Forbidden",
                details={"name": name, "kind": "pods", "causes": [{
                    "reason": "NamespaceTerminating",
                    "message": f"namespace {ns} is being terminated",
                    "field": "metadata.namespace"}]},
            )
        success = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
            self._delete(pods_rt, pod, options, dry_run)
            return success
        pdb_rt = self.resource_type("poddisruptionbudgets")
        pdbs = [
            p
            for (pns, _), p in sorted(self._objects[pdb_rt.key].items())
            if pns == ns
            and _labels_match(
                _selector_requirements((p.get("spec") or {}).get("selector")) or [],
                pod["metadata"].get("labels"),
            )
            and (p.get("spec") or {}).get("selector") is not None
        ]
        if len(pdbs) > 1:
            # The real API answers a Status without a reason here.
            raise ApiError(
                500,
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support.",
                reason=None,
            )
        if pdbs:
            pdb = pdbs[0]
            status = self._pdb_status(pdb)
            skip_budget = not _ready(pod) and (
                (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
                or (
                    status["currentHealthy"] >= status["desiredHealthy"]
                    and status["desiredHealthy"] > 0
                )
            )
            if not skip_budget:
                if status["disruptionsAllowed"] <= 0:
                    if not dry_run:
                        self._commit_pdb_status(pdb_rt, pdb, status)
                    raise ApiError(
                        429,
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        details={
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb['metadata']['name']} needs "
                                    f"{status['desiredHealthy']} healthy pods and has "
                                    f"{status['currentHealthy']} currently",
                                }
                            ]
                        },
                    )
                self._delete(
                    pods_rt, pod, options, dry_run
                )  # preconditions checked before the PDB changes
                if not dry_run:
                    self._commit_pdb_status(pdb_rt, pdb, self._pdb_status(pdb))
                return success
        self._delete(pods_rt, pod, options, dry_run)
        if pdbs and not dry_run:
            self._commit_pdb_status(pdb_rt, pdbs[0], self._pdb_status(pdbs[0]))
        return success

    def _commit_pdb_status(
        self, rt: ResourceType, pdb: dict[str, Any], status: dict[str, Any]
    ) -> None:
        old_status = {k: v for k, v in (pdb.get("status") or {}).items() if k != "conditions"}
        if old_status == {k: v for k, v in status.items() if k != "conditions"}:
            return
        new = copy.deepcopy(pdb)
        new["status"] = status
        self._commit(rt, new, pdb)

    # ---- HTTP dispatch ------------------------------------------------------

    def _route(self, method: str, path: str, query: Mapping[str, str]) -> _Route | dict[str, Any]:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            major, minor = self.server_version.split(".")[:2]
            return {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{self.server_version}.0-emulated",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//", 1)[1]}
                ],
            }
        if parts == ["apis"]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_doc(g) for g in self._groups() if g],
            }
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) == 2 and parts[0] == "apis" and parts[1] in self._groups():
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(parts[1])}
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(
                404,
                "the server could not find the requested resource",
                details={
                    "causes": [
                        {"reason": "UnexpectedServerResponse", "message": "404 page not found"}
                    ]
                },
            )
        if not rest:
            if not any((t.group, t.version) == (group, version) for t in self._types):
                raise ApiError(404, "the server could not find the requested resource")
            return self._resource_list_doc(group, version)
        ns = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and self._type_at(group, version, rest[2]) is not None
            and self._type_at(group, version, rest[2]).namespaced
        ):
            ns, rest = rest[1], rest[2:]
        rt = self._type_at(group, version, rest[0])
        if rt is None or len(rest) > 3 or (ns is not None and not rt.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if rt.namespaced and name is not None and ns is None:
            raise ApiError(404, "the server could not find the requested resource")
        if sub is not None and sub not in rt.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        if name is None:
            verb = {
                "GET": "watch" if query.get("watch") in ("1", "true") else "list",
                "POST": "create",
                "DELETE": "deletecollection",
            }.get(method)
        elif sub == "eviction":
            verb = "create" if method == "POST" else None
        else:
            verb = {
                "GET": "get",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": None if sub else "delete",
            }.get(method)
        if verb is None:
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                details=_details(rt, name or ""),
            )
        return _Route(rt, ns, name, sub, verb)

    def _groups(self) -> list[str]:
        out: list[str] = []
        for t in self._types:
            if t.group not in out:
                out.append(t.group)
        return out

    def _group_doc(self, group: str) -> dict[str, Any]:
        versions = []
        for t in self._types:
            if t.group == group and t.version not in versions:
                versions.append(t.version)
        gv = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gv, "preferredVersion": gv[0]}

    def _resource_list_doc(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        for t in self._types:
            if (t.group, t.version) != (group, version):
                continue
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.singular,
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": verbs,
                    "shortNames": list(t.short_names),
                }
            )
            for sub in t.subresources:
                if sub == "eviction":
                    resources.append(
                        {
                            "name": f"{t.plural}/eviction",
                            "singularName": "",
                            "namespaced": True,
                            "group": "policy",
                            "version": "v1",
                            "kind": "Eviction",
                            "verbs": ["create"],
                        }
                    )
                elif sub == "scale":
                    resources.append(
                        {
                            "name": f"{t.plural}/scale",
                            "singularName": "",
                            "namespaced": True,
                            "group": "autoscaling",
                            "version": "v1",
                            "kind": "Scale",
                            "verbs": ["get", "patch", "update"],
                        }
                    )
                else:
                    resources.append(
                        {
                            "name": f"{t.plural}/{sub}",
                            "singularName": "",
                            "namespaced": t.namespaced,
                            "kind": t.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _authenticate(self, token: str | None) -> TokenScope | None:
        if self._tokens is None:
            return None
        scope = self._tokens.get(token or "")
        if scope is None:
            raise ApiError(401, "Unauthorized")
        return scope

    def _authorize(self, scope: TokenScope | None, route: _Route) -> None:
        if scope is None:
            return
        rt = route.rt
        resource = f"{rt.plural}/{route.subresource}" if route.subresource else rt.plural
        ok = (scope.verbs is None or route.verb in scope.verbs) and (
            scope.resources is None
            or resource in scope.resources
            or f"{rt.qualified}" in scope.resources
        )
        if scope.namespaces is not None:
            ok = ok and rt.namespaced and route.namespace in scope.namespaces
        if ok:
            return
        user = scope.user or (
            f"system:serviceaccount:{min(scope.namespaces)}:remediation"
            if scope.namespaces
            else "system:serviceaccount:default:remediation"
        )
        where = (
            f'in the namespace "{route.namespace}"'
            if rt.namespaced and route.namespace
            else "at the cluster scope"
        )
        subject = f'{rt.qualified} "{route.name}"' if route.name else rt.qualified
        raise ApiError(
            403,
            f'{subject} is forbidden: User "{user}" cannot {route.verb} resource '
            f'"{resource}" in API group "{rt.group}" {where}',
            details=_details(rt, route.name or ""),
        )

    def _take(self, rules: list[_Fault], method: str, path: str) -> _Fault | None:
        with self._lock:
            for rule in rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def _dispatch(
        self, method: str, raw_path: str, headers: Mapping[str, str], raw_body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """Handle one request; returns (status, extra headers, JSON body or _Watch)."""
        split = urlsplit(raw_path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        auth = headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        ctype = headers.get("Content-Type")
        body: Any = None
        body_error: ApiError | None = None
        if raw_body:
            try:
                if ctype and "yaml" in ctype and "apply-patch" not in ctype:
                    import yaml  # lazy

                    body = yaml.safe_load(raw_body)
                else:
                    body = json.loads(raw_body)
            except ValueError as exc:
                body_error = _bad_request(f"couldn't get version/kind; json parse error: {exc}")
        route: _Route | None = None
        status, extra, payload = 200, {}, None
        try:
            delay = self._take(self._delays, method, path)
            if delay is not None:
                self._closing.wait(delay.delay)
            fault = self._take(self._faults, method, path)
            if fault is not None:
                hdrs = {}
                details: dict[str, Any] = {}
                if fault.retry_after is not None:
                    hdrs["Retry-After"] = str(math.ceil(fault.retry_after))
                    details["retryAfterSeconds"] = math.ceil(fault.retry_after)
                default_msg = {
                    429: "Too many requests, please try again later.",
                    500: "Internal error occurred: injected fault",
                    503: "the server is currently unable to handle the request",
                    504: "the server was unable to return a response in the time allotted",
                }
                raise ApiError(
                    fault.status or 500,
                    fault.message
                    or default_msg.get(fault.status or 500, f"injected fault ({fault.status})"),
                    details=details,
                    headers=hdrs,
                )
            scope = None if path.rstrip("/") == "/version" else self._authenticate(token)
            routed = self._route(method, path, query)
            if isinstance(routed, dict):
                payload = routed
            else:
                route = routed
                self._authorize(scope, route)
                if body_error is not None:
                    raise body_error
                status, payload = self._serve(route, method, query, ctype or "", raw_body, body)
        except ApiError as err:
            status, extra, payload = err.code, err.headers, err.status()
        self._record(method, path, query, token, ctype, body, status, route)
        return status, extra, payload

    def _record(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        token: str | None,
        ctype: str | None,
        body: Any,
        status: int,
        route: _Route | None,
    ) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method,
                    path,
                    query,
                    token,
                    ctype,
                    body,
                    status,
                    route.verb if route else "",
                    (
                        f"{route.rt.plural}/{route.subresource}"
                        if route.subresource
                        else route.rt.plural
                    )
                    if route
                    else "",
                    route.namespace if route else None,
                    route.name if route else None,
                )
            )

    def _serve(
        self,
        route: _Route,
        method: str,
        query: Mapping[str, str],
        ctype: str,
        raw: bytes,
        body: Any,
    ) -> tuple[int, Any]:
        rt, ns, name, sub = route.rt, route.namespace, route.name, route.subresource
        dry_run = query.get("dryRun") == "All"
        options = body if method == "DELETE" and isinstance(body, dict) else {}
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        written: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        with self._lock:
            if route.verb in ("list", "watch"):
                labels = parse_label_selector(query.get("labelSelector"))
                fields = _parse_field_selector(query.get("fieldSelector"), rt)
                if route.verb == "watch":
                    return 200, self._watch(rt, ns, labels, fields, query)
                return 200, self._list_doc(rt, ns, labels, fields, query)
            if route.verb == "create" and sub is None:
                result = self._create(rt, ns, body, dry_run)
                if not dry_run:
                    written.append(("ADDED", result, None))
                code = 201
            elif route.verb == "deletecollection":
                labels = parse_label_selector(query.get("labelSelector"))
                fields = _parse_field_selector(query.get("fieldSelector"), rt)
                items = []
                for obj in list(self._select(rt, ns, labels, fields)):
                    _, gone = self._delete(rt, obj, options, dry_run)
                    items.append(gone)
                    if not dry_run:
                        written.append(("DELETED", gone, obj))
                result = {
                    "kind": rt.list_kind_name,
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": items,
                }
                code = 200
            else:
                old = self._objects[rt.key].get((ns or "", name or ""))
                if old is None:
                    raise _not_found(rt, name or "")
                code = 200
                if sub == "eviction":
                    before = self._snapshot_pods_and_pdbs()
                    result = self._evict(rt, ns or "", name or "", body, dry_run)
                    code = 201
                    written.extend(self._diff(before))
                elif route.verb == "get":
                    result = self._scale(rt, old) if sub == "scale" else copy.deepcopy(old)
                elif route.verb == "delete":
                    code, result = self._delete(rt, old, options, dry_run)
                    if not dry_run:
                        written.append(("DELETED" if code == 200 else "MODIFIED", result, old))
                elif sub == "scale":
                    scale = body
                    if route.verb == "patch":
                        scale = self._apply_patch(rt, self._scale(rt, old), ctype, raw)
                    result = self._write_scale(rt, old, scale, dry_run, name or "")
                    if not dry_run:
                        new = self._objects[rt.key].get((ns or "", name or ""))
                        if new is not None and new is not old:
                            written.append(("MODIFIED", copy.deepcopy(new), old))
                else:
                    target = body
                    if route.verb == "patch":
                        target = self._apply_patch(rt, copy.deepcopy(old), ctype, raw)
                    elif not isinstance(body, dict):
                        raise _bad_request(f"the body of the request is not a {rt.kind} object")
                    result = self._update(
                        rt, old, copy.deepcopy(target), sub, dry_run, url_name=name or ""
                    )
                    if not dry_run:
                        new = self._objects[rt.key].get((ns or "", name or ""))
                        if new is not old:
                            written.append(
                                ("MODIFIED" if new is not None else "DELETED", result, old)
                            )
        for event, obj, prev in written:
            for hook in list(self._hooks):
                hook(event, copy.deepcopy(obj), copy.deepcopy(prev), self)
        return code, result

    def _snapshot_pods_and_pdbs(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        snap = {}
        for key in (("", "pods"), ("policy", "poddisruptionbudgets")):
            for (ns, n), o in self._objects.get(key, {}).items():
                snap[(key[1], ns, n)] = o
        return snap

    def _diff(
        self, before: dict[tuple[str, str, str], dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
        after = self._snapshot_pods_and_pdbs()
        out: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for k, o in before.items():
            if k not in after:
                out.append(("DELETED", copy.deepcopy(o), o))
            elif after[k] is not o:
                out.append(("MODIFIED", copy.deepcopy(after[k]), o))
        return out

    def _list_doc(
        self,
        rt: ResourceType,
        ns: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, str, str]],
        query: Mapping[str, str],
    ) -> dict[str, Any]:
        items = self._select(rt, ns, labels, fields)
        offset = 0
        if query.get("continue"):
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(query["continue"]))["offset"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad_request("continue key is not valid") from exc
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        limit = int(query.get("limit") or 0)
        page = items[offset : offset + limit] if limit > 0 else items[offset:]
        if limit > 0 and offset + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"offset": offset + limit}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - offset - limit
        out = []
        for obj in page:
            item = copy.deepcopy(obj)
            if not rt.custom:  # built-in list items carry no kind/apiVersion on the wire
                item.pop("kind", None)
                item.pop("apiVersion", None)
            out.append(item)
        return {
            "kind": rt.list_kind_name,
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": out,
        }

    # ---- watch ----------------------------------------------------------------

    def _watch(
        self,
        rt: ResourceType,
        ns: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, str, str]],
        query: Mapping[str, str],
    ) -> _Watch:
        timeout = float(query.get("timeoutSeconds") or 60)
        rv_text = query.get("resourceVersion") or ""
        initial: list[dict[str, Any]] = []
        if rv_text in ("", "0"):
            since = self._rv
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(o)}
                for o in self._select(rt, ns, labels, fields)
            ]
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise _bad_request(f"invalid resource version: {rv_text}") from exc
            if self._events and since < self._events[0][0] - 1:
                initial = [
                    {
                        "type": "ERROR",
                        "object": ApiError(
                            410,
                            f"too old resource version: {since} ({self._events[0][0]})",
                            "Expired",
                        ).status(),
                    }
                ]
                timeout = 0
        return _Watch(rt, ns, labels, fields, since, initial, time.monotonic() + min(timeout, 600))

    def _watch_events(self, w: _Watch) -> Iterator[dict[str, Any]]:
        yield from w.initial
        last = w.since

        def visible(obj: Mapping[str, Any] | None) -> bool:
            if obj is None:
                return False
            if (
                w.namespace is not None
                and w.rt.namespaced
                and obj["metadata"].get("namespace") != w.namespace
            ):
                return False
            return _labels_match(w.labels, obj["metadata"].get("labels")) and _fields_match(
                w.fields, obj
            )

        while not self._closing.is_set():
            with self._changed:
                pending = [e for e in self._events if e[0] > last and e[1] == w.rt.key]
                if not pending:
                    remaining = w.deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(min(remaining, 0.5))
                    continue
                last = self._events[-1][0]
            for _, _, kind, obj, old in pending:
                now, before = visible(obj), visible(old)
                if kind == "MODIFIED" and now and not before:
                    kind = "ADDED"
                elif kind == "MODIFIED" and before and not now:
                    kind = "DELETED"
                elif not now and not (kind == "DELETED" and before):
                    continue
                yield {"type": kind, "object": copy.deepcopy(obj)}


class _Handler(BaseHTTPRequestHandler):
    # Headers and body leave in separate writes: without this, Nagle plus the
    # client's delayed ACK add 40 ms to every response.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "kube-emulator/1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        emulator: KubeEmulator = self.server.emulator  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, extra, payload = emulator._dispatch(self.command, self.path, self.headers, raw)
        try:
            if isinstance(payload, _Watch):
                self._stream(emulator, payload)
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.close_connection = True

    def _stream(self, emulator: KubeEmulator, watch: _Watch) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in emulator._watch_events(watch):
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
