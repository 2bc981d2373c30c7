"""The submission sender on the wire: the production `ServiceBusSender` sends to the local Service
Bus (`bridge.local.servicebus`) as to Microsoft's development emulator, and what it sent is read
back with the real `azure-servicebus` client; `sender_from_env` picks the emulator or a namespace
from the environment and names the setting that is wrong."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage

from bridge.contracts import SCHEMA_ID, AssetRoutes, Origin, Submission, YamlJob
from bridge.errors import BlockedError, ConfigurationError, PermanentError, TransientError
from bridge.local.process import free_port, port_ready
from bridge.local.servicebus import LocalServiceBus
from bridge.provider.senders import (
    SERVICEBUS_EMULATOR,
    SERVICEBUS_NAMESPACE,
    SUBMISSION_QUEUE,
    ServiceBusSender,
    sender_from_env,
)

pytestmark = pytest.mark.integration
_names = itertools.count(1)
# A real connection string's shape, with a key that must never reach an error (or a task log).
SECRET = "abc123"  # pragma: allowlist secret
CONNECTION_STRING = (
    f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={SECRET}"
)


@pytest.fixture(scope="module")
def bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus() as running:
        running.create_queue("submissions")  # the default queue's name
        yield running


@pytest.fixture
def submission() -> Submission:
    return Submission(
        origin=Origin(dag_id="azureml_train", run_id="manual__2026-01-01", task_id="submit"),
        job=YamlJob(spec={"type": "command", "command": "echo hi", "compute": "cpu-cluster"}),
        on=AssetRoutes(completed=["azureml://bridge-demo/train/completed"]),
    )


def new_queue(bus: LocalServiceBus, **options: Any) -> str:
    """A queue of its own for each test (Service Bus queues come from infra, never the sender)."""
    name = f"senders-{next(_names)}"
    bus.create_queue(name, **options)
    return name


def receive_all(bus: LocalServiceBus, queue: str) -> list[ServiceBusReceivedMessage]:
    """Every message on the queue (as many as the namespace holds), received and completed with
    the real SDK."""
    held = bus.namespace.count(queue)
    received: list[ServiceBusReceivedMessage] = []
    with (
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
        client.get_queue_receiver(queue) as receiver,
    ):
        while len(received) < held:
            batch = receiver.receive_messages(max_message_count=held, max_wait_time=5)
            assert batch, f"{held - len(received)} message(s) on {queue} not delivered"
            for message in batch:
                receiver.complete_message(message)
            received += batch
    assert bus.namespace.count(queue) == 0
    return received


def properties(message: ServiceBusReceivedMessage) -> dict[str, str]:
    """Application properties as sent (the SDK gives keys and string values as bytes)."""
    return {
        (key.decode() if isinstance(key, bytes) else str(key)):
        (value.decode() if isinstance(value, bytes) else str(value))
        for key, value in (message.application_properties or {}).items()
    }  # fmt: skip


def send_once(sender: Any, submission: Submission) -> None:
    try:
        sender.send(submission)
    finally:
        sender.close()


def emulator_env(bus: LocalServiceBus, **more: str) -> dict[str, str]:
    return {SERVICEBUS_NAMESPACE: bus.address, SERVICEBUS_EMULATOR: "true", **more}


# --- the message on the wire --------------------------------------------------------------------


def test_sent_message_parses_back_as_the_submission_with_its_id_and_properties(
    bus: LocalServiceBus, submission: Submission
) -> None:
    queue = new_queue(bus)
    send_once(ServiceBusSender(bus.address, queue, development_emulator=True), submission)

    [message] = receive_all(bus, queue)
    assert str(message) == submission.to_json()
    assert Submission.parse(str(message)) == submission
    assert message.message_id == submission.id
    assert message.content_type == "application/json"
    assert message.subject == "bridge.submission"
    assert properties(message) == {
        "schema": SCHEMA_ID,
        "submission_id": submission.id,
        "dag_id": "azureml_train",
    }


def test_a_resend_carries_the_same_message_id_so_duplicate_detection_drops_it(
    bus: LocalServiceBus, submission: Submission
) -> None:
    plain, deduplicating = new_queue(bus), new_queue(bus, duplicate_detection_window=600)
    for queue in (plain, deduplicating):
        sender = ServiceBusSender(bus.address, queue, development_emulator=True)
        sender.send(submission)
        send_once(sender, submission)  # a retried task sends the same submission again

    assert [m.message_id for m in receive_all(bus, plain)] == [submission.id, submission.id]
    assert [m.message_id for m in receive_all(bus, deduplicating)] == [submission.id]


# --- sender_from_env --------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["true", "TRUE", " True "])
def test_sender_from_env_sends_to_the_emulator_it_names(
    bus: LocalServiceBus, submission: Submission, flag: str
) -> None:
    queue = new_queue(bus)
    env = {SERVICEBUS_NAMESPACE: bus.address, SERVICEBUS_EMULATOR: flag, SUBMISSION_QUEUE: queue}
    sender = sender_from_env(env)
    assert isinstance(sender, ServiceBusSender)
    assert (sender.namespace, sender.queue_name) == (bus.address, queue)
    send_once(sender, submission)

    assert [m.message_id for m in receive_all(bus, queue)] == [submission.id]


def test_sender_from_env_arguments_override_the_environment(
    bus: LocalServiceBus, submission: Submission
) -> None:
    """As the operator's `queue_name=` and `servicebus_namespace=` do."""
    from_env, from_argument = new_queue(bus), new_queue(bus)
    env = {SERVICEBUS_NAMESPACE: "elsewhere:1", SERVICEBUS_EMULATOR: "true",
           SUBMISSION_QUEUE: from_env}  # fmt: skip
    send_once(sender_from_env(env, queue_name=from_argument, namespace=bus.address), submission)

    assert [m.message_id for m in receive_all(bus, from_argument)] == [submission.id]
    assert receive_all(bus, from_env) == []


