"""Deliveries to the bridge's webhook as Event Grid makes them: one POST per batch, retried while
the answer is 503 (an effect claimed by a concurrent delivery, or a transient failure)."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

RETRIES = 20
_IDS = re.compile(r"[0-9a-f]{12,}")


class Deliverer:
    """Counts every retry and its reason, so that a result can say what was retried and why. Each
    sending thread keeps its connection alive between deliveries, as Event Grid does."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.retries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._path = parts.path

    def deliver(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """POST the batch until answered 200; its results."""
        body = json.dumps(batch).encode()
        headers = {"Content-Type": "application/json", "aeg-event-type": "Notification",
                   "aeg-sas-key": self.key}  # fmt: skip
        for _ in range(RETRIES):
            status, answer = self._post(body, headers)
            if status == 200:
                return dict(json.loads(answer))
            if status != 503:
                raise RuntimeError(f"a delivery to {self.url} was answered {status}: {answer!r}")
            error = str(json.loads(answer or b"{}").get("error", "503"))
            reason = _IDS.sub("…", error)[:120]  # one count per kind of reason, not per id
            with self._lock:
                self.retries[reason] += 1
            time.sleep(0.2)
        raise RuntimeError(f"a delivery to {self.url} was answered 503 {RETRIES} times")

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """One POST on this thread's connection. A connection the server has closed (idle, or
        going down) is opened again once, and the batch sent again: a redelivery, as Event Grid
        would make, which the bridge answers as it answered the first."""
        try:
            return self._exchange(body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self._local.connection.close()
            self._local.connection = None
            return self._exchange(body, headers)

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if getattr(self._local, "connection", None) is None:
            self._local.connection = http.client.HTTPConnection(*self._address, timeout=120)
        connection: http.client.HTTPConnection = self._local.connection
        connection.request("POST", self._path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
