"""Deliveries to the bridge's webhook as Event Grid makes them: one POST per batch, retried while
the answer is 503 (an effect claimed by a concurrent delivery, or a transient failure)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

RETRIES = 20
_IDS = re.compile(r"[0-9a-f]{12,}")


class Deliverer:
    """Counts every retry and its reason, so that a result can say what was retried and why."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.retries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def deliver(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """POST the batch until answered 200; its results."""
        body = json.dumps(batch).encode()
        for _ in range(RETRIES):
            request = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "aeg-event-type": "Notification",
                "aeg-sas-key": self.key})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return dict(json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise
                error = str(json.loads(exc.read() or b"{}").get("error", "503"))
                reason = _IDS.sub("…", error)[:120]  # one count per kind of reason, not per id
            with self._lock:
                self.retries[reason] += 1
            time.sleep(0.2)
        raise RuntimeError(f"a delivery to {self.url} was answered 503 {RETRIES} times")
