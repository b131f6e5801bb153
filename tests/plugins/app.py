"""Fixtures: the real HTTP app on loopback, wired to the Kubernetes API
emulator through a kubeconfig file (the real client's own loading path).

* ``fleet``: the demo GPU fleet loaded into the emulator.
* ``kubeconfig``: a kubeconfig file pointing at the emulator.
* ``make_settings(**overrides)``: Settings for a live (emulated) cluster.
* ``serve_app(settings, **ports) -> AppServer``: builds the pipeline, serves
  ``create_app`` with werkzeug's threaded server on 127.0.0.1, closes after.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import httpx
import pytest
import yaml

from remediation.cli import demo_dir
from remediation.settings import (HTTPSettings, KubeSettings, Secret, SenderAuthSettings,
                                  Settings)

BEARER = "am-bearer-5f2c"
SPLUNK_TOKEN = "splunk-token-9a41"


def write_kubeconfig(path: Path, url: str, token: str = "ambient-reader") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "remediator", "user": {"token": token}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator",
                                                      "user": "remediator"}}],
        "current-context": "emulator",
    }))
    return path


@pytest.fixture
def fleet(kube_emulator: Any) -> Any:
    kube_emulator.load(demo_dir() / "cluster.yaml")
    return kube_emulator


@pytest.fixture
def kubeconfig(kube_emulator: Any, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", kube_emulator.url)


@pytest.fixture
def make_settings(kubeconfig: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = Settings(
            dry_run=False,
            http=HTTPSettings(alertmanager_bearer=Secret(BEARER),
                              alertmanager_basic_user="alertmanager",
                              alertmanager_basic_password=Secret("basic-pw"),
                              splunk_token=Secret(SPLUNK_TOKEN), max_body_bytes=256 * 1024),
            kube=KubeSettings(kubeconfig=str(kubeconfig), timeout=2.0),
            # The tests of what the path does with an event send unsigned ones;
            # tests/test_sender_auth.py tests the default (refuse strangers).
            sender_auth=SenderAuthSettings(allow_unauthenticated=True),
        )
        return replace(base, **overrides)
    return make


@dataclass
class AppServer:
    url: str
    pipeline: Any
    client: httpx.Client

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(self.url + path, **kwargs)


@pytest.fixture
def serve_app() -> Iterator[Callable[..., AppServer]]:
    from werkzeug.serving import make_server

    from remediation.app import create_app
    from remediation.runtime import build_pipeline, close_pipeline

    started: list[tuple[Any, threading.Thread, AppServer]] = []

    def serve(settings: Settings, **ports: Any) -> AppServer:
        pipeline = build_pipeline(settings, **ports)
        server = make_server("127.0.0.1", 0, create_app(settings, pipeline), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        app = AppServer(f"http://127.0.0.1:{server.server_port}", pipeline,
                        httpx.Client(timeout=30))
        started.append((server, thread, app))
        return app

    yield serve
    for server, thread, app in started:
        app.client.close()
        server.shutdown()
        thread.join(timeout=5)
        close_pipeline(app.pipeline)
