"""A real ``opa`` binary for the realstack tier: find it, run ``opa test``,
and run ``opa run --server`` on 127.0.0.1 with a free port.

Where the binary comes from: ``$REALSTACK_BIN/opa`` when REALSTACK_BIN is
set, else ``<bin dir>/opa`` with the bin dir printed by
``tests/realstack/build.sh --print`` (which builds nothing). A missing binary
fails the test on CI (``CI`` set) and skips it elsewhere, saying to run the
build script.

Each server writes its log to a file (in pytest's tmp dir); ``stop()`` ends
only the process this helper started, and every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from tests.realstack.components import IN_CI, ComponentMissing, binary, free_port

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policies"


def opa_binary() -> Path:
    """The opa binary, or fail (CI) / skip (elsewhere) with what to do."""
    try:
        return binary("opa")
    except ComponentMissing as exc:
        if IN_CI:
            pytest.fail(f"{exc} -- CI never skips the realstack tier", pytrace=False)
        pytest.skip(str(exc))


def run_opa_test(binary: Path, policy_dir: Path = POLICY_DIR,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), "test", "-v", str(policy_dir)], check=False,
                          capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


class OpaServer:
    """``opa run --server --addr 127.0.0.1:<port> <paths>``, as deployed:
    the policy folder (its ``data.json`` becomes ``data``)."""

    def __init__(self, binary: Path, log_path: Path, paths: Sequence[Path] = (POLICY_DIR,),
                 extra_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.log_path = log_path
        self.paths = list(paths)
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30, port: int = 0) -> OpaServer:
        """Start on ``port`` (0: a free one) and wait until ``/health`` answers."""
        # A free port can be taken between our probe and OPA's bind: try again.
        for _ in range(1 if port else 3):
            self.port = port or free_port()
            with open(self.log_path, "ab") as log:
                log.write(f"--- opa run --server on 127.0.0.1:{self.port}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [str(self.binary), "run", "--server", "--addr", f"127.0.0.1:{self.port}",
                     "--log-level", "info", "--log-format", "text", *self.extra_args,
                     *map(str, self.paths)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
            if self._wait_healthy(timeout):
                return self
            if self.proc.poll() is not None and "address already in use" in self.log_tail():
                continue
            break
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"opa did not become healthy within {timeout} s; log:\n{tail}")

    def _wait_healthy(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def pause(self) -> None:
        """SIGSTOP: the port stays open and accepts connections, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # kill() returns before every thread has stopped: a request sent at
        # once may still be answered. Wait until each thread is stopped (T).
        deadline = time.monotonic() + 5
        tasks = Path(f"/proc/{self.proc.pid}/task")
        while time.monotonic() < deadline:
            states = []
            for task in tasks.iterdir():
                try:
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except (OSError, IndexError):
                    continue
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.01)
        raise RuntimeError(f"opa (pid {self.proc.pid}) did not stop within 5 s of SIGSTOP")

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
