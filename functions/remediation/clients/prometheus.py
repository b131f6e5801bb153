"""Error budgets read from Prometheus' HTTP API (instant queries) for the
policy's ``slo`` input (see ``guard.slo``).

Every query has a timeout; the answers for one SLO are kept for a short
while (``REMEDIATION_PROMETHEUS_CACHE_SECONDS``), failures too, so a storm of
alerts asks once and a Prometheus that is down is not waited for on every
signal. Whatever goes wrong (down, slow, an error, no data, several series)
ends in ``{"available": false, "reason": ...}``: the rules that relax a limit
do not fire without an SLO (fail closed). Never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..guard.slo import SLOConfig, SLOEntry, slo_input, unavailable
from ..model import ObjectRef
from ..settings import SLOSettings

log = logging.getLogger("remediation.clients.prometheus")


class PrometheusError(Exception):
    """Prometheus could not answer a query (the message is safe to show)."""


def _address(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


class PrometheusClient:
    """Instant queries: ``query(promql, at) -> float | None`` (None: no data)."""

    def __init__(self, settings: SLOSettings, *, client: httpx.Client | None = None) -> None:
        self.url = settings.prometheus_url.rstrip("/")
        self.timeout = settings.timeout
        headers = {"Accept": "application/json"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token.reveal()}"
        self._client = client or httpx.Client(timeout=settings.timeout, headers=headers,
                                              follow_redirects=False)

    def query(self, promql: str, at: float) -> float | None:
        where = _address(self.url)
        try:
            resp = self._client.get(f"{self.url}/api/v1/query",
                                    params={"query": promql, "time": f"{at:.3f}"},
                                    timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise PrometheusError(f"{where} timed out after {self.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{where} unreachable ({type(exc).__name__})") from exc
        if resp.status_code != 200:
            raise PrometheusError(f"{where} answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            data = body["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PrometheusError(f"{where} answered something that is not a query result") \
                from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{where} refused the query ({body.get('errorType')})")
        try:
            if kind == "scalar":
                return float(result[1])
            if kind != "vector":
                raise PrometheusError(f"{where} answered a {kind}, not a vector")
            if not result:
                return None
            if len(result) > 1:
                raise PrometheusError(f"{len(result)} series for one SLO value "
                                      "(narrow the selector)")
            return float(result[0]["value"][1])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise PrometheusError(f"{where} answered a malformed sample") from exc

    def close(self) -> None:
        self._client.close()


class PrometheusSLOSource:
    """The ``SLOSource`` port: a target's SLO, read from Prometheus."""

    def __init__(self, settings: SLOSettings, config: SLOConfig, *,
                 client: PrometheusClient | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.cache_seconds = settings.cache_seconds
        self.client = client or PrometheusClient(settings)
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def read(self, target: ObjectRef, *, at: float) -> dict[str, Any] | None:
        entry = self.config.lookup(target)
        if entry is None:
            return None
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(entry.service)
            if cached is not None and now - cached[0] < self.cache_seconds:
                return dict(cached[1])
        value = self._read(entry, at)
        with self._lock:
            self._cache[entry.service] = (now, value)
        return dict(value)

    def _read(self, entry: SLOEntry, at: float) -> dict[str, Any]:
        values: dict[str, float | None] = {}
        try:
            for name, promql in entry.queries(self.config.windows).items():
                values[name] = self.client.query(promql, at)
        except PrometheusError as exc:
            log.warning("SLO %s unavailable: %s", entry.service, exc)
            return unavailable(entry, f"prometheus: {exc}")
        except Exception as exc:  # noqa: BLE001 - never let an SLO read break the path
            log.warning("SLO %s unavailable: %s", entry.service, type(exc).__name__)
            return unavailable(entry, f"prometheus: {type(exc).__name__}")
        return slo_input(entry, self.config.windows, values, source="prometheus")

    def close(self) -> None:
        self.client.close()
