"""Knative OIDC sender identity: the ONLY module that imports ``jwt`` (PyJWT).

:class:`OIDCTokenVerifier` implements ``guard.sender_auth.TokenVerifier``: a
bearer JWT is accepted when it is signed by one of the issuer's keys (an
asymmetric algorithm: ``none`` and HMAC algorithms are never accepted, so a
public key can never be used as a shared secret), its ``iss`` is the
configured issuer, its ``aud`` names this function, it has not expired
(``exp``, ``iat`` required; 30 s leeway) and, when a list is configured, its
``sub`` is one of the allowed identities.

The keys (JWKS) are fetched with a timeout, from ``REMEDIATION_OIDC_JWKS_URL``
or the ``jwks_uri`` of the issuer's discovery document, cached for
``jwks_cache_seconds``, and read again early for a token naming an unknown
key id at most once per :data:`MIN_REFRESH_SECONDS` (so a flood of forged
``kid`` values cannot turn into a flood of requests to the issuer). For the
kube-apiserver issuer the fetch carries the pod's ServiceAccount token and
trusts its CA. Nothing of a token is logged.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt

from ..errors import DependencyUnavailable
from ..guard.sender_auth import SenderRefused, subject_allowed
from ..settings import SenderAuthSettings

log = logging.getLogger("remediation.oidc")

#: asymmetric algorithms only
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA")
MIN_REFRESH_SECONDS = 30.0
MAX_JWKS_BYTES = 256 * 1024
LEEWAY_SECONDS = 30


def _fetch_json(url: str, settings: SenderAuthSettings) -> Any:
    if not url.startswith(("https://", "http://")):
        raise DependencyUnavailable(f"OIDC: not an http(s) URL: {url!r}")
    headers = {"Accept": "application/json"}
    if settings.oidc_token_path:
        try:
            with open(settings.oidc_token_path, encoding="utf-8") as fh:
                headers["Authorization"] = f"Bearer {fh.read().strip()}"
        except OSError as exc:
            raise DependencyUnavailable(f"OIDC: cannot read the token file: {exc}") from None
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=settings.oidc_ca_cert or None)
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=settings.oidc_timeout,
                                    context=context) as resp:
            body = resp.read(MAX_JWKS_BYTES + 1)
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, TLS, HTTP errors
        raise DependencyUnavailable(f"OIDC: cannot read {url}: {type(exc).__name__}",
                                    delay=5.0) from None
    if len(body) > MAX_JWKS_BYTES:
        raise DependencyUnavailable(f"OIDC: {url} answered more than {MAX_JWKS_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise DependencyUnavailable(f"OIDC: {url} did not answer JSON") from None


class OIDCTokenVerifier:
    def __init__(self, settings: SenderAuthSettings, *,
                 clock: Callable[[], float] = time.time,
                 fetch: Callable[[str, SenderAuthSettings], Any] = _fetch_json) -> None:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("OIDC sender authentication needs REMEDIATION_OIDC_ISSUER and "
                             "REMEDIATION_OIDC_AUDIENCE")
        self.settings = settings
        self.clock = clock
        self.fetch = fetch
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._read_at = float("-inf")

    def _jwks_url(self) -> str:
        if self.settings.oidc_jwks_url:
            return self.settings.oidc_jwks_url
        issuer = self.settings.oidc_issuer.rstrip("/")
        doc = self.fetch(f"{issuer}/.well-known/openid-configuration", self.settings)
        uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(uri, str) or not uri:
            raise DependencyUnavailable("OIDC: the discovery document names no jwks_uri")
        return uri

    def _refresh(self) -> None:
        doc = self.fetch(self._jwks_url(), self.settings)
        try:
            keyset = jwt.PyJWKSet.from_dict(doc)
        except jwt.PyJWTError as exc:
            raise DependencyUnavailable(f"OIDC: unusable key set: {exc}") from None
        self._keys = {k.key_id or "": k for k in keyset.keys}
        self._read_at = self.clock()

    def _key(self, kid: str) -> Any:
        with self._lock:
            age = self.clock() - self._read_at
            if age > self.settings.jwks_cache_seconds or (
                    kid not in self._keys and age > MIN_REFRESH_SECONDS):
                self._refresh()
            key = self._keys.get(kid)
            if key is None and not kid and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
        if key is None:
            raise SenderRefused("bearer token: signed by an unknown key")
        return key

    def verify(self, token: str) -> str:
        cfg = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SenderRefused("bearer token: not a JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise SenderRefused(f"bearer token: algorithm {str(alg)[:20]!r} is not accepted")
        key = self._key(str(header.get("kid") or ""))
        try:
            claims = jwt.decode(
                token, key=key.key, algorithms=[alg], audience=cfg.oidc_audience,
                issuer=cfg.oidc_issuer, leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise SenderRefused("bearer token: expired") from None
        except jwt.InvalidAudienceError:
            raise SenderRefused("bearer token: not meant for this function (audience)") \
                from None
        except jwt.InvalidIssuerError:
            raise SenderRefused("bearer token: wrong issuer") from None
        except jwt.PyJWTError as exc:
            raise SenderRefused(f"bearer token: {type(exc).__name__}") from None
        subject = str(claims.get("sub") or "")
        if not subject_allowed(subject, cfg.oidc_subjects):
            raise SenderRefused(f"bearer token: subject {subject[:120]!r} may not send here")
        return subject
