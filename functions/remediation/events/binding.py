"""CloudEvents over HTTP: a neutral message (headers, body) <-> events.

Like the bindings of cloudevents sdk-python, this module does no I/O: it turns
a header mapping and body bytes into validated
:class:`cloudevents.core.v1.event.CloudEvent` objects and back. Only the
SDK's event class is used; the content-mode dispatch, JSON handling and
validation are done here because the SDK 2.x ``from_http_event`` chooses
binary mode whenever any ``ce-`` header is present (the spec decides by
``Content-Type``), silently falls back to text on malformed JSON, and invents
a ``time`` attribute when none was sent.

Spec references (cloudevents/spec v1.0.2):
- core ``spec.md`` 3.1 (required attributes), 3.2 (optional), 3.3 and
  "Attribute Naming Convention" (extension names ``[a-z0-9]``, not ``data``),
  "Type System" (String: no control characters; Timestamp: RFC 3339);
- ``bindings/http-protocol-binding.md`` 3.1 (binary mode: ``ce-`` headers,
  3.1.3.2 percent-encoding, ``Content-Type`` carries ``datacontenttype``),
  3.2 (structured mode), 3.3 (batched mode);
- ``formats/json-format.md`` 2.3 (``data`` / ``data_base64``), 3 (null
  attribute values are absent), 4 (batch format).

Every error is :class:`~remediation.errors.InvalidInput` whose ``attribute``
names the offending attribute (``"data"`` for the payload, ``"batch"`` for
the batch envelope, ``"content-type"`` for an unsupported format).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import accumulate
from typing import Any, Final
from urllib.parse import quote, unquote

from cloudevents.core.exceptions import BaseCloudEventException, CloudEventValidationError
from cloudevents.core.v1.event import CloudEvent

from ..errors import InvalidInput

__all__ = [
    "BATCH_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "event_dict",
    "event_from_dict",
    "format_time",
    "is_json_content_type",
    "new_event",
    "parse_http",
    "parse_time",
    "to_batch",
    "to_binary",
    "to_structured",
    "validate_attributes",
]

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
JSON_CONTENT_TYPE: Final = "application/json"

REQUIRED_ATTRIBUTES: Final = ("id", "source", "specversion", "type")
OPTIONAL_ATTRIBUTES: Final = ("datacontenttype", "dataschema", "subject", "time")
SPECVERSION: Final = "1.0"

#: Longest accepted string attribute value (ids, sources, extension values).
MAX_ATTRIBUTE_CHARS: Final = 8192
#: Deepest accepted JSON nesting, for every JSON input (issue 15: data nested
#: 500-900 deep parsed, then broke every recursive walk after it with a 500).
MAX_JSON_DEPTH: Final = 64

_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]+")
# spec.md "Type System", String: U+0000-U+001F and U+007F-U+009F are not allowed.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_JSON_MEDIA_TYPE: Final = re.compile(r"(application|text)/([a-z0-9!#$&^_.+-]+\+)?json")
# RFC 3339 section 5.6 date-time (fractional seconds of any length).
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
# http-protocol-binding.md 3.1.3.2: percent-encode space, '"', '%' and all
# characters outside printable ASCII (U+0021-U+007E).
_HEADER_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')


# --------------------------------------------------------------------------- time


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None when it is not one.

    Fractional seconds beyond microseconds (Go's nanoseconds) are truncated.
    """
    if not isinstance(text, str) or _RFC3339.fullmatch(text) is None:
        return None
    head, sep, rest = text.partition(".")
    if sep:  # truncate the fraction to 6 digits, keep the offset
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None