def test_sender_from_env_defaults_to_the_submissions_queue(
    bus: LocalServiceBus, submission: Submission
) -> None:
    sender = sender_from_env(emulator_env(bus))
    assert isinstance(sender, ServiceBusSender)
    assert sender.queue_name == "submissions"
    send_once(sender, submission)

    assert [m.message_id for m in receive_all(bus, "submissions")] == [submission.id]


@pytest.mark.parametrize("flag", [None, "false", " FALSE ", ""])
def test_sender_from_env_without_the_emulator_flag_picks_the_namespace(flag: str | None) -> None:
    env = {SERVICEBUS_NAMESPACE: "myns.servicebus.windows.net"}
    if flag is not None:
        env[SERVICEBUS_EMULATOR] = flag
    sender = sender_from_env(env)  # nothing connects before the first send
    assert isinstance(sender, ServiceBusSender)
    assert (sender.namespace, sender.queue_name) == ("myns.servicebus.windows.net", "submissions")
    sender.close()


@pytest.mark.parametrize(
    ("env", "named", "also"),
    [
        pytest.param({}, SERVICEBUS_NAMESPACE, SERVICEBUS_EMULATOR, id="no-namespace"),
        pytest.param({SERVICEBUS_NAMESPACE: "  ", SERVICEBUS_EMULATOR: "true"},
                     SERVICEBUS_NAMESPACE, SERVICEBUS_EMULATOR, id="blank-namespace"),
        pytest.param({SERVICEBUS_NAMESPACE: "127.0.0.1:5672", SERVICEBUS_EMULATOR: "yes"},
                     SERVICEBUS_EMULATOR, "true or false", id="emulator-flag-yes"),
        pytest.param({SERVICEBUS_NAMESPACE: "127.0.0.1:5672", SERVICEBUS_EMULATOR: "1"},
                     SERVICEBUS_EMULATOR, "true or false", id="emulator-flag-1"),
        pytest.param({SERVICEBUS_NAMESPACE: "127.0.0.1", SERVICEBUS_EMULATOR: "true"},
                     SERVICEBUS_NAMESPACE, "host:port", id="emulator-without-port"),
        pytest.param({SERVICEBUS_NAMESPACE: "localhost:amqp", SERVICEBUS_EMULATOR: "true"},
                     SERVICEBUS_NAMESPACE, "host:port", id="emulator-port-not-a-number"),
        pytest.param({SERVICEBUS_NAMESPACE: ":5672", SERVICEBUS_EMULATOR: "true"},
                     SERVICEBUS_NAMESPACE, "host:port", id="emulator-without-host"),
        pytest.param({SERVICEBUS_NAMESPACE: "sb://127.0.0.1:5672", SERVICEBUS_EMULATOR: "true"},
                     SERVICEBUS_NAMESPACE, "host:port", id="emulator-url"),
        pytest.param({SERVICEBUS_NAMESPACE: "myns.servicebus.windows.net:5671"},
                     SERVICEBUS_NAMESPACE, f"{SERVICEBUS_EMULATOR}=true", id="namespace-with-port"),
        pytest.param({SERVICEBUS_NAMESPACE: "127.0.0.1:5672", SERVICEBUS_EMULATOR: "false"},
                     SERVICEBUS_NAMESPACE, f"{SERVICEBUS_EMULATOR}=true",
                     id="emulator-address-without-the-flag"),
        pytest.param({SERVICEBUS_NAMESPACE: "sb://myns.servicebus.windows.net/"},
                     SERVICEBUS_NAMESPACE, "not a URL", id="namespace-url"),
        pytest.param({SERVICEBUS_NAMESPACE: "https://myns.servicebus.windows.net"},
                     SERVICEBUS_NAMESPACE, "not a URL", id="namespace-https-url"),
        pytest.param({SERVICEBUS_NAMESPACE: CONNECTION_STRING},
                     SERVICEBUS_NAMESPACE, "connection string", id="namespace-connection-string"),
    ],
)  # fmt: skip
def test_sender_from_env_misconfiguration_names_the_setting(
    env: dict[str, str], named: str, also: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        sender_from_env(env)
    message = str(raised.value)
    assert named in message
    assert also in message
    assert SECRET not in message


def test_a_connection_string_as_the_emulator_address_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError, match=SERVICEBUS_NAMESPACE) as raised:
        sender_from_env({SERVICEBUS_NAMESPACE: CONNECTION_STRING, SERVICEBUS_EMULATOR: "true"})
    assert SECRET not in str(raised.value)


