"""Child processes of the local stack: started in their own process group, always stopped.

Every server of the local stack (Azurite, Airflow's three processes, the emulator when run apart)
is a `Service`: it gets a fresh loopback port, its output goes to a log file, readiness is a probe,
and stopping sends SIGTERM to the whole group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit


class LoopbackServer(ThreadingHTTPServer):
    """A thread per request, as `ThreadingHTTPServer`, with a listen backlog for bursts.

    The standard library's backlog is 5: a burst of more simultaneous connections (Event Grid
    delivers concurrently) has the rest's SYNs dropped, and each of those clients waits a second
    to retransmit: seen as a 1 s stall per burst of 16 deliveries in the throughput benchmark.
    """

    daemon_threads = True
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        """No Nagle: a handler writes its headers and its body apart, and the second write would
        wait for the client's delayed ACK of the first (40 ms on Linux), which every response of
        a keep-alive connection paid."""
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def serve(server: LoopbackServer) -> LoopbackServer:
    """Serve in a daemon thread; the caller shuts it down."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class JsonHandler(BaseHTTPRequestHandler):
    """A loopback stand-in's request handler: JSON answers, no request log."""

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def child_environment(*overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a child, without what azure-ai-ml wrote into it.

    Building an `MLClient` for a custom cloud (the local emulator) sets AZUREML_CURRENT_CLOUD in
    `os.environ`; a child that has not registered that cloud then fails on `import azure.ai.ml`.
    """
    environment = dict(os.environ)
    environment.pop("AZUREML_CURRENT_CLOUD", None)
    for override in overrides:
        environment.update(override)
    return environment


def free_port() -> int:
    """A loopback port nobody listens on now; two stacks on one machine never share one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One plain-HTTP request to a server of the local stack: (status, body). Anything but an
    http:// URL on loopback is refused; connection failures raise OSError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"not a loopback http URL: {url!r}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"{method} {url}: {exc}") from exc
    finally:
        connection.close()


def http_ready(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            status, _ = loopback_http("GET", url, timeout=2)
        except OSError:
            return False
        return status < 500

    return probe


def port_ready(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return probe


def group_alive(group: int) -> bool:
    """Whether any process of this process group is still there."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


class Lifecycle:
    """A part of the local stack that `with` starts and stops, whatever happens in between."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServiceFailed(RuntimeError):
    """A local server exited or did not become ready; the message carries its log's tail."""


class Service(Lifecycle):
    """One child process (and everything it forks) with a log file and a readiness probe."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: we stop all it forks
            )
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready is None or self.ready():
                return
            time.sleep(0.2)
        raise ServiceFailed(f"{self.name} not ready after {timeout:.0f}s\n{self.tail()}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceFailed(
                f"{self.name} exited with code {self.process.returncode}\n{self.tail()}"
            )

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  {self.name}| {line}" for line in text[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        # The leader may be gone while children it forked linger in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        deadline = time.monotonic() + 5
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # killed workers are reaped by init a moment after the leader