def format_time(value: datetime) -> str:
    """RFC 3339 text for an aware datetime, ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# --------------------------------------------------------------------------- helpers


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``application/json``, ``text/json`` and ``*/*+json`` (params ignored)."""
    if not content_type:
        return False
    return _JSON_MEDIA_TYPE.fullmatch(_media_type(content_type)) is not None


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _where(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_text(value: Any, what: str, attribute: str, depth: int = 0) -> None:
    """Every string must be encodable as UTF-8: JSON allows a lone surrogate
    escape ("\\ud800"), which Python decodes into a str that cannot be
    encoded again (hashing, headers, the API would all fail later)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{what}: a string holds a lone UTF-16 surrogate",
                               attribute=attribute) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, what, attribute, depth + 1)
            _check_text(v, what, attribute, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, what, attribute, depth + 1)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped),
    without parsing it: regular expressions and one pass over the brackets.
    A text with at most MAX_JSON_DEPTH brackets answers their count (an
    upper bound, cheaply)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return text.count("[") + text.count("{")
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def load_json(body: bytes | str, what: str = "body", attribute: str = "body") -> Any:
    """Strict JSON: no NaN/Infinity, no silent fallback, nesting at most
    :data:`MAX_JSON_DEPTH`, no lone surrogates. Every failure is an
    ``InvalidInput`` naming ``what``."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    raw = body if isinstance(body, str) else body.decode("utf-8", errors="replace")
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidInput(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels",
                           attribute=attribute)
    try:
        value = json.loads(body, parse_constant=no_constants)
    except RecursionError:
        raise InvalidInput(f"{what}: JSON nested too deeply", attribute=attribute) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInput(f"{what}: not valid JSON ({exc})", attribute=attribute) from None
    text = body if isinstance(body, str) else body.decode("utf-8", errors="replace")
    if _SURROGATE_ESCAPE.search(text):  # fast path: only then walk the document
        _check_text(value, what, attribute)
    return value


_loads = load_json


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      default=_json_default).encode("utf-8")


