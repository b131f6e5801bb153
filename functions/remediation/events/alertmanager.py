"""Alertmanager webhook (version "4") -> one CloudEvent per alert.

Identity. The event ``id`` is a digest of the alert's ``fingerprint``,
``startsAt`` and ``status`` (of its sorted labels when an old sender omits
the fingerprint) and the ``source`` is ``/alertmanager/<receiver>``, never
the ``externalURL``. So every re-send of a group (each ``group_interval``
tick and ``repeat_interval``) and each peer of an HA pair produce the same
``source`` + ``id`` for the same alert, which is what CloudEvents consumers
(and this project's ledger) deduplicate on; the resolved notification of the
same alert is a different event (different status, different id).

Attributes. ``type`` is :data:`TYPE_ALERT_FIRING` or
:data:`TYPE_ALERT_RESOLVED` by the ALERT's status (a group that "fires" may
carry resolved alerts). ``time`` is ``startsAt`` (firing) or ``endsAt``
(resolved) when it is an RFC 3339 timestamp, absent otherwise; ``subject``
is the alertname. Extensions for Trigger filters: ``alertname``,
``severity``, ``namespace``, ``cluster`` (label ``cluster``, else
``k8s_cluster``) when the labels carry them, and ``remediation`` when a
``routes(alertname, labels)`` callable names a function.

Data. ``{"alert": <the alert>, "group": <group context>}`` where the group
context holds ``groupKey``, ``externalURL``, ``truncatedAlerts``,
``notification_reason``, ``receiver``, ``status``, ``groupLabels``,
``commonLabels``, ``commonAnnotations`` and ``routeLabels``. Fields that
older Alertmanagers do not send (``notification_reason`` before v0.32,
``routeLabels`` before v0.34) are accepted and appear as null / ``{}``. The
group context is built once and the SAME dict is shared by every event of
the payload (a 20,000-alert storm converts in a fraction of a second): treat
event data as read-only.

Validation, alert by alert. Types are checked strictly and label values that
name Kubernetes objects (namespace, pod, deployment, node, cluster...) must be
valid names (:mod:`.names`). What is wrong with the PAYLOAD (not an object,
another version, no receiver, ``alerts`` not an array, more alerts than
``max_alerts``) rejects it whole with :class:`InvalidInput` (the HTTP layer
answers 400). What is wrong with ONE ALERT rejects that alert only
(:func:`convert_alertmanager` returns it as an :class:`AlertRejection` with its
reason) and the others of the group go ahead: Alertmanager 0.25 does re-send
after a 4xx, not within the attempt but with the whole group at every
``group_interval`` while it has alerts, so a group answered 400 for one bad
alert would be refused forever and its valid alerts never acted on. The
strict :func:`alertmanager_to_events` (replay files, tests) raises on the
first bad alert instead. ``max_alerts`` (default :data:`MAX_ALERTS`) bounds
the work per request; the receiver's own ``max_alerts`` must keep a group
under the body limit (see :data:`BYTES_PER_ALERT`). ``truncatedAlerts`` (the
alerts Alertmanager left out of a notification) is returned so the caller can
log and report it.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

from cloudevents.core.v1.event import CloudEvent

from ..errors import InvalidInput
from ..model import TYPE_ALERT_FIRING, TYPE_ALERT_RESOLVED, stable_digest
from .binding import JSON_CONTENT_TYPE, SPECVERSION, new_event, parse_time
from .names import (
    ANNOTATION_VALUE_MAX,
    CLUSTER_LABELS,
    check_label_names,
    check_labels,
    check_text,
)

__all__ = ["BYTES_PER_ALERT", "MAX_ALERTS", "SOURCE_PREFIX", "AlertRejection", "Conversion",
           "alert_event_id", "alertmanager_to_events", "convert_alertmanager",
           "max_alerts_for"]

#: Room for one alert in a webhook body, as Alertmanager 0.25 sends them:
#: labels, annotations (summary, description, runbook_url), timestamps,
#: generatorURL (the rule's whole expression, URL-encoded) and fingerprint.
#: A bare alert is about 320 bytes; the shipped rules' alerts measure up to
#: 1,105 (VLLMEngineHung: its generatorURL carries the whole expression;
#: tests/test_alertmanager_e2e.py measures it), so 1.5 KiB keeps a margin.
BYTES_PER_ALERT: Final = 1536
#: Room for the group context (groupLabels, commonLabels, commonAnnotations...).
GROUP_OVERHEAD_BYTES: Final = 16 * 1024


def max_alerts_for(max_body_bytes: int) -> int:
    """The receiver's ``max_alerts`` that keeps a notification under the
    webhook's body limit (what the shipped receiver example sets)."""
    return max(1, (max_body_bytes - GROUP_OVERHEAD_BYTES) // BYTES_PER_ALERT)


#: Default limit on alerts per payload (bounds the work of one conversion; in
#: the webhook the body limit binds first: see :func:`max_alerts_for`).
MAX_ALERTS: Final = 50_000


@dataclass(frozen=True)
class AlertRejection:
    """One alert of a group that cannot be acted on, and why."""

    index: int
    event_id: str  # the id its event would have had ("" when not computable)
    alertname: str
    reason: str
    attribute: str


@dataclass(frozen=True)
class Conversion:
    """An Alertmanager payload, alert by alert."""

    events: list[CloudEvent]
    rejected: list[AlertRejection]
    truncated: int  # truncatedAlerts: alerts Alertmanager left out of this notification
SOURCE_PREFIX: Final = "/alertmanager/"
WEBHOOK_VERSION: Final = "4"
_STATUSES: Final = {"firing": TYPE_ALERT_FIRING, "resolved": TYPE_ALERT_RESOLVED}
_GROUP_LABEL_FIELDS: Final = ("groupLabels", "commonLabels", "routeLabels")

Routes = Callable[[str, Mapping[str, str]], str]


def alert_event_id(fingerprint: str, starts_at: str, status: str,
                   labels: Mapping[str, str] | None = None) -> str:
    """The deterministic event id of one alert notification."""
    if fingerprint:
        # Length-prefixed fields: unambiguous, and cheaper than JSON for storms.
        text = f"am1|{len(fingerprint)}:{fingerprint}|{len(starts_at)}:{starts_at}|{status}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]
    return stable_digest({"labels": dict(labels or {})}, starts_at, status, length=32)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number",
            float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def _optional_str(payload: Mapping[str, Any], key: str, where: str = "") -> str | None:
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    path = f"{where}.{key}" if where else key
    raise InvalidInput(f"{path}: expected a string, not {_type_name(value)}", attribute=path)


def _group_context(payload: Mapping[str, Any], receiver: str) -> dict[str, Any]:
    truncated = payload.get("truncatedAlerts")
    if truncated is not None and (isinstance(truncated, bool) or not isinstance(truncated, int)
                                  or truncated < 0):
        raise InvalidInput("truncatedAlerts: expected a non-negative integer",
                           attribute="truncatedAlerts")
    status = payload.get("status")
    if status is not None and (not isinstance(status, str) or status not in _STATUSES):
        raise InvalidInput(f"status: expected 'firing' or 'resolved', not {status!r}"[:200],
                           attribute="status")
    group: dict[str, Any] = {
        "groupKey": _optional_str(payload, "groupKey"),
        "externalURL": _optional_str(payload, "externalURL"),
        "truncatedAlerts": truncated,
        "notification_reason": _optional_str(payload, "notification_reason"),
        "receiver": receiver,
        "status": status,
    }
    for key in _GROUP_LABEL_FIELDS:
        group[key] = check_labels(payload.get(key), key)
    group["commonAnnotations"] = check_labels(payload.get("commonAnnotations"),
                                              "commonAnnotations",
                                              value_max=ANNOTATION_VALUE_MAX)
    return group


def alertmanager_to_events(payload: Mapping[str, Any], *, routes: Routes | None = None,
                           max_alerts: int = MAX_ALERTS) -> list[CloudEvent]:
    """One CloudEvent per alert of an Alertmanager webhook payload (version "4").

    Strict: raises InvalidInput (attribute = JSON path of the offender) for a
    bad payload or the first bad alert (replay files, tests); the webhook
    judges alert by alert with :func:`convert_alertmanager`.
    """
    converted = convert_alertmanager(payload, routes=routes, max_alerts=max_alerts)
    if converted.rejected:
        first = converted.rejected[0]
        raise InvalidInput(first.reason, attribute=first.attribute)
    return converted.events


def convert_alertmanager(payload: Mapping[str, Any], *, routes: Routes | None = None,
                         max_alerts: int = MAX_ALERTS) -> Conversion:
    """Events for the valid alerts of a payload, rejections for the others.

    Raises InvalidInput only for a bad payload as a whole (see the module
    docstring)."""
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"payload: expected a JSON object, not {_type_name(payload)}",
                           attribute="payload")
    version = payload.get("version")
    if version != WEBHOOK_VERSION:
        raise InvalidInput(f"version: unsupported Alertmanager webhook version "
                           f"{version!r} (only \"4\")"[:200], attribute="version")
    receiver = payload.get("receiver")
    if not isinstance(receiver, str) or not receiver:
        raise InvalidInput("receiver: expected a non-empty string", attribute="receiver")
    check_text(receiver, "receiver", max_chars=256)
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidInput(f"alerts: expected an array, not {_type_name(alerts)}",
                           attribute="alerts")
    if len(alerts) > max_alerts:
        raise InvalidInput(f"alerts: {len(alerts)} alerts, more than the limit of "
                           f"{max_alerts} per payload (set max_alerts in the receiver)",
                           attribute="alerts")

    group = _group_context(payload, receiver)
    source = SOURCE_PREFIX + quote(receiver, safe="")
    times: dict[str, datetime | None] = {}  # storms share a handful of timestamps

    def when(text: Any) -> datetime | None:
        if not isinstance(text, str) or not text:
            return None
        if text not in times:
            parsed = parse_time(text)
            times[text] = parsed if parsed is not None and parsed.year > 1 else None
        return times[text]

    events: list[CloudEvent] = []
    rejected: list[AlertRejection] = []
    for i, alert in enumerate(alerts):
        try:
            events.append(_alert_event(alert, f"alerts[{i}]", group, source, when, routes))
        except InvalidInput as exc:
            rejected.append(_rejection(i, alert, exc))
    return Conversion(events, rejected, int(group["truncatedAlerts"] or 0))


