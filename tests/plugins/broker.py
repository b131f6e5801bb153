"""Fixture: a loopback stand-in for a Knative Broker's ingress.

It records the CloudEvents it receives (binary mode: ``ce-*`` headers) and can
accept (202), refuse (400), fail (500) or hang, as the real ingress might."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator

import pytest


@dataclass
class BrokerStandIn:
    mode: str = "accept"  # accept | refuse | fail | hang
    hang_seconds: float = 3.0
    received: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def broker() -> Iterator[BrokerStandIn]:
    state = BrokerStandIn()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real ingress
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with state.lock:
                state.attempts += 1
                mode = state.mode
            if mode == "hang":
                time.sleep(state.hang_seconds)
                return
            status = {"accept": 202, "refuse": 400, "fail": 500}[mode]
            if status == 202:
                event = {k.lower(): v for k, v in self.headers.items()
                         if k.lower().startswith("ce-")}
                event["body"] = body.decode()
                with state.lock:
                    state.received.append(event)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    class Server(ThreadingHTTPServer):
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/remediation/remediation"
    yield state
    server.shutdown()
    server.server_close()