def _check_string(value: object, name: str, prefix: str, *, empty_ok: bool = False) -> str:
    where = _where(prefix, name)
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: must be a string, not {_type_name(value)}",
                           attribute=name)
    if not value and not empty_ok:
        raise InvalidInput(f"{where}: must not be empty", attribute=name)
    if len(value) > MAX_ATTRIBUTE_CHARS:
        raise InvalidInput(f"{where}: longer than {MAX_ATTRIBUTE_CHARS} characters",
                           attribute=name)
    if _CONTROL.search(value):
        raise InvalidInput(f"{where}: contains control characters", attribute=name)
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number",
            float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def validate_attributes(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validated copy of context attributes (no ``data``); ``time`` becomes a datetime.

    Null values are treated as absent (json-format.md section 3).
    ``prefix`` is put in front of attribute names in messages (``events[2]``).
    """
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        if not isinstance(name, str):
            raise InvalidInput(f"{prefix or 'event'}: attribute names must be strings",
                               attribute=str(name))
        if value is None:
            continue
        if name in REQUIRED_ATTRIBUTES or name in ("datacontenttype", "dataschema", "subject"):
            out[name] = _check_string(value, name, prefix)
        elif name == "time":
            if isinstance(value, datetime):
                parsed = value if value.tzinfo is not None else None
            else:
                parsed = parse_time(_check_string(value, name, prefix))
            if parsed is None:
                raise InvalidInput(f"{_where(prefix, name)}: not an RFC 3339 timestamp "
                                   "with a time zone", attribute=name)
            out[name] = parsed
        else:
            if name == "data" or not _EXTENSION_NAME.fullmatch(name):
                raise InvalidInput(
                    f"{_where(prefix, name)}: not a valid extension attribute name "
                    "(lowercase letters and digits only, not 'data')", attribute=name)
            if isinstance(value, (bool, int)):
                out[name] = value  # Boolean and Integer (spec.md "Type System")
            else:
                out[name] = _check_string(value, name, prefix, empty_ok=True)
    for name in REQUIRED_ATTRIBUTES:
        if name not in out:
            raise InvalidInput(f"{_where(prefix, name)}: required attribute missing",
                               attribute=name)
    if out["specversion"] != SPECVERSION:
        raise InvalidInput(f"{_where(prefix, 'specversion')}: unsupported specversion "
                           f"{out['specversion']!r} (only {SPECVERSION!r})",
                           attribute="specversion")
    return out


def new_event(attributes: dict[str, Any], data: Any = None, *,
              trusted: bool = False) -> CloudEvent:
    """Build a CloudEvent from already valid attributes, without invented values.

    The SDK constructor adds ``time = now`` when no time is given; an event
    must not claim a time it does not have (and must serialise the same way
    twice), so that attribute is removed again. ``attributes`` is taken over.

    ``trusted=True`` skips the SDK's per-event validation; only for adapters
    that build every attribute themselves from checked values (an alert storm
    of 20,000 events spends a third of its time there otherwise). It sets the
    same two fields ``CloudEvent.__init__`` sets in sdk-python 2.x (a test
    pins this).
    """
    if trusted:
        event = CloudEvent.__new__(CloudEvent)
        event._attributes = attributes
        event._data = data
        return event
    had_time = "time" in attributes
    try:
        event = CloudEvent(attributes, data)
    except CloudEventValidationError as exc:
        name = next(iter(exc.errors), "event")
        raise InvalidInput(f"{name}: {'; '.join(str(e) for e in exc.errors[name])}",
                           attribute=name) from None
    except BaseCloudEventException as exc:
        raise InvalidInput(str(exc), attribute=getattr(exc, "attribute_name", None)) from None
    if not had_time:
        event.get_attributes().pop("time", None)
    return event


# --------------------------------------------------------------------------- dict form


def event_from_dict(d: Mapping[str, Any], *, where: str = "") -> CloudEvent:
    """A CloudEvent from its structured JSON form (json-format.md), validated."""
    if not isinstance(d, Mapping):
        raise InvalidInput(f"{where or 'event'}: expected a JSON object, not {_type_name(d)}",
                           attribute="event")
    attrs = dict(d)
    has_data = "data" in attrs and attrs["data"] is not None
    data = attrs.pop("data", None)
    data_b64 = attrs.pop("data_base64", None)
    if has_data and data_b64 is not None:
        raise InvalidInput(f"{_where(where, 'data')}: both data and data_base64 are set",
                           attribute="data")
    if data_b64 is not None:
        if not isinstance(data_b64, str):
            raise InvalidInput(f"{_where(where, 'data_base64')}: must be a base64 string",
                               attribute="data_base64")
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{_where(where, 'data_base64')}: not valid base64",
                               attribute="data_base64") from None
    return new_event(validate_attributes(attrs, where), data)


def event_dict(event: CloudEvent) -> dict[str, Any]:
    """The structured JSON form of ``event`` (json-format.md), JSON-ready."""
    out: dict[str, Any] = {}
    for name, value in event.get_attributes().items():
        if value is None:
            continue
        out[name] = format_time(value) if isinstance(value, datetime) else value
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        out["data_base64"] = base64.b64encode(data).decode("ascii")
    elif data is not None:
        out["data"] = data
    return out


# --------------------------------------------------------------------------- HTTP in


def parse_http(headers: Mapping[str, str], body: bytes, *,
               max_events: int = 1000) -> list[CloudEvent]:
    """The events in one HTTP request, by content mode (http-protocol-binding.md 3).

    ``application/cloudevents+json``: one structured event; ``application/
    cloudevents-batch+json``: a non-empty JSON array of at most ``max_events``
    structured events; anything else: binary mode (``ce-*`` headers).
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    lowered = {str(k).lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type") or ""
    media = _media_type(content_type)

    if media.startswith("application/cloudevents-batch"):
        if media != BATCH_CONTENT_TYPE:
            raise InvalidInput(f"content-type: unsupported batch format {media!r}",
                               attribute="content-type")
        doc = _loads(body, "batch", "batch")
        if not isinstance(doc, list):
            raise InvalidInput(f"batch: expected a JSON array, not {_type_name(doc)}",
                               attribute="batch")
        if not doc:
            raise InvalidInput("batch: empty batch, expected at least one event",
                               attribute="batch")
        if len(doc) > max_events:
            raise InvalidInput(f"batch: {len(doc)} events, more than the limit of "
                               f"{max_events}", attribute="batch")
        return [event_from_dict(item, where=f"events[{i}]") for i, item in enumerate(doc)]

    if media.startswith("application/cloudevents"):
        if media != STRUCTURED_CONTENT_TYPE:
            raise InvalidInput(f"content-type: unsupported event format {media!r} "
                               f"(only {STRUCTURED_CONTENT_TYPE})", attribute="content-type")
        doc = _loads(body, "event", "event")
        return [event_from_dict(doc)]

    return [_parse_binary(lowered, content_type, body)]


def _parse_binary(headers: Mapping[str, str], content_type: str, body: bytes) -> CloudEvent:
    attrs: dict[str, Any] = {}
    for name, raw in headers.items():
        if not name.startswith("ce-"):
            continue
        attr = name[3:]
        if not isinstance(raw, str):
            raise InvalidInput(f"{attr}: header value must be a string", attribute=attr)
        try:
            attrs[attr] = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidInput(f"{attr}: percent-encoded header value is not UTF-8",
                               attribute=attr) from None
    if not attrs:
        raise InvalidInput(
            "not a CloudEvent: no ce- headers and Content-Type is not "
            f"{STRUCTURED_CONTENT_TYPE} or {BATCH_CONTENT_TYPE}", attribute="specversion")
    # Content-Type carries datacontenttype (3.1.1); a stray ce-datacontenttype
    # is used only when Content-Type is absent.
    if content_type:
        attrs["datacontenttype"] = content_type
    validated = validate_attributes(attrs)
    return new_event(validated, _binary_data(validated.get("datacontenttype"), body))


def _binary_data(datacontenttype: str | None, body: bytes) -> Any:
    if not body:
        return None
    if is_json_content_type(datacontenttype):
        return _loads(body, "data", "data")
    if datacontenttype and _media_type(datacontenttype).startswith("text/"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("data: text body is not UTF-8", attribute="data") from None
    return bytes(body)


# --------------------------------------------------------------------------- HTTP out


def _encode_header(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = format_time(value)
    else:
        text = str(value)
    return quote(text, safe=_HEADER_SAFE)


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary content mode: ``ce-*`` headers (percent-encoded) and the data as body."""
    headers: dict[str, str] = {}
    datacontenttype: str | None = None
    for name, value in event.get_attributes().items():
        if value is None:
            continue
        if name == "datacontenttype":
            datacontenttype = str(value)
        else:
            headers[f"ce-{name}"] = _encode_header(value)
    data = event.get_data()
    if data is None:
        body = b""
    elif isinstance(data, (bytes, bytearray)):
        body = bytes(data)
    elif isinstance(data, str) and datacontenttype and not is_json_content_type(
            datacontenttype):
        body = data.encode("utf-8")
    else:
        body = _dumps(data)
        datacontenttype = datacontenttype or JSON_CONTENT_TYPE
    if datacontenttype:
        headers["content-type"] = datacontenttype
    return headers, body


def to_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Structured content mode: the whole event as one JSON document."""
    return ({"content-type": f"{STRUCTURED_CONTENT_TYPE}; charset=utf-8"},
            _dumps(event_dict(event)))


def to_batch(events: Iterable[CloudEvent]) -> tuple[dict[str, str], bytes]:
    """Batched content mode: a JSON array of structured events."""
    return ({"content-type": f"{BATCH_CONTENT_TYPE}; charset=utf-8"},
            _dumps([event_dict(e) for e in events]))
