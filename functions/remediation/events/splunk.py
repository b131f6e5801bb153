"""Splunk webhook alert action -> one CloudEvent.

Splunk POSTs ``{"result": {...}, "sid", "results_link", "search_name",
"owner", "app"}`` where ``result`` is the FIRST result row, its values are
strings and multivalue fields are arrays of strings; ``search_name`` may be
null. The event:

- ``id``: ``<sid>:<digest of the result row>``. The sid names the search
  job; with "trigger for each result" one job fires the action once per row,
  so the row is part of the identity. A re-sent notification (same job, same
  row) keeps the same id, so duplicates are still recognised.
- ``source``: ``/splunk/<app>`` (``/splunk/search`` when the app is absent).
- ``type``: :data:`TYPE_SPLUNK_RESULT`; ``subject``: the search name.
- ``time``: the row's ``_time`` when it is an epoch number or an RFC 3339
  timestamp, absent otherwise (never "now": the adapter is pure).
- extensions: ``alertname`` (the search name, when present), ``namespace`` and
  ``cluster`` (``cluster``, else ``k8s_cluster``) when the row has them, and
  ``remediation`` from ``routes(search_name or "", labels)``.
- data: the whole payload (``result`` as a plain, checked dict).

The row as labels (:func:`result_labels`): multivalue fields give their first
value; Splunk's internal fields (``_raw``, ``_time``, ``_serial``...) and
values longer than a label may be (free text such as log lines) stay in the
data but are not labels. Label values that name Kubernetes objects must be
valid names, else the whole payload is rejected (InvalidInput).

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

from cloudevents.core.v1.event import CloudEvent

from ..errors import InvalidInput
from ..model import TYPE_SPLUNK_RESULT, stable_digest
from .binding import JSON_CONTENT_TYPE, SPECVERSION, new_event, parse_time, validate_attributes
from .names import (
    CLUSTER_LABELS,
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    check_label_names,
    check_text,
)

__all__ = ["SOURCE_PREFIX", "check_result", "result_labels", "splunk_to_event"]

SOURCE_PREFIX: Final = "/splunk/"
DEFAULT_APP: Final = "search"
#: Longest field value accepted in a result row.
MAX_FIELD_CHARS: Final = 65536
#: Most values accepted in one multivalue field.
MAX_MULTIVALUE: Final = 1000

Routes = Callable[[str, Mapping[str, str]], str]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number",
            float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def check_result(result: object, attribute: str = "result") -> dict[str, str | list[str]]:
    """A plain copy of a Splunk result row: string keys, values strings or arrays
    of strings. ``None`` counts as an empty row."""
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        raise InvalidInput(f"{attribute}: expected an object, not {_type_name(result)}",
                           attribute=attribute)
    out: dict[str, str | list[str]] = {}
    for key, value in result.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{attribute}: field names must be non-empty strings",
                               attribute=attribute)
        where = f"{attribute}.{key}"
        if isinstance(value, str):
            values = [value]
            out[key] = value
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_MULTIVALUE:
                raise InvalidInput(f"{where}: more than {MAX_MULTIVALUE} values",
                                   attribute=where)
            values = list(value)
            out[key] = values
        else:
            raise InvalidInput(f"{where}: expected a string or an array of strings, not "
                               f"{_type_name(value)}", attribute=where)
        for v in values:
            if not isinstance(v, str):
                raise InvalidInput(f"{where}: multivalue items must be strings, not "
                                   f"{_type_name(v)}", attribute=where)
            if len(v) > MAX_FIELD_CHARS:
                raise InvalidInput(f"{where}: longer than {MAX_FIELD_CHARS} characters",
                                   attribute=where)
    return out


def result_labels(result: Mapping[str, Any], attribute: str = "result") -> dict[str, str]:
    """Labels from a (checked) result row: first value of multivalue fields;
    internal ``_`` fields, empty multivalues and over-long keys or values are
    left out. Object-naming labels are validated (InvalidInput)."""
    labels: dict[str, str] = {}
    for key, value in result.items():
        if key.startswith("_") or len(key) > LABEL_KEY_MAX:
            continue
        first = value if isinstance(value, str) else (value[0] if value else None)
        if isinstance(first, str) and len(first) <= LABEL_VALUE_MAX:
            labels[key] = first
    check_label_names(labels, attribute)
    return labels


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"{key}: expected a string or null, not {_type_name(value)}",
                       attribute=key)


def _row_time(value: object) -> datetime | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value:
        return None
    try:
        epoch = float(value)
    except ValueError:
        return parse_time(value)
    if math.isnan(epoch) or not 0 < epoch < 253402300800:  # outside years 1970-9999
        return None
    return datetime.fromtimestamp(epoch, tz=UTC)


def splunk_to_event(payload: Mapping[str, Any], *, routes: Routes | None = None) -> CloudEvent:
    """The CloudEvent for one Splunk webhook notification (see module docstring)."""
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"payload: expected a JSON object, not {_type_name(payload)}",
                           attribute="payload")
    sid = payload.get("sid")
    if not isinstance(sid, str) or not sid:
        raise InvalidInput("sid: required non-empty string missing", attribute="sid")
    check_text(sid, "sid")
    search_name = _optional_str(payload, "search_name")
    if search_name is not None:
        check_text(search_name, "search_name")
    app = _optional_str(payload, "app")
    if app:
        check_text(app, "app", max_chars=256)
    for key in ("owner", "results_link"):
        _optional_str(payload, key)
    result = check_result(payload.get("result"))
    labels = result_labels(result)

    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": f"{sid}:{stable_digest(result, length=12)}",
        "source": SOURCE_PREFIX + quote(app or DEFAULT_APP, safe=""),
        "type": TYPE_SPLUNK_RESULT,
        "datacontenttype": JSON_CONTENT_TYPE,
    }
    t = _row_time(result.get("_time"))
    if t is not None:
        attributes["time"] = t
    if search_name:
        attributes["subject"] = search_name
        attributes["alertname"] = search_name
    if labels.get("namespace"):
        attributes["namespace"] = labels["namespace"]
    for key in CLUSTER_LABELS:
        if labels.get(key):
            attributes["cluster"] = labels[key]
            break
    if routes is not None:
        function = routes(search_name or "", MappingProxyType(labels))
        if function:
            attributes["remediation"] = check_text(function, "remediation", max_chars=253)

    data = dict(payload)
    data["result"] = result
    return new_event(validate_attributes(attributes), data)
