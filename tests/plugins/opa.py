"""Fixture: a loopback server speaking OPA's REST API, evaluating the project's
policies with the same Rego engine (a test double of an OPA server).

Endpoints: ``POST /v1/data/<path>`` with ``{"input": ...}`` -> ``{"result": ...}``
(a rule, a package or plain data; sets as sorted arrays; ``{}`` when
undefined; ``decision_id`` when decision logging is "on"; OPA's
``api_usage_warning`` when the input is missing or null), ``GET /v1/data/<path>``,
``GET /health`` -> ``{}``, ``PUT /v1/policies/<id>`` (text/plain Rego; 400
``invalid_parameter`` when it does not compile, the old modules kept).
Errors use OPA's shape ``{"code", "message", "errors": [...]}``; malformed
input is 400 ``invalid_parameter``; an unknown path is Go's plain-text 404.
tests/realstack/test_opa_real.py checks these answers against the real OPA. Fault switches: ``mode`` = "ok" | "slow"
| "error" (500) | "undefined"; ``stop()`` closes the port (down).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from collections.abc import Iterator

import pytest

from remediation.clients.rego import _engine, default_policy_dir, load_policy_sources
from remediation.errors import InvalidInput


class OpaStandIn:
    def __init__(self) -> None:
        modules, data = load_policy_sources(default_policy_dir())
        self.modules, self.data = dict(modules), data
        self.mode = "ok"
        self.slow_seconds = 1.0
        self.decision_logging = False
        self.requests = 0
        self._worker = ThreadPoolExecutor(max_workers=1)  # regorus engines stay on one thread
        self._engine: Any = None
        self._worker.submit(self._build).result()
        self._server: ThreadingHTTPServer | None = None

    def _build(self) -> None:
        self._engine = _engine(self.modules, self.data)

    def evaluate(self, path: str, input_doc: Any) -> Any:
        """``data.<path>`` as OPA answers it: a rule, a package (an object of
        its rules) or plain data; sets come back as sorted arrays. None when
        undefined."""
        query = "data" + "".join(f"[{json.dumps(seg)}]" for seg in path.split("/") if seg)

        def run() -> Any:
            self._engine.set_input_json(json.dumps(input_doc))
            try:
                answer = json.loads(self._engine.eval_query_as_json(query))
            except RuntimeError:
                return None
            results = answer.get("result") or []
            return results[0]["expressions"][0]["value"] if results else None
        return self._worker.submit(run).result()

    def put_policy(self, policy_id: str, text: str) -> str:
        """Add or replace a module; a module that does not compile is refused
        (the error returned) and the engine keeps the modules it had."""
        modules = {**self.modules, f"{policy_id}.rego": text}

        def build() -> str:
            try:
                engine = _engine(modules, self.data)
            except InvalidInput as exc:
                return str(exc)
            self._engine = engine
            return ""
        error = self._worker.submit(build).result()
        if not error:
            self.modules = modules
        return error

    def start(self) -> OpaStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add 40 ms per answer

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _not_found(self) -> None:  # Go's mux: plain text, not OPA's JSON errors
                raw = b"404 page not found\n"
                self.send_response(404)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _answer(self, path: str, input_doc: Any, warn: bool) -> None:
                result = None if stand_in.mode == "undefined" else stand_in.evaluate(
                    path, input_doc)
                body: dict[str, Any] = {} if result is None else {"result": result}
                if stand_in.decision_logging:
                    body["decision_id"] = str(uuid.uuid4())
                if warn:
                    body["warning"] = {"code": "api_usage_warning",
                                       "message": "'input' key missing from the request"}
                self._send(200, body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?")[0] == "/health":
                    self._send(200, {})
                elif self.path.startswith("/v1/data"):
                    self._answer(self.path[len("/v1/data"):].split("?")[0], None, warn=False)
                else:
                    self._not_found()

            def do_PUT(self) -> None:  # noqa: N802
                text = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if not self.path.startswith("/v1/policies/"):
                    self._not_found()
                    return
                error = stand_in.put_policy(self.path.rsplit("/", 1)[-1], text)
                if error:
                    self._send(400, {"code": "invalid_parameter",
                                     "message": "error(s) occurred while compiling module(s)",
                                     "errors": [{"code": "rego_parse_error", "message": error}]})
                else:
                    self._send(200, {})

            def do_POST(self) -> None:  # noqa: N802
                stand_in.requests += 1
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if stand_in.mode == "slow":
                    time.sleep(stand_in.slow_seconds)
                if stand_in.mode == "error":
                    self._send(500, {"code": "internal_error", "message": "boom"})
                    return
                if not self.path.startswith("/v1/data"):
                    self._not_found()
                    return
                try:
                    doc = json.loads(raw) if raw.strip() else {}
                    if not isinstance(doc, dict):
                        raise ValueError(f"cannot unmarshal {type(doc).__name__}")
                except ValueError as exc:
                    self._send(400, {"code": "invalid_parameter",
                                     "message": f"body contains malformed input document: {exc}"})
                    return
                # OPA warns when there is no input (no key, or null).
                self._answer(self.path[len("/v1/data"):].split("?")[0], doc.get("input"),
                             warn=doc.get("input") is None)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        def drop() -> None:
            self._engine = None  # on the thread that made it

        self._worker.submit(drop).result()
        self._worker.shutdown(wait=True)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def opa_server() -> Iterator[OpaStandIn]:
    server = OpaStandIn().start()
    yield server
    server.stop()
    server.close()
