"""OPA server mode: the ONLY module that imports ``opa_client`` and ``requests``.

Decisions come from ``POST /v1/data/<package>/<rule>`` on an OPA server
(opa-python-client 3.x, sync). The answer's ``result`` is the same decision
document the embedded engine returns; OPA's ``decision_id`` (present when
decision logging is on) is kept. Every request has a timeout. Failures:

- refused connection, timeout, 5xx: retried ``retries`` times with a short
  backoff (evaluation is idempotent; the client's own urllib3 retries skip
  POST), then ``DependencyUnavailable``: no action, the sender redelivers;
- 4xx (e.g. 400 invalid_parameter): a deny document with OPA's message;
- ``{}`` (undefined): returned as is, which the guard turns into a deny.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .. import metrics
from ..errors import DependencyUnavailable, InvalidInput
from ..settings import PolicySettings

log = logging.getLogger("remediation.opa")


class OpaServerPolicyEngine:
    def __init__(self, settings: PolicySettings) -> None:
        from opa_client.opa import OpaClient

        url = urlsplit(settings.opa_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput(f"OPA_URL must be http(s)://host[:port], got {settings.opa_url!r}",
                               "OPA_URL")
        self._client = OpaClient(host=url.hostname,
                                 port=url.port or (443 if url.scheme == "https" else 8181),
                                 ssl=url.scheme == "https",
                                 token=settings.opa_token.reveal() or None,
                                 retries=0, timeout=settings.opa_timeout)
        self._package = settings.package
        self._rule = settings.rule
        self._attempts = max(1, settings.opa_retries + 1)
        self.url = f"{url.scheme}://{url.netloc}"

    def evaluate(self, input_doc: Mapping[str, Any]) -> dict[str, Any]:
        import requests

        last = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(min(0.1 * 2 ** attempt, 1.0))
            try:
                with metrics.dependency_call("opa"):
                    answer = self._client.query_rule(input_data=dict(input_doc),
                                                     package_path=self._package,
                                                     rule_name=self._rule)
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                message = _opa_message(exc.response)
                if 400 <= status < 500:
                    return {"allow": False,
                            "reasons": [f"OPA refused the query ({status}): {message}"]}
                last = f"OPA answered {status}: {message}"
                continue
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"OPA unreachable: {type(exc).__name__}"
                continue
            except ValueError:
                last = "OPA answered something that is not JSON"
                continue
            if not isinstance(answer, dict) or "result" not in answer:
                return {}
            result = answer["result"]
            if not isinstance(result, dict):
                return {"allow": False, "reasons": ["OPA decision is not an object"]}
            if answer.get("decision_id"):
                result = {**result, "decision_id": answer["decision_id"]}
            return result
        log.warning("policy decision failed after %d attempt(s): %s", self._attempts, last)
        raise DependencyUnavailable(last or "OPA unavailable", delay=2.0)

    def close(self) -> None:
        session = getattr(self._client, "_session", None)
        if session is not None:
            session.close()


def _opa_message(response: Any) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body.get("code") or "")[:300]
    except Exception:  # noqa: BLE001 - any non-JSON body
        return (getattr(response, "text", "") or "")[:300]
