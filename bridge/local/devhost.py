"""The bridge's local dev host: what the Functions host does in Azure, on loopback.

- The webhook (`POST|OPTIONS /api/events`, `GET /api/health`) serves `bridge.webhook.answer`,
  the same code as the Function App's `events_webhook`.
- The Service Bus trigger receives the submission queue through the real SDK, as the Functions
  host does (`bridge.local.trigger`), and calls the same `submit_message` as `on_submission`:
  complete when it returns, abandon when it raises, the lock renewed meanwhile; Service Bus itself
  dead-letters a message after the queue's `maxDeliveryCount`.
- The reconcile timer fires the same sweep as the Function App's `reconcile`, on the same
  NCRONTAB schedule (`BRIDGE_RECONCILE_SCHEDULE`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage

from bridge import health
from bridge.composition import gate_for
from bridge.functions import submit_message
from bridge.local.process import Lifecycle, LoopbackServer
from bridge.local.trigger import ServiceBusTrigger, TriggerOptions
from bridge.ncrontab import Schedule
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
        servicebus_connection_string: str,
        queue_name: str,
        port: int = 0,
        event_key: str | None = None,
        trigger: TriggerOptions | None = None,
    ) -> None:
        self.bridge_factory = bridge_factory
        self.settings = settings
        self.queue_name = queue_name
        self.servicebus = ServiceBusClient.from_connection_string(servicebus_connection_string)
        self.event_key = event_key
        self.gate = gate_for(settings)  # as the Function's webhook: an Entra ID token if set
        self.trigger_options = trigger or TriggerOptions.from_host_json()
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
        self._trigger = ServiceBusTrigger(
            self.servicebus, self.queue_name, self.process, self.trigger_options, self._stopping
        )
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True),
            threading.Thread(target=self._reconcile, name="reconcile-timer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._trigger.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._trigger.join(timeout=10)
        self.servicebus.close()

    def process(self, message: ServiceBusReceivedMessage) -> None:
        """One delivery, as `on_submission` gets it: raising abandons the message."""
        body = b"".join(bytes(part) for part in message.body)
        submit_message(
            self.bridge_factory(), body, message.message_id, message.application_properties
        )

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
            # Keep-alive, as the Functions host's front end serves Event Grid: a connection (and
            # its thread) per delivery cost the webhook about 0.4 ms of CPU each.
            protocol_version = "HTTP/1.1"

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
