"""Who sent this CloudEvent? Sender authentication for ``POST /`` and
``POST /dead-letters``: nobody acts on an event from a stranger.

Two ways to be admitted, either suffices:

- **Knative's OIDC sender identity**: the Broker (with the
  ``authentication-oidc`` feature on) delivers with ``Authorization:
  Bearer <JWT>``, a ServiceAccount token of the Trigger's identity whose
  audience is the receiving Service. A :class:`TokenVerifier` (the port;
  ``clients.oidc`` implements it with the issuer's keys) checks signature,
  issuer, audience, expiry and, optionally, the subject. A bearer token that
  does not verify is refused outright (no fallback to the next method).
- **An HMAC-signed event** (clusters without OIDC): the webhook adapter signs
  each event it forwards with the shared key ``REMEDIATION_EVENT_HMAC_KEY``;
  the signature rides as the extension attribute ``remediationsig`` (the
  Broker keeps extensions, not arbitrary HTTP headers), ``t=<unix>,v1=<hex>``,
  over the event's identity, routing attributes and a digest of its data, so
  it survives binary, structured and batched mode alike and the dead-letter
  sink's added ``knativeerror*`` extensions. Older than ``max_age``: refused.

Approval events (``io.inferenceremediation.approval.granted.v1``) carry their
own HMAC signature (``guard.approval``), checked with the approval secret
before anything is released; they are admitted to that check.

Without either method configured every event is refused, unless the operator
sets ``REMEDIATION_ALLOW_UNAUTHENTICATED_EVENTS=true`` (warned at start-up).

Pure: no I/O (the token verifier is handed in).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..model import TYPE_APPROVAL_GRANTED
from ..settings import SenderAuthSettings

#: the extension attribute carrying the adapter's signature
SIGNATURE_EXTENSION = "remediationsig"
SIGNATURE_HEADER = f"ce-{SIGNATURE_EXTENSION}"
_SIG = re.compile(r"^t=(\d{1,12}),v1=([0-9a-f]{64})$")
#: a signature from up to this far in the future is accepted (clock skew)
FUTURE_SKEW = 300.0


class SenderRefused(Exception):
    """The sender is not authenticated: answer 401, act on nothing."""


@dataclass(frozen=True)
class Sender:
    method: str  # "oidc" | "hmac" | "approval-signature" | "unauthenticated"
    identity: str = ""


class TokenVerifier(Protocol):
    def verify(self, token: str) -> str:
        """The token's subject when it verifies; ``SenderRefused`` saying why
        not; ``TemporaryError`` when the issuer's keys cannot be read."""
        ...


def _data_digest(data: Any) -> str:
    if data is None:
        raw = b""
    elif isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    elif isinstance(data, str):
        raw = data.encode("utf-8")
    else:
        raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         default=str).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def _attr(attrs: Mapping[str, Any], name: str) -> str:
    value = attrs.get(name)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


#: attributes the signature leaves out: itself, what Knative adds on the way
#: (``knativeerror*`` on dead letters, ``knativebrokerttl``...) and tracing
UNSIGNED_PREFIXES = ("knative",)
UNSIGNED_ATTRIBUTES = frozenset({SIGNATURE_EXTENSION, "traceparent", "tracestate"})


def _signed(name: str) -> bool:
    return name not in UNSIGNED_ATTRIBUTES and not name.startswith(UNSIGNED_PREFIXES)


def event_digest(event: Any, signed_at: int) -> bytes:
    """Every attribute (but those above) and a digest of the data: a signed
    event cannot be re-routed (``remediation``), sent at another cluster
    (``cluster``) or given other data."""
    attrs = event.get_attributes()
    lines = ["inferenceremediation-event-v1", str(signed_at)]
    lines += [f"{name}={_attr(attrs, name)}" for name in sorted(attrs)
              if _signed(name) and attrs.get(name) is not None]
    lines.append(f"data={_data_digest(event.get_data())}")
    return "\n".join(lines).encode("utf-8")


def event_signature(key: str, event: Any, signed_at: int) -> str:
    mac = hmac.new(key.encode(), event_digest(event, signed_at), hashlib.sha256).hexdigest()
    return f"t={signed_at},v1={mac}"


