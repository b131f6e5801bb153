"""Knative Functions entry point (the func-python middleware contract).

``func`` generates a scaffolding that does::

    from func_python.http import serve
    from function import new
    serve(new)

``new()`` returns an object with ``async handle(scope, receive, send)`` (ASGI)
and the optional lifecycle hooks ``start``, ``stop``, ``alive``, ``ready``.
The product is a WSGI (Flask) app; a2wsgi adapts it to ASGI. The app is built
in ``start(cfg)`` (func passes the environment), not at import time, so
importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any


class RemediationFunction:
    def __init__(self) -> None:
        self._asgi: Any = None
        self._pipeline: Any = None
        self._max_body = 1024 * 1024

    def start(self, cfg: dict[str, str]) -> None:
        from a2wsgi import WSGIMiddleware

        from remediation.app import create_app
        from remediation.runtime import build_pipeline
        from remediation.settings import Settings

        settings = Settings.from_env(cfg)
        self._max_body = settings.http.max_body_bytes
        self._pipeline = build_pipeline(settings)
        # Flask is a WSGI app; a2wsgi types its environ as a TypedDict, Flask as a dict
        wsgi_app: Any = create_app(settings, self._pipeline)
        self._asgi = WSGIMiddleware(wsgi_app)

    def stop(self) -> None:
        if self._pipeline is not None:
            from remediation.runtime import close_pipeline

            close_pipeline(self._pipeline)
            self._pipeline = None

    def alive(self) -> tuple[bool, str]:
        return True, "OK"

    def ready(self) -> tuple[bool, str]:
        if self._asgi is None:
            return False, "not started"
        return True, "OK"

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._asgi is None:  # a server that skipped lifespan: start lazily
            import os

            self.start(dict(os.environ))
        if scope.get("type") == "http" and self._declared_too_large(scope):
            # REMEDIATION_MAX_BODY_BYTES on this path too: refused from the
            # headers, before a byte of the body is received (issue 15)
            body = b'{"error":"too-large","message":"body exceeds the limit"}'
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._asgi(scope, receive, send)

    def _declared_too_large(self, scope: dict[str, Any]) -> bool:
        for name, value in scope.get("headers") or []:
            if name.lower() == b"content-length":
                try:
                    return int(value) > self._max_body
                except ValueError:
                    return True
        return False


def new() -> RemediationFunction:
    """Constructor the func-python middleware calls once per process."""
    return RemediationFunction()
