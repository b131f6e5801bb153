"""Validators for the names that incoming events carry into API paths.

A label value such as ``namespace="../../etc"`` or ``pod="a b"`` must never
reach a Kubernetes URL, a Vault path or a policy input as an object name.
These checks are the one place that decides what a valid name is:

- namespace: a DNS-1123 label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, <= 63 chars),
  as Kubernetes validates ``metadata.name`` of a Namespace;
- object name (pod, deployment, statefulset, node...): a DNS-1123 subdomain
  (dot-separated labels, <= 253 chars);
- cluster: a conservative identifier (letters, digits, ``-._:``, <= 253, no
  ``..``), because clusters are named by people and providers, not by the API
  server, yet still end up in kubeconfig context names and Vault paths.

Pure: no I/O, no third-party imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

from ..errors import InvalidInput

_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_CLUSTER: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9._:]*[A-Za-z0-9])?")

NAMESPACE_MAX: Final = 63
NAME_MAX: Final = 253
CLUSTER_MAX: Final = 253

#: Label keys whose values name a namespace (checked with :func:`check_namespace`).
NAMESPACE_LABELS: Final = (
    "namespace",
    "exported_namespace",
    "kubernetes_namespace",
    "k8s_namespace",
)
#: Label keys whose values name a namespaced or cluster-scoped object
#: (checked with :func:`check_name`).
OBJECT_NAME_LABELS: Final = (
    "pod",
    "exported_pod",
    "kubernetes_pod_name",
    "pod_name",
    "deployment",
    "statefulset",
    "daemonset",
    "replicaset",
    "inferenceservice",
    "isvc",
    "node",
    "kubernetes_node",
)
#: Label keys naming the cluster, in order of preference.
CLUSTER_LABELS: Final = ("cluster", "k8s_cluster")


def _show(value: object) -> str:
    """A short, escaped rendering of an offending value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Alert storms repeat the same few namespaces and clusters thousands of times.
@lru_cache(maxsize=4096)
def _namespace_ok(value: str) -> bool:
    return 0 < len(value) <= NAMESPACE_MAX and _DNS1123_LABEL.fullmatch(value) is not None


@lru_cache(maxsize=4096)
def _cluster_ok(value: str) -> bool:
    return (0 < len(value) <= CLUSTER_MAX and ".." not in value
            and _CLUSTER.fullmatch(value) is not None)


def valid_namespace(value: object) -> bool:
    """True when ``value`` is a DNS-1123 label of at most 63 characters."""
    return isinstance(value, str) and _namespace_ok(value)


def valid_name(value: object) -> bool:
    """True when ``value`` is a DNS-1123 subdomain of at most 253 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= NAME_MAX
        and _DNS1123_SUBDOMAIN.fullmatch(value) is not None
    )


def valid_cluster(value: object) -> bool:
    """True when ``value`` is a safe cluster identifier (see module docstring)."""
    return isinstance(value, str) and _cluster_ok(value)


def check_namespace(value: object, attribute: str) -> str:
    """Return ``value`` when it is a valid namespace name, else raise InvalidInput."""
    if not valid_namespace(value):
        raise InvalidInput(
            f"{attribute}: not a valid namespace name (DNS-1123 label, at most "
            f"{NAMESPACE_MAX} characters): {_show(value)}",
            attribute=attribute,
        )
    return value  # type: ignore[return-value]


def check_name(value: object, attribute: str) -> str:
    """Return ``value`` when it is a valid object name, else raise InvalidInput."""
    if not valid_name(value):
        raise InvalidInput(
            f"{attribute}: not a valid object name (DNS-1123 subdomain, at most "
            f"{NAME_MAX} characters): {_show(value)}",
            attribute=attribute,
        )
    return value  # type: ignore[return-value]


def check_cluster(value: object, attribute: str) -> str:
    """Return ``value`` when it is a safe cluster identifier, else raise InvalidInput."""
    if not valid_cluster(value):
        raise InvalidInput(
            f"{attribute}: not a valid cluster name (letters, digits, '-', '.', '_', ':'; "
            f"at most {CLUSTER_MAX} characters): {_show(value)}",
            attribute=attribute,
        )
    return value  # type: ignore[return-value]


def check_label_names(labels: Mapping[str, str], attribute: str) -> None:
    """Check every namespace-, object- and cluster-naming label present and non-empty.

    ``attribute`` is the prefix for error attributes, e.g. ``"alerts[3].labels"``.
    """
    for key in NAMESPACE_LABELS:
        value = labels.get(key)
        if value:
            check_namespace(value, f"{attribute}.{key}")
    for key in OBJECT_NAME_LABELS:
        value = labels.get(key)
        if value:
            check_name(value, f"{attribute}.{key}")
    for key in CLUSTER_LABELS:
        value = labels.get(key)
        if value:
            check_cluster(value, f"{attribute}.{key}")


#: Longest label key (a Kubernetes qualified name: 253-char prefix, '/', 63-char name).
LABEL_KEY_MAX: Final = 316
#: Longest label value kept as a label.
LABEL_VALUE_MAX: Final = 1024
#: Longest annotation value (descriptions and runbooks may be long).
ANNOTATION_VALUE_MAX: Final = 65536
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@lru_cache(maxsize=4096)
def _key_ok(key: str) -> bool:
    return 0 < len(key) <= LABEL_KEY_MAX and _CONTROL.search(key) is None


def check_labels(value: object, attribute: str, *,
                 value_max: int = LABEL_VALUE_MAX) -> dict[str, str]:
    """A plain ``dict[str, str]`` copy of a label (or annotation) mapping.

    Keys: non-empty strings of at most 316 characters without control
    characters; values: strings of at most ``value_max`` characters.
    ``None`` counts as no labels. Raises InvalidInput naming ``attribute.key``.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{attribute}: expected an object of strings, not "
                           f"{type(value).__name__}", attribute=attribute)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _key_ok(key):
            raise InvalidInput(f"{attribute}: invalid key {_show(key)} (non-empty string of "
                               f"at most {LABEL_KEY_MAX} characters)", attribute=attribute)
        if not isinstance(item, str):
            raise InvalidInput(f"{attribute}.{key}: expected a string, not "
                               f"{type(item).__name__}", attribute=f"{attribute}.{key}")
        if len(item) > value_max:
            raise InvalidInput(f"{attribute}.{key}: longer than {value_max} characters",
                               attribute=f"{attribute}.{key}")
        out[key] = item
    return out


def check_text(value: object, attribute: str, *, max_chars: int = LABEL_VALUE_MAX) -> str:
    """A single-line string of at most ``max_chars`` characters (for event
    attributes such as ``alertname`` and ``severity``)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{attribute}: expected a string, not {type(value).__name__}",
                           attribute=attribute)
    if len(value) > max_chars:
        raise InvalidInput(f"{attribute}: longer than {max_chars} characters",
                           attribute=attribute)
    if _CONTROL.search(value):
        raise InvalidInput(f"{attribute}: contains control characters", attribute=attribute)
    return value
