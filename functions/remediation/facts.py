"""Cluster facts: the read-only view planners see.

One small read interface, three implementations: the live API
(``clients.kube.LiveFacts``), a snapshot file (:class:`SnapshotFacts`, objects
as ``kubectl get -o yaml`` prints them, for offline what-if replays and the
demo), and the tests' API emulator (through the live implementation).
Objects are plain dicts exactly as the API serves them.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from .errors import ActionFailed, InvalidInput
from .ports import ClusterFacts

__all__ = ["ClusterFacts", "MemoFacts", "SnapshotAccess", "SnapshotFacts", "load_objects",
           "matches_labels", "owner_of", "pod_is_ready", "selector_matches"]

#: kinds planners read; cluster-scoped ones have no namespace.
CLUSTER_SCOPED = frozenset({"Node", "Namespace"})


def matches_labels(obj: Mapping[str, Any], labels: Mapping[str, str] | None) -> bool:
    if not labels:
        return True
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions) against labels.
    An empty selector matches everything; ``None`` matches nothing."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


class SnapshotFacts:
    """Facts from a list of objects (a snapshot file). Read-only; plan-only."""

    def __init__(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self._by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
        for obj in objects:
            kind = obj.get("kind")
            meta = obj.get("metadata") or {}
            name = meta.get("name")
            if not isinstance(kind, str) or not isinstance(name, str):
                raise InvalidInput("snapshot object without kind or metadata.name", "kind")
            ns = "" if kind in CLUSTER_SCOPED else str(meta.get("namespace") or "default")
            self._by_key[(kind, ns, name)] = copy.deepcopy(dict(obj))

    @classmethod
    def load(cls, path: str | Path) -> SnapshotFacts:
        return cls(load_objects(path))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        ns = "" if kind in CLUSTER_SCOPED else namespace
        obj = self._by_key.get((kind, ns, name))
        return _copy_json(obj) if obj is not None else None

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> list[dict[str, Any]]:
        out = []
        for (k, ns, _), obj in sorted(self._by_key.items()):
            if k != kind or (namespace is not None and ns != namespace):
                continue
            if not matches_labels(obj, labels):
                continue
            if node is not None and (obj.get("spec") or {}).get("nodeName") != node:
                continue
            out.append(_copy_json(obj))
        return out

    def objects(self) -> builtins.list[dict[str, Any]]:
        return [_copy_json(o) for _, o in sorted(self._by_key.items())]


def load_objects(path: str | Path) -> list[dict[str, Any]]:
    """Read objects from YAML/JSON: one object, several documents, or a
    ``kind: List`` (what ``kubectl get -o yaml`` prints)."""
    import yaml  # local: only snapshot users pay for it

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read snapshot {path}: {exc.strerror}", "snapshot") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidInput(f"snapshot {path} is not valid YAML: {exc}", "snapshot") from exc
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise InvalidInput(f"snapshot {path}: a document is not an object", "snapshot")
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            objects.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
        else:
            objects.append(doc)
    return objects


def owner_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The controller ownerReference of an object, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


class SnapshotAccess:
    """ClusterAccess over a snapshot: facts only, plan-only (never writes)."""

    live = False

    def __init__(self, facts: SnapshotFacts) -> None:
        self._facts = facts

    def facts(self, cluster: str) -> SnapshotFacts:
        return self._facts

    def writer(self, cluster: str, credential: object) -> NoReturn:
        raise ActionFailed("a snapshot is read-only: plans are never applied to it")

    def close(self) -> None:
        return None


class MemoFacts:
    """Read-through memo over another ClusterFacts for the life of one batch
    (one webhook request): an alert storm about 200 workloads reads each once,
    not once per alert; an object a list returned is not read again by name.
    Returns copies, so planners cannot share mutations. The pipeline drops it
    when a signal of the batch changed the cluster."""

    def __init__(self, inner: ClusterFacts, memo: dict[Any, Any]) -> None:
        self._inner = inner
        self._memo = memo

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = ("get", kind, namespace, name)
        if key not in self._memo:
            self._memo[key] = self._inner.get(kind, namespace, name)
        got: dict[str, Any] | None = _copy_json(self._memo[key])
        return got

    def list(self, kind: str, namespace: str | None = None, *,
             labels: Mapping[str, str] | None = None,
             node: str | None = None) -> list[dict[str, Any]]:
        key = ("list", kind, namespace, tuple(sorted((labels or {}).items())), node)
        if key not in self._memo:
            self._memo[key] = items = self._inner.list(kind, namespace, labels=labels, node=node)
            for item in items:  # a listed object is read: a get of it asks no more
                meta = item.get("metadata") or {}
                ns = "" if kind in CLUSTER_SCOPED else str(meta.get("namespace") or "")
                self._memo.setdefault(("get", kind, ns, str(meta.get("name") or "")), item)
        listed: list[dict[str, Any]] = _copy_json(self._memo[key])
        return listed


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars), several times
    faster than ``copy.deepcopy``, which an alert storm pays once per alert."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value
