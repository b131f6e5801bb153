"""The Knative Functions contract: after `pip install .`, `from function import
new` works and the func-python middleware (Hypercorn, ASGI) serves the app.

This runs func's own `service/main.py` logic in a subprocess, as the
scaffolding does, against the demo snapshot, and delivers CloudEvents to it
over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import new_event, to_binary
from remediation.guard.sender_auth import sign_events
from remediation.model import TYPE_OUTCOME

EVENT_KEY = "func-test-event-key-7d1e"

MAIN = """
from func_python.http import serve
from function import new as handler
serve(handler)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project installed as func's scaffolding does (`pip install <project>`, not
    editable) into a folder of its own: proves the wheel carries the package data
    (policies, routes, Xid table, demo fleet) and that `from function import new` works."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(ROOT)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TMPDIR": str(build)})
    assert r.returncode == 0, r.stderr[-2000:]
    return target


@pytest.fixture
def func_service(installed: Path, tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "OPA_", "REMEDIATION_", "KUBECONFIG"))}
    env.update(LISTEN_ADDRESS=f"127.0.0.1:{port}", PYTHONPATH=str(installed),
               REMEDIATION_SNAPSHOT=str(demo_dir() / "cluster.yaml"),
               REMEDIATION_EVENT_HMAC_KEY=EVENT_KEY)
    # run from an empty folder with -I-free isolation from the repo: imports come
    # from the installed copy (PYTHONPATH first), never from functions/ in the checkout
    proc = subprocess.Popen([sys.executable, "-c", MAIN], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/readiness", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"func-python server exited: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("func-python server did not become ready")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_function_new_is_importable_and_has_the_contract():
    from function import new

    fn = new()
    assert callable(fn.handle) and fn.alive()[0] and not fn.ready()[0]


def test_installed_copy_is_what_runs(installed: Path):
    for rel in ("function/__init__.py", "remediation/defaults/routes.yaml",
                "remediation/defaults/xid.yaml", "remediation/defaults/demo/cluster.yaml",
                "remediation_policies/remediation.rego", "remediation_policies/data.json"):
        assert (installed / rel).exists(), rel
    r = subprocess.run([sys.executable, "-c", "import function, remediation.clients.rego as r;"
                        "print(function.__file__); print(r.default_policy_dir())"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(installed)}, cwd=installed.parent)
    assert r.returncode == 0, r.stderr
    func_file, policy_dir = r.stdout.split()
    assert func_file.startswith(str(installed)) and policy_dir.startswith(str(installed))


def test_func_python_middleware_serves_cloudevents(func_service):
    doc = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    (event,) = alertmanager_to_events(doc)
    unsigned = httpx.post(func_service + "/", headers=to_binary(event)[0],
                          content=to_binary(event)[1], timeout=30)
    assert unsigned.status_code == 401, unsigned.text
    (event,) = sign_events([event], EVENT_KEY, now=time.time(), rebuild=new_event)
    headers, body = to_binary(event)
    resp = httpx.post(func_service + "/", headers=headers, content=body, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["ce-type"] == TYPE_OUTCOME
    data = resp.json()
    assert data["status"] == "planned"
    assert data["target"]["name"] == "vllm-llama-7b"
    bad = httpx.post(func_service + "/", content=b"{", timeout=30,
                     headers={"Content-Type": "application/cloudevents+json"})
    assert bad.status_code == 401  # unauthenticated: the parser's findings are not shared
    assert httpx.get(func_service + "/health/liveness", timeout=5).status_code == 200


def test_func_python_path_refuses_a_huge_declared_body_from_its_headers(func_service):
    """Issue 15: REMEDIATION_MAX_BODY_BYTES holds on the func path too, decided
    from Content-Length before the body is received."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(func_service)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json"
                     b"\r\nContent-Length: 268435456\r\n\r\n" + b"{" * 1024)
        assert sock.recv(4096).split(b"\r\n", 1)[0].startswith(b"HTTP/1.1 413")


def test_func_python_path_serves_metrics(func_service):
    """The same /metrics under func-python's (ASGI) server: what this process did."""
    from tests.scrape import total, value

    doc = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    (event,) = alertmanager_to_events(doc)
    (event,) = sign_events([event], EVENT_KEY, now=time.time(), rebuild=new_event)
    headers, body = to_binary(event)
    assert httpx.post(func_service + "/", headers=headers, content=body,
                      timeout=30).status_code == 200
    assert httpx.post(func_service + "/", content=b"{", timeout=30, headers={
        "Content-Type": "application/cloudevents+json"}).status_code == 401
    resp = httpx.get(func_service + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(resp.text, "remediation_outcomes_total", function="restart-engine",
                 action="rollout-restart", status="planned") == 1
    assert value(resp.text, "remediation_input_rejected_total", reason="unauthorized") == 1
    assert total(resp.text, "remediation_build_info") == 1
