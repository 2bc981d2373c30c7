"""The bridge's local dev host: what the Functions host does in Azure, on loopback.

- The webhook (`POST|OPTIONS /api/events`, `GET /api/health`) serves `bridge.webhook.answer`,
  the same code as the Function App's `events_webhook`.
- The queue worker reads the Storage Queue that stands in for Service Bus and calls the same
  `Bridge.submit` as `on_submission`: the message is deleted when the call returns, left to
  reappear after its visibility timeout when it raises (like an abandoned Service Bus message),
  and moved to `<queue>-poison` after `max_deliveries` (like Service Bus dead-lettering).
- The reconcile timer fires the same sweep as the Function App's `reconcile`, on the same
  NCRONTAB schedule (`BRIDGE_RECONCILE_SCHEDULE`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage

from bridge import health
from bridge.composition import gate_for
from bridge.errors import TransientError
from bridge.local.process import Lifecycle, LoopbackServer
from bridge.ncrontab import Schedule
from bridge.provider.senders import QueueEnvelope
from bridge.reconcile import Reconciler, SweepReport
from bridge.service import Bridge
from bridge.settings import Settings
from bridge.webhook import MAX_BODY_BYTES, Reply, answer, refusal

log = logging.getLogger("bridge.devhost")


class DevHost(Lifecycle):
    def __init__(
        self,
        bridge_factory: Callable[[], Bridge],
        settings: Settings,
        *,
        queue_connection_string: str,
        queue_name: str,
        port: int = 0,
        event_key: str | None = None,
        visibility_timeout: int = 30,
        max_deliveries: int = 10,
        poll_interval: float = 0.2,
    ) -> None:
        self.bridge_factory = bridge_factory
        self.settings = settings
        self.queue = QueueClient.from_connection_string(queue_connection_string, queue_name)
        self.poison = QueueClient.from_connection_string(
            queue_connection_string, f"{queue_name}-poison"
        )
        self.event_key = event_key
        self.gate = gate_for(settings)  # as the Function's webhook: an Entra ID token if set
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self.poll_interval = poll_interval
        self._server = LoopbackServer(("127.0.0.1", port), self._handler())
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.schedule = Schedule.parse(settings.reconcile_schedule)
        self.sweeps: list[tuple[datetime, SweepReport]] = []  # what each timer firing did

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/events"

    def start(self) -> DevHost:
        for client in (self.queue, self.poison):
            with suppress(ResourceExistsError):
                client.create_queue()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True),
            threading.Thread(target=self._work, name="queue-worker", daemon=True),
            threading.Thread(target=self._reconcile, name="reconcile-timer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.queue.close()
        self.poison.close()

    # The queue worker: the stand-in for the Service Bus trigger.

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                received = list(
                    self.queue.receive_messages(
                        max_messages=16, visibility_timeout=self.visibility_timeout
                    )
                )
            except Exception:  # Azurite restarting, or stopping under us: try again shortly
                log.exception("queue receive failed")
                received = []
            for message in received:
                self.process(message)
            if not received:
                self._stopping.wait(self.poll_interval)

    def process(self, message: QueueMessage) -> None:
        if message.dequeue_count and message.dequeue_count > self.max_deliveries:
            self.poison.send_message(message.content)
            self.queue.delete_message(message)
            log.error(
                "message %s dead-lettered after %s deliveries", message.id, self.max_deliveries
            )
            return
        text = message.content
        try:
            envelope = QueueEnvelope.decode(text)
            body, message_id = envelope.body.encode(), envelope.message_id
        except Exception:  # not even an envelope: the core records it as a rejected message
            body, message_id = str(text).encode(), str(message.id)
        try:
            report = self.bridge_factory().submit(body, message_id)
        except TransientError as exc:
            log.warning("submission %s will be redelivered: %s", message_id, exc)
            return
        except Exception:
            log.exception("submission %s failed; it will be redelivered", message_id)
            return
        self.queue.delete_message(message)
        log.info("submission %s: %s %s", message_id, report.result, report.detail)

    # The reconcile timer: the stand-in for the Functions timer trigger.

    def _reconcile(self) -> None:
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            fire_at = self.schedule.next_after(now)
            if self._stopping.wait((fire_at - now).total_seconds()):
                return
            try:
                report = Reconciler(self.bridge_factory()).sweep()
            except Exception:  # the Functions host logs a failed invocation and fires again later
                log.exception("reconcile sweep failed")
                continue
            self.sweeps.append((fire_at, report))

    # The webhook: the stand-in for the Functions HTTP trigger.

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._dispatch()

            def do_OPTIONS(self) -> None:
                self._dispatch()

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/api/health":
                    self._send(Reply(404, {"error": f"no route {self.path}"}))
                    return
                status, body = health.report(
                    host.settings, ledger=lambda: host.bridge_factory().ledger
                )
                self._send(Reply(status, body))

            def _dispatch(self) -> None:
                if self.path.split("?")[0] != "/api/events":
                    self._send(Reply(404, {"error": f"no route {self.path}"}))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:  # refused unkept: drained so the client hears why
                    left = length
                    while left > 0 and (chunk := self.rfile.read(min(65536, left))):
                        left -= len(chunk)
                    self._send(refusal(self.headers.get("Content-Type"), length) or Reply(413))
                    return
                body = self.rfile.read(length) if length else b""
                signed = self.headers.get("aeg-sas-key") == host.event_key
                if host.event_key and self.command == "POST" and not signed:
                    self._send(Reply(401, {"error": "missing or wrong aeg-sas-key"}))
                    return
                headers = {key: value for key, value in self.headers.items()}
                self._send(answer(self.command, headers, body, host.bridge_factory, host.gate))

            def _send(self, reply: Reply) -> None:
                content = reply.content()
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if content:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("webhook: " + format, *args)

        return Handler