def verify_event_signature(key: str, event: Any, *, now: float, max_age: float) -> None:
    """``SenderRefused`` unless ``event`` carries a fresh signature by ``key``."""
    value = event.get_attributes().get(SIGNATURE_EXTENSION)
    if not value:
        raise SenderRefused("event is not signed (no remediationsig attribute)")
    match = _SIG.match(str(value))
    if match is None:
        raise SenderRefused("event signature is malformed")
    signed_at = int(match.group(1))
    expected = event_signature(key, event, signed_at)
    if not hmac.compare_digest(str(value).encode(), expected.encode()):
        raise SenderRefused("event signature does not match")
    if signed_at > now + FUTURE_SKEW:
        raise SenderRefused("event signature is from the future")
    if now - signed_at > max_age:
        raise SenderRefused(f"event signature is older than {int(max_age)}s")


def subject_allowed(subject: str, allowed: Iterable[str]) -> bool:
    """EventPolicy-like matching: exact, or a trailing ``*`` for any suffix."""
    patterns = tuple(allowed)
    if not patterns:
        return True
    for pattern in patterns:
        if pattern.endswith("*") and subject.startswith(pattern[:-1]):
            return True
        if subject == pattern:
            return True
    return False


class SenderAuthenticator:
    """Decides whether a request's sender may be heard, in two steps: from the
    headers alone (before the body is read, where the method allows), then,
    for HMAC-signed events, from the parsed events."""

    def __init__(self, settings: SenderAuthSettings, verifier: TokenVerifier | None,
                 *, clock: Any) -> None:
        self.settings = settings
        self.verifier = verifier
        self.clock = clock

    def before_body(self, headers: Mapping[str, str]) -> Sender | None:
        """A :class:`Sender` when the headers settle it, None when the events
        must be read (HMAC signatures), ``SenderRefused`` otherwise."""
        cfg = self.settings
        lowered = {str(k).lower(): v for k, v in headers.items()}
        scheme, _, token = (lowered.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() and self.verifier is not None:
            return Sender("oidc", self.verifier.verify(token.strip()))
        if not cfg.configured:
            if cfg.allow_unauthenticated:
                return Sender("unauthenticated")
            raise SenderRefused("sender authentication is required and none is configured "
                                "on this function (see README, Security)")
        ctype = (lowered.get("content-type") or "").split(";")[0].strip().lower()
        binary = not ctype.startswith("application/cloudevents")
        if binary and SIGNATURE_HEADER not in lowered \
                and lowered.get("ce-type") != TYPE_APPROVAL_GRANTED:
            if cfg.allow_unauthenticated:
                return Sender("unauthenticated")
            raise SenderRefused("a valid OIDC bearer token or a signed event is required")
        return None

    def check_events(self, events: Iterable[Any]) -> Sender:
        """Every event must be signed (or be an approval, whose own signature
        is checked before it releases anything)."""
        cfg = self.settings
        now = float(self.clock())
        methods = set()
        for event in events:
            if event.get_type() == TYPE_APPROVAL_GRANTED:
                methods.add("approval-signature")
                continue
            if not cfg.hmac_key:
                if cfg.allow_unauthenticated:
                    methods.add("unauthenticated")
                    continue
                raise SenderRefused("a valid OIDC bearer token is required")
            try:
                verify_event_signature(cfg.hmac_key.reveal(), event, now=now,
                                       max_age=cfg.max_age)
            except SenderRefused:
                if cfg.allow_unauthenticated:
                    methods.add("unauthenticated")
                    continue
                raise
            methods.add("hmac")
        return Sender("+".join(sorted(methods)) or "hmac")


def sign_events(events: Iterable[Any], key: str, *, now: float, rebuild: Any) -> list[Any]:
    """The adapter's side: each event with its ``remediationsig`` attribute.
    ``rebuild(attributes, data)`` makes an event (``events.binding.new_event``)."""
    out = []
    for event in events:
        attrs = {k: v for k, v in event.get_attributes().items()
                 if k != SIGNATURE_EXTENSION}
        signed_at = int(now)
        base = rebuild(attrs, event.get_data())
        attrs = {**attrs, SIGNATURE_EXTENSION: event_signature(key, base, signed_at)}
        out.append(rebuild(attrs, event.get_data()))
    return out
