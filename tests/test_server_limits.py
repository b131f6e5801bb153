"""Issue 15, findings 5 and 9, against the real server (``remediate serve``,
waitress) in a subprocess, over raw sockets:

- a body declared larger than ``REMEDIATION_MAX_BODY_BYTES`` is refused
  with 413 from its headers, before the body is sent (waitress used to
  buffer up to 1 GiB of it into a temporary file first);
- a chunked body past the limit is cut off with 413 too;
- a client that opens a connection and trickles nothing is disconnected
  after ``REMEDIATION_CHANNEL_TIMEOUT``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from remediation.cli import demo_dir, waitress_options
from remediation.settings import HTTPSettings, Settings

LIMIT = 64 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "OPA_", "REMEDIATION_", "KUBECONFIG"))}
    env.update(REMEDIATION_SNAPSHOT=str(demo_dir() / "cluster.yaml"),
               REMEDIATION_MAX_BODY_BYTES=str(LIMIT), REMEDIATION_CHANNEL_TIMEOUT="2",
               REMEDIATION_EVENT_HMAC_KEY="server-limits-key-8e2a",
               REMEDIATION_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "remediation.cli", "serve", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"remediate serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/readiness", timeout=1) \
                    .status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("remediate serve did not become ready")
    yield "127.0.0.1", port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def test_waitress_options_follow_the_settings():
    http = Settings.from_env({"REMEDIATION_MAX_BODY_BYTES": "12345",
                              "REMEDIATION_CHANNEL_TIMEOUT": "7",
                              "REMEDIATION_CONNECTION_LIMIT": "42"}).http
    opts = waitress_options(http)
    assert opts["max_request_body_size"] == 12345
    assert opts["channel_timeout"] == 7 and opts["connection_limit"] == 42
    assert opts["cleanup_interval"] <= 7
    assert waitress_options(HTTPSettings())["max_request_body_size"] == 1024 * 1024


@pytest.mark.parametrize("path", ["/", "/dead-letters", "/webhooks/alertmanager"])
def test_a_huge_declared_body_is_refused_before_it_is_sent(server, path):
    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: application/cloudevents+json\r\n"
                      f"Content-Length: {256 * 1024 * 1024}\r\n\r\n").encode())
        sock.sendall(b"{" * 1024)  # a first slice only; the rest never comes
        assert status_line(sock).startswith("HTTP/1.1 413"), "waitress waited for the body"


def test_a_chunked_body_past_the_limit_is_cut_off(server):
    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/cloudevents+json\r\n\r\n")
        chunk = b"x" * 16384
        try:
            for _ in range(4 * LIMIT // len(chunk)):
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except OSError:
            pass  # the server stopped reading: also a refusal
        line = status_line(sock)
        assert line == "" or line.startswith("HTTP/1.1 413"), line


def test_a_silent_client_is_disconnected_after_the_channel_timeout(server):
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        start = time.monotonic()
        try:
            data = sock.recv(4096)
        except TimeoutError:
            pytest.fail("the connection was still open after 10 s")
        assert data == b"" or data.startswith(b"HTTP/1.1 4")
        assert time.monotonic() - start < 9
