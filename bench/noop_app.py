"""The ceiling: a no-op Flask endpoint, served and loaded exactly like ours."""

from flask import Flask


def create_app() -> Flask:
    app = Flask("noop")

    @app.post("/")
    def noop() -> str:
        return ""

    @app.get("/health/readiness")
    def ready() -> str:
        return "ok"

    return app