def _rejection(index: int, alert: Any, exc: InvalidInput) -> AlertRejection:
    """What can still be said about a bad alert: its would-be id and name."""
    event_id = alertname = ""
    if isinstance(alert, Mapping):
        fingerprint, starts_at = alert.get("fingerprint"), alert.get("startsAt")
        status, labels = alert.get("status"), alert.get("labels")
        if isinstance(fingerprint, str) and fingerprint and isinstance(starts_at, str) \
                and isinstance(status, str):
            event_id = alert_event_id(fingerprint[:256], starts_at[:64], status[:16])
        if isinstance(labels, Mapping) and isinstance(labels.get("alertname"), str):
            alertname = labels["alertname"][:200]
    return AlertRejection(index, event_id, alertname, str(exc), exc.attribute or "")


def _alert_event(alert: Any, where: str, group: dict[str, Any], source: str,
                 when: Callable[[Any], datetime | None], routes: Routes | None) -> CloudEvent:
    if not isinstance(alert, Mapping):
        raise InvalidInput(f"{where}: expected an object, not {_type_name(alert)}",
                           attribute=where)
    status = alert.get("status")
    event_type = _STATUSES.get(status) if isinstance(status, str) else None
    if event_type is None:
        raise InvalidInput(f"{where}.status: expected 'firing' or 'resolved', not "
                           f"{status!r}"[:200], attribute=f"{where}.status")
    starts_at = alert.get("startsAt")
    if not isinstance(starts_at, str) or not starts_at:
        raise InvalidInput(f"{where}.startsAt: required timestamp string missing",
                           attribute=f"{where}.startsAt")
    ends_at = _optional_str(alert, "endsAt", where)
    fingerprint = _optional_str(alert, "fingerprint", where) or ""
    _optional_str(alert, "generatorURL", where)
    labels = check_labels(alert.get("labels"), f"{where}.labels")
    annotations = check_labels(alert.get("annotations"), f"{where}.annotations",
                               value_max=ANNOTATION_VALUE_MAX)
    check_label_names(labels, f"{where}.labels")

    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": alert_event_id(fingerprint, starts_at, str(status), labels),
        "source": source,
        "type": event_type,
        "datacontenttype": JSON_CONTENT_TYPE,
    }
    t = when(starts_at if status == "firing" else ends_at)
    if t is not None:
        attributes["time"] = t
    alertname = labels.get("alertname", "")
    if alertname:
        attributes["subject"] = check_text(alertname, f"{where}.labels.alertname")
        attributes["alertname"] = alertname
    severity = labels.get("severity", "")
    if severity:
        attributes["severity"] = check_text(severity, f"{where}.labels.severity")
    if labels.get("namespace"):
        attributes["namespace"] = labels["namespace"]  # checked by check_label_names
    for key in CLUSTER_LABELS:
        if labels.get(key):
            attributes["cluster"] = labels[key]
            break
    if routes is not None:
        function = routes(alertname, MappingProxyType(labels))
        if function:
            attributes["remediation"] = check_text(function, "remediation", max_chars=253)

    copy = dict(alert)
    copy["labels"] = labels
    copy["annotations"] = annotations
    return new_event(attributes, {"alert": copy, "group": group}, trusted=True)
