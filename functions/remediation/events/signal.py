"""Any accepted CloudEvent -> :class:`remediation.model.Signal`.

Accepted types and the data shape each must carry (whoever built the event:
our adapters, another producer, or a hand-written replay file):

- :data:`TYPE_ALERT_FIRING` / :data:`TYPE_ALERT_RESOLVED`:
  ``{"alert": {"status", "labels", "annotations", "startsAt", "fingerprint", ...}}``
  (an optional ``"group"`` is kept in ``Signal.data``). ``alert.status``,
  when present, must agree with the type.
- :data:`TYPE_SPLUNK_RESULT`: the Splunk webhook payload
  (``{"result", "sid", "search_name", ...}``); labels come from the result
  row (multivalue -> first value, see :func:`.splunk.result_labels`).

Everything else raises InvalidInput(attribute="type"). Labels must be strings
of sane length, and label values naming Kubernetes objects must be valid
names (:mod:`.names`), so a hostile ``namespace="../../etc"`` never reaches a
planner. The ``namespace`` and ``cluster`` extensions (what Triggers filter
on) must agree with the labels (what planners act on): an event that would be
routed for one namespace but act on another is rejected.

``origin`` is ``alertmanager`` / ``splunk`` for events from this project's
adapters (recognised by their ``source`` prefix), else ``cloudevent``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cloudevents.core.base import BaseCloudEvent

from ..errors import InvalidInput
from ..model import (
    TYPE_ALERT_FIRING,
    TYPE_ALERT_RESOLVED,
    TYPE_SPLUNK_RESULT,
    Signal,
    freeze,
)
from . import alertmanager, splunk
from .binding import format_time
from .names import (
    ANNOTATION_VALUE_MAX,
    CLUSTER_LABELS,
    check_cluster,
    check_label_names,
    check_labels,
    check_namespace,
    check_text,
)

__all__ = ["signal_from_event"]

_ALERT_STATUS = {TYPE_ALERT_FIRING: "firing", TYPE_ALERT_RESOLVED: "resolved"}


def _data(event: BaseCloudEvent) -> Mapping[str, Any]:
    data = event.get_data()
    if isinstance(data, (bytes, bytearray, str)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            raise InvalidInput("data: not a JSON object", attribute="data") from None
    if not isinstance(data, Mapping):
        raise InvalidInput("data: expected a JSON object, not "
                           f"{'nothing' if data is None else type(data).__name__}",
                           attribute="data")
    return data


def _optional_str(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{where}.{key}: expected a string", attribute=f"{where}.{key}")
    return value


def _extension(event: BaseCloudEvent, name: str) -> str:
    value = event.get_extension(name)
    if value is None or value == "":
        return ""
    return check_text(value, name)


def signal_from_event(event: BaseCloudEvent) -> Signal:
    """The Signal an accepted CloudEvent carries (see module docstring)."""
    event_type = event.get_type()
    source = event.get_source()
    annotations: dict[str, str] = {}
    starts_at = fingerprint = ""

    if event_type in _ALERT_STATUS:
        status = _ALERT_STATUS[event_type]
        data = _data(event)
        alert = data.get("alert")
        if not isinstance(alert, Mapping):
            raise InvalidInput("data.alert: expected an object with the alert",
                               attribute="data.alert")
        given = alert.get("status")
        if given is not None and given != status:
            raise InvalidInput(f"data.alert.status: {given!r} contradicts event type "
                               f"{event_type}"[:300], attribute="data.alert.status")
        labels = check_labels(alert.get("labels"), "data.alert.labels")
        check_label_names(labels, "data.alert.labels")
        annotations = check_labels(alert.get("annotations"), "data.alert.annotations",
                                   value_max=ANNOTATION_VALUE_MAX)
        starts_at = _optional_str(alert, "startsAt", "data.alert")
        fingerprint = _optional_str(alert, "fingerprint", "data.alert")
        name = labels.get("alertname") or _extension(event, "alertname")
        origin = "alertmanager" if source.startswith(alertmanager.SOURCE_PREFIX) else "cloudevent"
    elif event_type == TYPE_SPLUNK_RESULT:
        status = "firing"
        data = _data(event)
        result = splunk.check_result(data.get("result"), "data.result")
        labels = splunk.result_labels(result, "data.result")
        search_name = data.get("search_name")
        if search_name is not None and not isinstance(search_name, str):
            raise InvalidInput("data.search_name: expected a string or null",
                               attribute="data.search_name")
        name = search_name or _extension(event, "alertname")
        for key in ("sid", "results_link", "owner", "app"):
            value = data.get(key)
            if isinstance(value, str) and value:
                annotations[key] = value
        origin = "splunk" if source.startswith(splunk.SOURCE_PREFIX) else "cloudevent"
    else:
        raise InvalidInput(f"type: unsupported event type {event_type!r}"[:300],
                           attribute="type")

    # Extensions (routing) and labels (action) must name the same place.
    namespace = _extension(event, "namespace")
    if namespace:
        check_namespace(namespace, "namespace")
        if labels.get("namespace") and labels["namespace"] != namespace:
            raise InvalidInput(f"namespace: extension {namespace!r} contradicts label "
                               f"{labels['namespace']!r}", attribute="namespace")
        labels.setdefault("namespace", namespace)
    label_cluster = next((labels[k] for k in CLUSTER_LABELS if labels.get(k)), "")
    cluster = _extension(event, "cluster")
    if cluster:
        check_cluster(cluster, "cluster")
        if label_cluster and label_cluster != cluster:
            raise InvalidInput(f"cluster: extension {cluster!r} contradicts label "
                               f"{label_cluster!r}", attribute="cluster")
    cluster = cluster or label_cluster

    when = event.get_time()
    return Signal(
        event_id=event.get_id(),
        source=source,
        type=event_type,
        status=status,
        name=check_text(name or "", "name"),
        labels=freeze(labels),
        annotations=freeze(annotations),
        starts_at=starts_at,
        fingerprint=fingerprint,
        cluster=cluster,
        origin=origin,
        traceparent=_extension(event, "traceparent"),
        tracestate=_extension(event, "tracestate"),
        time=format_time(when) if when is not None else "",
        data=freeze(data),
    )
