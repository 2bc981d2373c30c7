"""The ledger's HTTP transport (bridge/ledger/transport.py) at its boundary: Azurite, the fault
proxy in front of it, and loopback servers that misbehave as networks and servers do."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.rest import HttpRequest
from azure.data.tables import TableTransactionError

from bridge.errors import TransientError
from bridge.ledger import Busy, JobRecord, JobState
from bridge.ledger.table import TableLedger
from bridge.ledger.transport import KeptAliveTransport
from bridge.local.azurite import Azurite
from bridge.local.faults import Fault, FaultProxy
from bridge.local.process import JsonHandler, LoopbackServer, free_port
from tests.integration.test_ledger import effect, submission

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(Path(tmp_path_factory.mktemp("azurite"))) as running:
        yield running


class Peer:
    """A loopback HTTP/1.1 server that records which client connection sent each request, and
    answers as told: after `pause` seconds, then hanging up if `hang_up` (as a server whose
    keep-alive timeout passed does, without saying so)."""

    def __init__(self, pause: float = 0.0, hang_up: bool = False) -> None:
        self.clients: list[int] = []
        peer = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                peer.clients.append(self.client_address[1])
                time.sleep(pause)
                self.send_response(200)
                body = '{"name": "Zoë"}'.encode()
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("x-ms-seen", "a")
                self.send_header("x-ms-seen", "b")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = hang_up

        self.server = LoopbackServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/t"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    running = Peer()
    yield running
    running.stop()


def test_requests_in_turn_share_one_kept_alive_connection(peer: Peer) -> None:
    transport = KeptAliveTransport(4)
    for _ in range(5):
        response = transport.send(HttpRequest("GET", peer.url))
        assert response.status_code == 200
        assert response.json() == {"name": "Zoë"}
        assert response.headers["X-MS-SEEN"] == "a, b"  # case-insensitive, repeated joined
    transport.close()
    assert len(peer.clients) == 5 and len(set(peer.clients)) == 1, peer.clients


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    peer = Peer(hang_up=True)
    transport = KeptAliveTransport(4)
    try:
        for _ in range(3):
            assert transport.send(HttpRequest("GET", peer.url)).status_code == 200
            time.sleep(0.05)  # the server's hang-up reaches the idle connection
    finally:
        transport.close()
        peer.stop()
    assert len(peer.clients) == 3 and len(set(peer.clients)) == 3, peer.clients


def test_concurrent_requests_each_get_a_connection_and_at_most_the_limit_stays_idle() -> None:
    peer = Peer(pause=0.2)
    transport = KeptAliveTransport(2)
    try:
        threads = [
            threading.Thread(target=transport.send, args=(HttpRequest("GET", peer.url),))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(peer.clients)) == 4  # none waited for another's connection
        assert sum(len(idle) for idle in transport._idle.values()) == 2
    finally:
        transport.close()
        peer.stop()


def test_a_refused_connection_is_a_request_error() -> None:
    """azure-core's retry policy repeats these for every method: the server never saw them."""
    with pytest.raises(ServiceRequestError):
        KeptAliveTransport(1).send(HttpRequest("GET", f"http://127.0.0.1:{free_port()}/t"))


def test_a_slow_answer_is_a_response_timeout() -> None:
    peer = Peer(pause=1.0)
    try:
        with pytest.raises(ServiceResponseTimeoutError):
            KeptAliveTransport(1).send(HttpRequest("GET", peer.url), read_timeout=0.2)
    finally:
        peer.stop()


def test_a_table_transaction_reads_its_parts(azurite: Azurite) -> None:
    """A transaction's answer is multipart (retention deletes a job's rows in one): each part
    read, and a failed part named by the error."""
    ledger = TableLedger.from_connection_string(
        azurite.connection_string, f"t{secrets.token_hex(6)}"
    )
    try:
        ledger.ensure_table()
        table = ledger._table
        rows = [{"PartitionKey": "p", "RowKey": f"r{i}", "n": i} for i in range(3)]
        done = table.submit_transaction([("create", row) for row in rows])
        assert len(done) == 3 and all(part["etag"] for part in done)
        with pytest.raises(TableTransactionError) as failed:
            table.submit_transaction([("create", {"PartitionKey": "p", "RowKey": "new"}),
                                      ("create", rows[1])])  # fmt: skip
        assert failed.value.index == 1 and failed.value.error_code == "EntityAlreadyExists"
        assert [row["RowKey"] for row in table.list_entities()] == ["r0", "r1", "r2"]
    finally:
        ledger.close()


def through_proxy(azurite: Azurite, proxy: FaultProxy, table: str) -> TableLedger:
    account = azurite.table_endpoint.rsplit("/", 1)[1]
    connection = azurite.connection_string.replace(azurite.table_endpoint, f"{proxy.url}/{account}")
    return TableLedger.from_connection_string(connection, table)


def test_a_lost_reply_to_a_claim_is_not_sent_again(azurite: Azurite) -> None:
    """The insert reached Azure Table and was done; its reply was lost. The transport says the
    response failed, so azure-core does not repeat a POST: the claim is transient for the
    caller, and the next attempt finds its own row (leased, so busy), never a double claim."""
    lose_posts = {"on": True}

    def decide(method: str, path: str, body: bytes) -> Fault | None:
        return Fault.LOSE_REPLY if method == "POST" and lose_posts["on"] else None

    table = f"t{secrets.token_hex(6)}"
    with FaultProxy(f"http://127.0.0.1:{azurite.table_port}", decide) as proxy:
        ledger = through_proxy(azurite, proxy, table)
        try:
            record = JobRecord(submission("lost-reply"), JobState.CREATED)
            lose_posts["on"] = False
            ledger.add_job(record)  # creates the table and the job
            lose_posts["on"] = True
            claimed = effect(record.submission)
            before = len(proxy.passages)
            with pytest.raises(TransientError, match="claim an effect"):
                ledger.claim(claimed, time.time(), 60.0)
            posts = [p for p in proxy.passages[before:] if p.method == "POST"]
            assert [(p.fault, p.status) for p in posts] == [(Fault.LOSE_REPLY, 204)]  # inserted

            lose_posts["on"] = False
            assert isinstance(ledger.claim(claimed, time.time(), 60.0), Busy)
        finally:
            ledger.close()


def test_a_lost_reply_to_a_read_is_read_again(azurite: Azurite) -> None:
    lost: list[str] = []

    def decide(method: str, path: str, body: bytes) -> Fault | None:
        if method == "GET" and not lost:
            lost.append(path)
            return Fault.LOSE_REPLY
        return None

    table = f"t{secrets.token_hex(6)}"
    with FaultProxy(f"http://127.0.0.1:{azurite.table_port}", decide) as proxy:
        ledger = through_proxy(azurite, proxy, table)
        try:
            record = JobRecord(submission("lost-read"), JobState.CREATED)
            ledger.add_job(record)
            lost.clear()
            before = len(proxy.passages)
            found = ledger.get_job(record.submission.id)
            assert found is not None and found.name == record.submission.id
            reads = [p.fault for p in proxy.passages[before:] if p.method == "GET"]
            assert reads == [Fault.LOSE_REPLY, None]
        finally:
            ledger.close()


def test_a_dropped_connection_mid_request_is_a_response_error() -> None:
    """A server that takes the request and hangs up without a status line."""
    peer = Peer()

    class HangUp(JsonHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.close_connection = True

    peer.server.RequestHandlerClass = HangUp
    try:
        with pytest.raises(ServiceResponseError):
            KeptAliveTransport(1).send(HttpRequest("GET", peer.url))
    finally:
        peer.stop()
