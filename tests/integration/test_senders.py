"""The submission senders against a real Azurite queue, and the Service Bus message they build."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from bridge.contracts import SCHEMA_ID, AssetRoutes, Origin, Submission, YamlJob
from bridge.errors import ConfigurationError, InvalidSubmission, PermanentError, TransientError
from bridge.local.azurite import Azurite
from bridge.local.process import free_port, port_ready
from bridge.provider.senders import (
    LOCAL_QUEUE_CONNECTION_STRING,
    SERVICEBUS_NAMESPACE,
    SUBMISSION_QUEUE,
    QueueEnvelope,
    ServiceBusSender,
    StorageQueueSender,
    sender_from_env,
    service_bus_message,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running


@pytest.fixture
def submission() -> Submission:
    return Submission(
        origin=Origin(dag_id="azureml_train", run_id="manual__2026-01-01", task_id="submit"),
        job=YamlJob(spec={"type": "command", "command": "echo hi", "compute": "cpu-cluster"}),
        on=AssetRoutes(completed=["azureml://bridge-demo/train/completed"]),
    )


def receive_all(azurite: Azurite, queue_name: str) -> list[str]:
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        return [message.content for message in queue.receive_messages(max_messages=32)]


def queue_exists(azurite: Azurite, queue_name: str) -> bool:
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        try:
            queue.get_queue_properties()
        except ResourceNotFoundError:
            return False
        return True


def test_storage_queue_sender_sends_an_envelope_that_parses_back(
    azurite: Azurite, submission: Submission
) -> None:
    sender = StorageQueueSender(azurite.connection_string, "roundtrip")
    sender.send(submission)
    sender.close()

    [text] = receive_all(azurite, "roundtrip")
    envelope = QueueEnvelope.decode(text)
    assert envelope.submission() == submission
    assert envelope.body == submission.to_json()
    assert envelope.message_id == submission.id
    assert envelope.content_type == "application/json"
    assert envelope.application_properties == {
        "schema": SCHEMA_ID,
        "submission_id": submission.id,
        "dag_id": "azureml_train",
    }


def test_storage_queue_sender_creates_a_missing_queue(
    azurite: Azurite, submission: Submission
) -> None:
    assert not queue_exists(azurite, "created-on-send")

    sender = StorageQueueSender(azurite.connection_string, "created-on-send")
    sender.send(submission)
    sender.close()

    assert len(receive_all(azurite, "created-on-send")) == 1


def test_resent_submission_carries_the_same_message_id(
    azurite: Azurite, submission: Submission
) -> None:
    sender = StorageQueueSender(azurite.connection_string, "resend")
    sender.send(submission)
    sender.send(submission)
    sender.close()

    ids = {QueueEnvelope.decode(text).message_id for text in receive_all(azurite, "resend")}
    assert ids == {submission.id}


def test_refused_queue_request_is_permanent(azurite: Azurite, submission: Submission) -> None:
    sender = StorageQueueSender(azurite.connection_string, "Not_A_Valid_Queue_Name")
    with pytest.raises(PermanentError, match=r"Not_A_Valid_Queue_Name.*answered 400"):
        sender.send(submission)
    sender.close()


def test_unreachable_storage_queue_is_transient(submission: Submission, tmp_path: Path) -> None:
    closed_port = free_port()
    assert not port_ready(closed_port)()
    dead = Azurite(tmp_path, table_port=free_port(), queue_port=closed_port)
    sender = StorageQueueSender(dead.connection_string, "submissions", retry_total=0)
    with pytest.raises(TransientError, match="unreachable"):
        sender.send(submission)
    sender.close()


def test_sender_from_env_sends_to_the_local_queue_it_names(
    azurite: Azurite, submission: Submission
) -> None:
    env = {LOCAL_QUEUE_CONNECTION_STRING: azurite.connection_string, SUBMISSION_QUEUE: "fromenv"}
    sender = sender_from_env(env)
    sender.send(submission)
    sender.close()

    assert isinstance(sender, StorageQueueSender)
    assert [QueueEnvelope.decode(t).message_id for t in receive_all(azurite, "fromenv")] == [
        submission.id
    ]


def test_sender_from_env_queue_name_argument_overrides_the_environment(azurite: Azurite) -> None:
    env = {LOCAL_QUEUE_CONNECTION_STRING: azurite.connection_string, SUBMISSION_QUEUE: "fromenv"}
    sender = sender_from_env(env, queue_name="override")
    assert isinstance(sender, StorageQueueSender)
    assert sender.queue_name == "override"
    sender.close()


def test_sender_from_env_defaults_to_the_submissions_queue(azurite: Azurite) -> None:
    sender = sender_from_env({LOCAL_QUEUE_CONNECTION_STRING: azurite.connection_string})
    assert isinstance(sender, StorageQueueSender)
    assert sender.queue_name == "submissions"
    sender.close()


def test_sender_from_env_picks_service_bus_for_a_namespace() -> None:
    sender = sender_from_env({SERVICEBUS_NAMESPACE: "myns.servicebus.windows.net"})
    assert isinstance(sender, ServiceBusSender)
    assert (sender.namespace, sender.queue_name) == ("myns.servicebus.windows.net", "submissions")
    sender.close()


def test_sender_from_env_without_a_transport_names_both_variables() -> None:
    with pytest.raises(ConfigurationError) as raised:
        sender_from_env({})
    assert SERVICEBUS_NAMESPACE in str(raised.value)
    assert LOCAL_QUEUE_CONNECTION_STRING in str(raised.value)


def test_sender_from_env_with_both_transports_is_refused(azurite: Azurite) -> None:
    env = {
        SERVICEBUS_NAMESPACE: "myns.servicebus.windows.net",
        LOCAL_QUEUE_CONNECTION_STRING: azurite.connection_string,
    }
    with pytest.raises(ConfigurationError, match="both"):
        sender_from_env(env)


def test_namespace_given_as_a_connection_string_is_refused_without_echoing_it() -> None:
    # pragma: allowlist nextline secret
    secret = "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKey=abc123"
    with pytest.raises(ConfigurationError, match=SERVICEBUS_NAMESPACE) as raised:
        sender_from_env({SERVICEBUS_NAMESPACE: secret})
    assert "abc123" not in str(raised.value)


def test_malformed_local_connection_string_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=LOCAL_QUEUE_CONNECTION_STRING):
        sender_from_env({LOCAL_QUEUE_CONNECTION_STRING: "AccountName=devstoreaccount1"})


def test_service_bus_message_id_is_the_submission_id(submission: Submission) -> None:
    message = service_bus_message(submission)

    assert message.message_id == submission.id
    assert str(message) == submission.to_json()
    assert message.content_type == "application/json"
    assert message.subject == "bridge.submission"
    assert message.application_properties == {
        "schema": SCHEMA_ID,
        "submission_id": submission.id,
        "dag_id": "azureml_train",
    }


def test_service_bus_refused_connection_is_transient(submission: Submission) -> None:
    # Port 5671 (AMQPS) on loopback: nobody listens, so the SDK's real connect attempt is refused.
    assert not port_ready(5671)()
    sender = ServiceBusSender(
        "127.0.0.1", "submissions", credential=AzureNamedKeyCredential("key", "value"),
        retry_total=0,
    )  # fmt: skip
    with pytest.raises(TransientError, match="unavailable: ServiceBusConnectionError"):
        sender.send(submission)
    sender.close()


def test_malformed_queue_message_is_an_invalid_submission_naming_the_field() -> None:
    text = json.dumps({"message_id": "x", "application_properties": {}})
    with pytest.raises(InvalidSubmission, match="body"):
        QueueEnvelope.decode(text)


def test_a_worker_without_a_usable_identity_fails_at_once_naming_scope_and_fix(
    submission: Submission, identity_with_nothing: Any
) -> None:
    # Nobody listens on the namespace: an attempt to connect would show as a transient error.
    sender = ServiceBusSender("127.0.0.1", "submissions", credential=identity_with_nothing,
                              retry_total=0)  # fmt: skip
    with pytest.raises(ConfigurationError) as raised:
        sender.send(submission)
    sender.close()
    message = str(raised.value)
    assert message.startswith("the credential given could not get a token for "
                              "https://servicebus.azure.net/.default (EnvironmentCredential")
    assert "'Azure Service Bus Data Sender' on queue 'submissions'" in message
    assert "AZURE_CLIENT_ID" in message