# --- failures, as the operator's retry policy sees them ---------------------------------------


def test_an_unreachable_emulator_is_transient(submission: Submission) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert not port_ready(int(address.rpartition(":")[2]))()  # nothing listens there
    sender = ServiceBusSender(address, "submissions", development_emulator=True, retry_total=0)
    with pytest.raises(TransientError, match="unavailable: ServiceBusConnectionError") as raised:
        send_once(sender, submission)
    assert f"'submissions' in {address}" in str(raised.value)


def test_an_unreachable_namespace_is_transient(submission: Submission) -> None:
    # Port 5671 (AMQPS) on loopback: nobody listens, so the SDK's real TLS connect is refused.
    assert not port_ready(5671)()
    sender = ServiceBusSender(
        "127.0.0.1", "submissions", credential=AzureNamedKeyCredential("key", "value"),
        retry_total=0,
    )  # fmt: skip
    with pytest.raises(TransientError, match="unavailable: ServiceBusConnectionError"):
        send_once(sender, submission)


def test_a_queue_that_does_not_exist_blocks_and_heals_once_it_does(
    bus: LocalServiceBus, submission: Submission
) -> None:
    """Not there yet (`azd up` still creating it, a queue name deployed late): the task fails
    with Airflow's retries, not for good, and a retry after the queue exists sends."""
    queue = f"late-{secrets.token_hex(3)}"
    sender = ServiceBusSender(bus.address, queue, development_emulator=True, retry_total=0)
    with pytest.raises(BlockedError, match=rf"'{queue}' .* does not exist") as raised:
        send_once(sender, submission)
    assert raised.value.cause == BlockedError.MISSING_RESOURCE
    bus.create_queue(queue)
    send_once(ServiceBusSender(bus.address, queue, development_emulator=True), submission)
    assert bus.namespace.count(queue) == 1


def test_a_message_over_the_size_limit_is_permanent(
    bus: LocalServiceBus, submission: Submission
) -> None:
    queue = "size-limit"
    if not bus.namespace.has_entity(queue):
        bus.create_queue(queue)
    sender = ServiceBusSender(bus.address, queue, development_emulator=True, retry_total=0)
    big = submission.model_copy(update={"traceparent": "x" * 300_000})  # unvalidated: too big
    with pytest.raises(PermanentError, match="too large"):
        send_once(sender, big)
    assert bus.namespace.count(queue) == 0


def test_a_worker_without_a_usable_identity_fails_at_once_naming_scope_and_fix(
    submission: Submission, identity_with_nothing: Any
) -> None:
    # Nobody listens on the namespace: an attempt to connect would show as a transient error.
    sender = ServiceBusSender("127.0.0.1", "submissions", credential=identity_with_nothing,
                              retry_total=0)  # fmt: skip
    with pytest.raises(ConfigurationError) as raised:
        send_once(sender, submission)
    message = str(raised.value)
    assert message.startswith(
        "the credential given could not get a token for "
        "https://servicebus.azure.net/.default (EnvironmentCredential"
    )
    assert "'Azure Service Bus Data Sender' on queue 'submissions'" in message
    assert "AZURE_CLIENT_ID" in message
