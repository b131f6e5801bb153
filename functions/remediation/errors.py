"""The exception tree. Two kinds, as in kopf: permanent (never retry) and
temporary (retry may help; answer 5xx so Knative/Alertmanager redeliver).

    RemediationError
    ├── PermanentError
    │   ├── InvalidInput (also a ValueError; carries ``attribute``)
    │   ├── Unauthenticated
    │   └── ActionFailed            (the cluster/Vault refused for good: 403, 400, 422)
    └── TemporaryError(delay=...)
        ├── DependencyUnavailable   (OPA/Vault/API down, slow, 429, 5xx, sealed)
        └── ClaimBusy               (another worker holds this key right now)
"""

from __future__ import annotations


class RemediationError(Exception):
    """Base of every error this project raises on purpose."""


class PermanentError(RemediationError):
    """Retrying cannot help."""


class InvalidInput(PermanentError, ValueError):
    """Input that will never become valid. ``attribute`` names the offender."""

    def __init__(self, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.attribute = attribute

    def as_dict(self) -> dict[str, str]:
        d = {"error": "invalid-input", "message": str(self)}
        if self.attribute:
            d["attribute"] = self.attribute
        return d


class Unauthenticated(PermanentError):
    """Missing or wrong credentials on an inbound request."""


class ActionFailed(PermanentError):
    """An external system refused the action in a way retrying cannot fix."""


class TemporaryError(RemediationError):
    """Retrying later may succeed. ``delay`` is a hint in seconds."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class DependencyUnavailable(TemporaryError):
    """OPA, Vault or the Kubernetes API is down, slow, sealed or throttling.

    ``unanswered``: a write was sent and no answer says whether it took
    effect (a read timeout, a reset connection, a gateway error); False when
    the server refused it (429, 503) or it never left (connection refused)."""

    def __init__(self, message: str, delay: float = 5.0, *, unanswered: bool = False) -> None:
        super().__init__(message, delay)
        self.unanswered = unanswered


class ClaimBusy(TemporaryError):
    """The remediation key is claimed by a live holder that has not finished."""
