"""azure-core's transport for the ledger's Table client: the standard library's HTTP/1.1 client
on kept-alive connections, one per concurrent call.

azure-data-tables runs every call through azure-core's pipeline (auth, retries, tracing), which
hands the request to a transport. The default one sends it through `requests` and `urllib3`,
which copy and re-validate the headers three times, build three response objects and read the
body in chunks: 40 % of a ledger call's CPU, the largest share of the bridge's per effect
(docs/benchmarks.md). The pipeline stays as it is; this transport sends what it is given with
`http.client` and returns azure-core's own response type. It is used where no proxy is
configured (`bridge.ledger.table`); with one, the SDK's default transport honours it as always.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
    StreamConsumedError,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

DEFAULT_TIMEOUT = 300.0  # azure-core's default connection and read timeouts
_Key = tuple[str, str, int]  # scheme, host, port


class KeptAliveTransport(HttpTransport[HttpRequest, HttpResponse]):
    """Sends each request on an idle connection to its host, or a new one; keeps at most
    `connections` idle per host. Thread-safe: concurrent invocations share one client."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()  # verified, as Azure's endpoints require

    def __enter__(self) -> KeptAliveTransport:
        return self

    def __exit__(self, *exc_details: object) -> None:  # azure-core's pipeline passes none
        self.close()

    def open(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def send(self, request: HttpRequest, **kwargs: Any) -> Response:
        if not isinstance(request, HttpRequest):
            raise TypeError(f"{type(self).__name__} sends azure.core.rest requests only")
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        key = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        connect_timeout = _seconds(kwargs.get("connection_timeout"))
        read_timeout = _seconds(kwargs.get("read_timeout"))
        body = _body(request)
        headers = dict(request.headers)
        connection = self._connection(key, connect_timeout)
        if connection.sock is None:
            try:
                connection.connect()
            except TimeoutError as exc:
                connection.close()
                raise ServiceRequestTimeoutError(str(exc), error=exc) from exc
            except OSError as exc:
                connection.close()
                raise ServiceRequestError(str(exc), error=exc) from exc
        # From here the server may have acted on the request: a failure is a response error,
        # which azure-core's retry policy repeats only for idempotent methods (as it does with
        # its own transport; a claim's insert is not sent twice).
        try:
            connection.sock.settimeout(read_timeout)
            connection.request(request.method, target, body=body, headers=headers)
            reply = connection.getresponse()
            content = reply.read()
        except TimeoutError as exc:
            connection.close()
            raise ServiceResponseTimeoutError(str(exc), error=exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ServiceResponseError(str(exc), error=exc) from exc
        if reply.will_close:
            connection.close()
        else:
            self._release(key, connection)
        return Response(request, reply, content)

    def _connection(self, key: _Key, timeout: float) -> http.client.HTTPConnection:
        """An idle connection the server has not closed (checked as urllib3 does before reuse),
        or a new one, not connected yet."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None:
                break
            if _usable(connection):
                return connection
            connection.close()
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _release(self, key: _Key, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._connections:
                idle.append(connection)
                return
        connection.close()


class Response(HttpResponseImpl):
    """A response read in full. Built on the class azure-core's docstring names as the base of
    every transport's response (`HttpResponseImpl`, as its own requests transport's is): the
    public interface, and the multipart `parts()` a Table transaction reads."""

    def __init__(
        self, request: HttpRequest, reply: http.client.HTTPResponse, content: bytes
    ) -> None:
        headers = CaseInsensitiveDict()
        for name, value in reply.getheaders():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        super().__init__(
            request=request,
            internal_response=reply,
            status_code=reply.status,
            reason=reply.reason,
            content_type=headers.get("Content-Type"),
            headers=headers,
            stream_download_generator=_read_already,
        )
        self._content = content
        self._is_closed = True
        self._is_stream_consumed = True


def _read_already(response: Any, **_: Any) -> Iterator[bytes]:
    """The stream of a response this transport read in full: consumed already."""
    raise StreamConsumedError(response)


def _body(request: HttpRequest) -> bytes | None:
    content = request.content
    if content is None:
        return None
    if isinstance(content, str):
        return content.encode()
    if isinstance(content, bytes | bytearray):
        return bytes(content)
    raise TypeError(f"{type(content).__name__} request bodies are not sent by this transport")


def _seconds(value: Any) -> float:
    return DEFAULT_TIMEOUT if value is None else float(value)


def _usable(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection is still open: a socket readable while idle has been closed
    by the server (or holds bytes nobody asked for) and is not reused."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
