"""A fault-injecting HTTP proxy for the local stack: between the bridge and Airflow it loses
replies after Airflow acted, answers 502 as a gateway would, or loses requests before they arrive;
or only delays each request, as an Airflow across a network would (the benchmarks' remote Airflow),
or as Azure Table Storage would (the benchmarks' storage model).

Each request is forwarded unless `decide` says otherwise; what it says is recorded, so a test or
the chaos run can count what happened. It speaks plain HTTP/1.1 to loopback servers only.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler
from typing import Self
from urllib.parse import urlsplit

from bridge.local.process import Lifecycle, LoopbackServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class Fault(StrEnum):
    LOSE_REPLY = "lose-reply"  # forwarded and done by the server; the client gets no answer
    GATEWAY_ERROR = "gateway-error"  # forwarded and done; the client gets a 502
    LOSE_REQUEST = "lose-request"  # never forwarded; the client gets no answer
    # Held until the client has given up (`late_by`), then forwarded and done: the server
    # commits after the client's timeout, while a retry may already be asking about it.
    COMMIT_LATE = "commit-late"


@dataclass(frozen=True)
class Passage:
    """One request through the proxy, and the fault it met (None: passed through)."""

    method: str
    path: str
    body: bytes
    fault: Fault | None
    status: int | None  # what the server answered, when it was asked


Decide = Callable[[str, str, bytes], Fault | None]


class FaultProxy(Lifecycle):
    def __init__(
        self,
        target: str,
        decide: Decide | None = None,
        *,
        delay: float | Callable[[str, str], float] = 0.0,
        late_by: float = 0.0,
        port: int = 0,
        record: bool = True,
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the fault proxy forwards to a plain http URL, not {target!r}")
        self.target_host = parts.hostname
        self.target_port = parts.port or 80
        self.decide: Decide = decide or (lambda method, path, body: None)
        # Seconds added to every request before it is forwarded, or a function of its method and
        # path that says how many (a latency model: bench/storage_model.py).
        self.delay = delay
        self.late_by = late_by  # how long a COMMIT_LATE request is held before it is forwarded
        self.passages: list[Passage] = []
        self.record = record  # False: keep no passages (a long-running latency model)
        self._lock = threading.Lock()
        self._server = LoopbackServer(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def faults(self, fault: Fault | None = None) -> list[Passage]:
        with self._lock:
            return [p for p in self.passages if p.fault is not None and fault in (None, p.fault)]

    def _record(self, passage: Passage) -> None:
        if not self.record:
            return
        with self._lock:
            self.passages.append(passage)

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            upstream.request(method, path, body=body or None, headers=headers)
            response = upstream.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            upstream.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _pass(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.decide(self.command, self.path, body)
                if fault is Fault.LOSE_REQUEST:
                    proxy._record(Passage(self.command, self.path, body, fault, None))
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                pause = (
                    proxy.delay(self.command, self.path) if callable(proxy.delay) else proxy.delay
                )
                if pause:
                    time.sleep(pause)
                if fault is Fault.COMMIT_LATE:
                    time.sleep(proxy.late_by)
                status, reply_headers, reply = proxy._forward(
                    self.command, self.path, headers, body
                )
                proxy._record(Passage(self.command, self.path, body, fault, status))
                if fault in (Fault.LOSE_REPLY, Fault.COMMIT_LATE):
                    self.close_connection = True  # the server acted; the answer is lost
                    return
                if fault is Fault.GATEWAY_ERROR:
                    status, reply_headers, reply = 502, [], b'{"detail": "Bad Gateway"}'
                self.send_response(status)
                for name, value in reply_headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _pass  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                """The passages are the log."""

        return Handler


def first_of_each(method: str, path: str, fault: Fault) -> Decide:
    """A fault for the first request of each distinct body to `method path`, then none."""
    seen: set[bytes] = set()
    lock = threading.Lock()

    def decide(request_method: str, request_path: str, body: bytes) -> Fault | None:
        if request_method != method or request_path.split("?", maxsplit=1)[0] != path:
            return None
        with lock:
            if body in seen:
                return None
            seen.add(body)
        return fault

    return decide
